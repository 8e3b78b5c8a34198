"""Bounded TCP transfers between pods: iperf3 for throughput, and a one-connection echo
that reports the addresses each end saw (servers started and stopped by pid)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

# One connection on [::]:port (IPv4 too): read to EOF, answer with what the server saw.
ECHO_SERVER = """
import hashlib, json, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(20)
s.bind(("::", int(sys.argv[1])))
s.listen(1)
print("ready", flush=True)
c, peer = s.accept()
c.settimeout(20)
h, n = hashlib.sha256(), 0
while b := c.recv(65536):
    h.update(b)
    n += len(b)
c.sendall(json.dumps({"peer": peer[0], "local": c.getsockname()[0], "bytes": n,
                      "sha256": h.hexdigest()}).encode())
c.close()
"""

ECHO_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(sys.stdin.buffer.read())
c.shutdown(socket.SHUT_WR)
sys.stdout.buffer.write(b"".join(iter(lambda: c.recv(65536), b"")))
"""


def iperf(client_ns: str, server_ns: str, server_ip: str, port: int = 5301,
          seconds: int = 1, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """One iperf3 run; returns {"bps": received bits/s, "retransmits": n}."""
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p",
                            str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            out = subprocess.run(["ip", "netns", "exec", server_ns, "ss", "-Hltn",
                                  f"sport = :{port}"], capture_output=True, text=True).stdout
            if out.strip():
                break
            time.sleep(0.05)
        r = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-p",
                            str(port), "-t", str(int(seconds)), "-J", *extra],
                           capture_output=True, text=True, timeout=seconds + 20)
        doc = json.loads(r.stdout)
        if "error" in doc:
            raise RuntimeError(f"iperf3: {doc['error']}")
        end = doc["end"]
        if "sum_received" in end:
            return {"bps": float(end["sum_received"]["bits_per_second"]),
                    "retransmits": float(end["sum_sent"].get("retransmits", 0))}
        return {"bps": float(end["sum"]["bits_per_second"]), "retransmits": 0.0}
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait(5)


def echo(client_ns: str, server_ns: str, server_ip: str, size: int,
         port: int = 5302) -> dict[str, object]:
    """Send `size` random bytes over one TCP connection; returns what the server saw:
    {"peer", "local" (addresses), "bytes", "sha256"} plus "sent_sha256"."""
    data = os.urandom(size)
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c",
                            ECHO_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        r = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c",
                            ECHO_CLIENT, server_ip, str(port)], input=data,
                           capture_output=True, timeout=40)
        if r.returncode != 0:
            raise RuntimeError(f"echo client: {r.stderr.decode().strip()}")
        got: dict[str, object] = json.loads(r.stdout)
        got["sent_sha256"] = hashlib.sha256(data).hexdigest()
        return got
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait(5)
