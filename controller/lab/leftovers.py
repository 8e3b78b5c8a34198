"""Stop speaker processes a killed agent left behind, found by their pid files.

An agent killed with SIGKILL leaves gobgpd / exabgp running on purpose (graceful restart
keeps the routes; the next agent adopts or replaces them). When a lab or a test is torn
down for good, those processes must go too — only those whose pid file lies under the
given state directory and whose command line names that directory.
"""

from __future__ import annotations

from pathlib import Path

from bgp.pidfile import kill_recorded

PIDFILES = ("gobgpd.pid", "exabgp.pid")


def kill_leftover_speakers(state_root: Path, timeout: float = 5.0) -> list[int]:
    """SIGTERM (then SIGKILL) each speaker recorded under `state_root`; returns the PIDs."""
    killed: list[int] = []
    for name in PIDFILES:
        for pidfile in state_root.rglob(name):
            pid = kill_recorded(pidfile, str(pidfile.parent), graceful=True, timeout=timeout)
            if pid is not None:
                killed.append(pid)
    return killed
