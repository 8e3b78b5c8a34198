"""A TCP relay from inside a network namespace to an address of this process's namespace.

The lab's and the tests' agents run inside node namespaces, where the host's loopback is
out of reach; an API server the lab starts listens on the host's loopback. A relay listens
on the node namespace's own loopback and carries each connection, byte for byte (TLS
passes through untouched, so the server's certificate for 127.0.0.1 still verifies), to
the server. Loopback to loopback: nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from controller.lab.netns import entered


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until src ends, then end dst's sending side."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class TcpRelay:
    """Listens on 127.0.0.1:`port` in namespace `ns`; connects each client to `target`."""

    def __init__(self, ns: str, target: tuple[str, int], port: int = 0) -> None:
        self.ns = ns
        self.target = target
        with entered(ns):  # the listening socket lives in the node's namespace
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"relay-{ns}")
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            threading.Thread(target=self._carry, args=(client, upstream), daemon=True).start()

    def _carry(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions of one connection; both sockets closed when both have ended."""
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            self._conns = [c for c in self._conns if c not in (client, upstream)]
        client.close()
        upstream.close()

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self._thread.join(timeout=2)
