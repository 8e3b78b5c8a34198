"""Test backend run inside a pod namespace: answers TCP and UDP on one port with
"<name> <peer ip>:<peer port>", and echoes later TCP lines as "<name> <line>".
An optional third argument "6" listens on IPv6 (::) instead of IPv4."""

from __future__ import annotations

import socket
import socketserver
import sys
import threading


class _Tcp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        name = self.server.rr_name  # type: ignore[attr-defined]
        peer = self.client_address
        self.wfile.write(f"{name} {peer[0]}:{peer[1]}\n".encode())
        for line in self.rfile:
            self.wfile.write(f"{name} {line.decode().strip()}\n".encode())


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _udp(name: str, port: int, v6: bool) -> None:
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("::" if v6 else "0.0.0.0", port))
    while True:
        _, peer = s.recvfrom(2048)
        s.sendto(f"{name} {peer[0]}:{peer[1]}".encode(), peer)


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    v6 = len(sys.argv) > 3 and sys.argv[3] == "6"
    srv = (_Server6 if v6 else _Server)(("::" if v6 else "0.0.0.0", port), _Tcp)
    srv.rr_name = name  # type: ignore[attr-defined]
    threading.Thread(target=_udp, args=(name, port, v6), daemon=True).start()
    print("listening", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
