"""Runs one `exabgp server <conf>` (optionally inside a namespace) and tracks its PID.

A pid file in the state directory lets a restarted agent replace the exabgp a crashed
agent left behind (killed with SIGKILL so peers keep our routes under graceful restart).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from bgp.pidfile import RecordedProcess
from bgp.speaker import SpeakerError, logfmt

log = logging.getLogger("bgp.exabgp")


class ExabgpProcess(RecordedProcess):
    """One supervised exabgp."""

    name = "exabgp"

    def __init__(self, state_dir: Path, *, netns: str | None = None,
                 python: str = sys.executable) -> None:
        self.state_dir = state_dir
        self.netns = netns
        self.python = python
        self.conf = state_dir / "exabgp.conf"
        super().__init__(state_dir / "exabgp.pid", str(self.conf))

    def start(self, env: dict[str, str]) -> None:
        argv = [self.python, "-m", "exabgp", "server", str(self.conf)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        logf = open(self.state_dir / "exabgp.log", "ab")  # noqa: SIM115 (child owns it)
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                env={**os.environ, **env}, cwd=self.state_dir, start_new_session=True)
        finally:
            logf.close()
        self.pidfile.write_text(f"{self._proc.pid}\n")
        log.info(logfmt("exabgp_started", pid=self._proc.pid, netns=self.netns or "-"))

    def reload(self) -> None:
        """Re-read the configuration (SIGUSR1): neighbors added, changed, removed."""
        if not self.alive():
            raise SpeakerError("exabgp is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGUSR1)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)  # exabgp and its relay child (own session)
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=5.0)

    def stop(self) -> None:
        if self._proc is not None:
            self.kill(signal.SIGTERM)
            log.info(logfmt("exabgp_stopped", pid=self._proc.pid, rc=self._proc.returncode))
        self._proc = None
        self.pidfile.unlink(missing_ok=True)

    def detach(self) -> None:
        """Forget the process without signalling it (a crashed agent, for tests)."""
        self._proc = None
