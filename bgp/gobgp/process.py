"""Runs one gobgpd (gRPC on a unix socket, pprof off, no config file) and watches it.

The process can live inside a network namespace (`ip netns exec`, which execs, so the
PID is gobgpd's own). A pid file in the state directory lets a restarted agent find and
replace the gobgpd a crashed agent left behind; that replacement counts as a restart.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from pathlib import Path

from bgp.pidfile import RecordedProcess
from bgp.speaker import SpeakerError, logfmt

log = logging.getLogger("bgp.gobgp")


class GobgpdProcess(RecordedProcess):
    """One supervised gobgpd; `start()` returns once its API socket exists."""

    name = "gobgpd"

    def __init__(self, state_dir: Path, *, netns: str | None = None,
                 binary: str = "gobgpd", log_level: str = "info") -> None:
        self.state_dir = state_dir
        self.netns = netns
        self.binary = binary
        self.log_level = log_level
        self.socket = state_dir / "gobgpd.sock"
        super().__init__(state_dir / "gobgpd.pid", str(self.socket))
        if len(str(self.socket)) > 100:
            raise SpeakerError(f"state dir path too long for a unix socket: {state_dir}")

    def start(self, timeout: float = 10.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        argv = [self.binary, f"--api-hosts=unix://{self.socket}", "--pprof-disable",
                "--log-plain", f"--log-level={self.log_level}"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        logf = open(self.state_dir / "gobgpd.log", "ab")  # noqa: SIM115 (child owns it)
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            logf.close()
        self.pidfile.write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if not self.alive():
                raise SpeakerError(f"gobgpd exited with {self.exit_code()} at start; "
                                   f"see {self.state_dir / 'gobgpd.log'}")
            if time.monotonic() > deadline:
                self.kill()
                raise SpeakerError(f"gobgpd did not open {self.socket} in {timeout}s")
            time.sleep(0.02)
        log.info(logfmt("gobgpd_started", pid=self._proc.pid, netns=self.netns or "-"))

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal our gobgpd (only the PID we started) and reap it."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5.0)

    def stop(self) -> None:
        """Terminate gobgpd (SIGTERM, then SIGKILL) and forget it."""
        if self._proc is not None:
            self.kill(signal.SIGTERM)
            log.info(logfmt("gobgpd_stopped", pid=self._proc.pid, rc=self._proc.returncode))
        self._proc = None
        self.pidfile.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)

    def detach(self) -> None:
        """Forget the process without signalling it (a crashed agent, for tests)."""
        self._proc = None
