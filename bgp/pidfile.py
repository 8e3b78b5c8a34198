"""Speaker processes left behind by a previous agent, found through their pid files.

A pid file alone is not proof: the PID may have been reused. A process is only ours
when its command line still names the file or socket our daemon was started with.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

log = logging.getLogger("bgp.process")


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting to be reaped has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited; True if it did within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.02)
    return not _running(pid)


def recorded_pid(pidfile: Path, marker: str) -> int | None:
    """The PID in `pidfile` if that process runs and its command line contains `marker`."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        return None
    return pid if marker.encode() in cmdline else None


def kill_recorded(pidfile: Path, marker: str, *, graceful: bool = False,
                  timeout: float = 5.0) -> int | None:
    """Stop the process recorded in `pidfile` (see `recorded_pid`) and remove the file.

    graceful: SIGTERM first, SIGKILL after `timeout`; otherwise SIGKILL at once (a BGP
    speaker killed that way sends no NOTIFICATION, so graceful restart keeps its routes
    at the peers). Returns the PID stopped, or None.
    """
    pid = recorded_pid(pidfile, marker)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
        if not wait_gone(pid, timeout) and graceful:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, timeout)
    pidfile.unlink(missing_ok=True)
    return pid


class RecordedProcess:
    """A speaker daemon this agent starts, recorded in `pidfile` so that a later agent can
    replace it; `marker` is what its command line must contain to count as ours."""

    name = "daemon"

    def __init__(self, pidfile: Path, marker: str) -> None:
        self.pidfile = pidfile
        self.marker = marker
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def adopt_leftover(self) -> bool:
        """Kill a daemon a previous agent left behind (SIGKILL: no NOTIFICATION, so peers
        keep our routes under graceful restart); True if a pid file was there."""
        if not self.pidfile.exists():
            return False
        pid = kill_recorded(self.pidfile, self.marker)
        if pid is not None:
            log.info("event=%s_leftover_killed pid=%d", self.name, pid)
        return True
