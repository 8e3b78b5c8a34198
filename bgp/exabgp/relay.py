"""The API process ExaBGP runs: relays lines between ExaBGP and the agent.

ExaBGP writes acknowledgements ("done"/"error") and JSON events to our stdin; we forward
them to the agent's unix socket. The agent's command lines go to our stdout. If the agent
is away, commands simply wait; ExaBGP keeps its sessions and routes. Standalone on purpose
(stdlib only): ExaBGP starts it by file path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time


def _connect(path: str) -> socket.socket:
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            s.close()
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    path = argv[1]
    lock = threading.Lock()
    holder: dict[str, socket.socket] = {"sock": _connect(path)}

    def from_exabgp() -> None:
        for line in sys.stdin:
            with lock:
                sock = holder["sock"]
            # if the agent is away, events are dropped until it reconnects us
            with contextlib.suppress(OSError):
                sock.sendall(line.encode())
        os._exit(0)  # ExaBGP closed our stdin: it is going away, so do we

    threading.Thread(target=from_exabgp, daemon=True).start()
    while True:
        with lock:
            sock = holder["sock"]
        buf = sock.makefile("rb")
        for raw in buf:
            sys.stdout.write(raw.decode())
            sys.stdout.flush()
        sock.close()
        new = _connect(path)
        with lock:
            holder["sock"] = new


if __name__ == "__main__":
    sys.exit(main(sys.argv))
