"""Stop speaker processes a killed agent left behind, found by their pid files.

An agent killed with SIGKILL leaves gobgpd / exabgp running on purpose (graceful restart
keeps the routes; the next agent adopts or replaces them). When a lab or a test is torn
down for good, those processes must go too — only those whose pid file lies under the
given state directory and whose command line names that directory.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PIDFILES = ("gobgpd.pid", "exabgp.pid")


def kill_leftover_speakers(state_root: Path, timeout: float = 5.0) -> list[int]:
    """SIGTERM (then SIGKILL) each speaker recorded under `state_root`; returns the PIDs."""
    killed: list[int] = []
    for name in PIDFILES:
        for pidfile in state_root.rglob(name):
            try:
                pid = int(pidfile.read_text().strip())
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if str(pidfile.parent) not in cmd:
                continue  # a recycled PID: not ours
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            pidfile.unlink(missing_ok=True)
    return killed
