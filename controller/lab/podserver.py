"""The lab's backend pod: a tiny HTTP server answering with its pod name and the client it saw.

`python -m controller.lab.podserver --name web-local-1 --node node-1 --port 8080` runs it
(inside the pod's namespace). The reply is one line: `pod=<name> node=<node> client=<ip>`.
It listens on both families (an IPv4 client shows as itself, not as ::ffff:a.b.c.d).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def client_ip(addr: str) -> str:
    """The client's address as it would show on a socket of its own family."""
    ip = ipaddress.ip_address(addr)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


class DualStackServer(ThreadingHTTPServer):
    """One socket for both families ([::], IPv6-only off)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_handler(name: str, node: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = f"pod={name} node={node} client={client_ip(self.client_address[0])}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--node", default="")
    p.add_argument("--port", type=int, default=8080)
    a = p.parse_args()
    DualStackServer(("::", a.port), make_handler(a.name, a.node)).serve_forever()


if __name__ == "__main__":
    main()
