"""Stopping what a lab, a test or a benchmark started: the processes it holds
(`stop_all`), and the speaker processes a killed agent left behind, found by their pid
files (`kill_leftover_speakers`).

An agent killed with SIGKILL leaves gobgpd / exabgp running on purpose (graceful restart
keeps the routes; the next agent adopts or replaces them). When a lab or a test is torn
down for good, those processes must go too — only those whose pid file lies under the
given state directory and whose command line names that directory.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from bgp.pidfile import kill_recorded

PIDFILES = ("gobgpd.pid", "exabgp.pid", "bfd.pid")  # the speakers and the BFD responder


def kill_leftover_speakers(state_root: Path, timeout: float = 5.0) -> list[int]:
    """SIGTERM (then SIGKILL) each speaker recorded under `state_root`; returns the PIDs."""
    killed: list[int] = []
    for name in PIDFILES:
        for pidfile in state_root.rglob(name):
            pid = kill_recorded(pidfile, str(pidfile.parent), graceful=True, timeout=timeout)
            if pid is not None:
                killed.append(pid)
    return killed


def stop_all(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM every process still running, then reap each (SIGKILL after `timeout`)."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
