"""Bounded TCP transfers between pods with iperf3 (server started and stopped by pid)."""

from __future__ import annotations

import json
import subprocess
import time


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
