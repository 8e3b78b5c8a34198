"""The agent's port to BFD: which sessions run, and what state each is in.

`DaemonBfd` is the real adapter: it hands the sessions to the BFD responder process
(bgp/bfd_daemon.py) through `sessions.json` in its directory, starts that process when
a session is wanted and none runs, adopts the one a previous agent started (its PID in
`bfd.pid`, its command line naming the directory: an agent restart never flaps a
session), and reads `state.json` back. `FakeBfd` keeps the same contract in memory
(tests/unit/bgp/bfd_contract.py runs both).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Protocol

from bgp.bfd import Settings
from bgp.bfd_daemon import PIDFILE, SESSIONS, STATE
from bgp.pidfile import recorded_pid
from bgp.types import IPAddress

log = logging.getLogger("bgp.bfd")


@dataclass(frozen=True)
class PeerBfd:
    """One session as the responder reports it."""

    peer: IPAddress
    state: str  # "admindown", "down", "init", "up"; "pending" until the responder says
    diag: str = "none"
    since: float = 0.0  # wall-clock time of the last state change


def failed(sessions: Mapping[IPAddress, PeerBfd]) -> frozenset[IPAddress]:
    """The peers whose forwarding path BFD found broken: their packets stopped (detection
    time expired) and the session is not back up. A session that never came up (the peer
    runs no BFD) and one the peer took down on purpose (AdminDown) are not failures."""
    return frozenset(p for p, s in sessions.items()
                     if s.state != "up" and s.diag == "detect_expired")


class BfdPort(Protocol):
    def set_sessions(self, sessions: dict[IPAddress, Settings]) -> None:
        """Run exactly these sessions (none: stop)."""
        ...

    def version(self) -> int:
        """Changes whenever a session's state may have changed (a watcher wakes the
        agent's loop on it)."""
        ...

    def running(self) -> frozenset[IPAddress]:
        """The peers the responder runs a session with now (one a previous agent started
        included)."""
        ...

    def sessions(self) -> dict[IPAddress, PeerBfd]:
        """The sessions wanted, with their state."""
        ...

    def close(self) -> None:
        """Forget the sessions here; the responder keeps running them."""
        ...


class FakeBfd:
    """In-memory BfdPort: a session is `pending` until a test sets its state."""

    def __init__(self) -> None:
        self.wanted: dict[IPAddress, Settings] = {}
        self.states: dict[IPAddress, str] = {}
        self.diags: dict[IPAddress, str] = {}
        self.changes = 0

    def set_sessions(self, sessions: dict[IPAddress, Settings]) -> None:
        self.wanted = dict(sessions)
        self.states = {p: self.states.get(p, "pending") for p in sessions}

    def sessions(self) -> dict[IPAddress, PeerBfd]:
        return {p: PeerBfd(p, st, self.diags.get(p, "none")) for p, st in self.states.items()}

    def set_state(self, peer: IPAddress, state: str, diag: str = "none") -> None:
        if peer in self.states:
            self.states[peer] = state
            self.diags[peer] = diag
            self.changes += 1

    def version(self) -> int:
        return self.changes

    def running(self) -> frozenset[IPAddress]:
        return frozenset(self.states)

    def close(self) -> None:
        pass


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def session_entry(peer: IPAddress, s: Settings) -> dict[str, object]:
    """One sessions.json entry (bgp/bfd_daemon.py reads it back)."""
    out: dict[str, object] = {"peer": str(peer), "minRxMs": s.min_rx_ms,
                              "minTxMs": s.min_tx_ms, "multiplier": s.multiplier}
    if s.multihop:
        out["hops"] = s.hops
        if s.local is not None:
            out["local"] = str(s.local)
    return out


class DaemonBfd:
    """BfdPort over the responder process, in this process's network namespace."""

    def __init__(self, directory: Path, python: str = sys.executable) -> None:
        self.dir = directory
        self.python = python
        self.wanted: dict[IPAddress, Settings] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def pid(self) -> int | None:
        """The responder's PID if it runs (ours, or adopted from a previous agent)."""
        return recorded_pid(self.dir / PIDFILE, str(self.dir))

    def set_sessions(self, sessions: dict[IPAddress, Settings]) -> None:
        doc = {"sessions": [session_entry(p, s)
                            for p, s in sorted(sessions.items(), key=lambda kv: str(kv[0]))]}
        text = json.dumps(doc, indent=1)
        path = self.dir / SESSIONS
        changed = not path.exists() or path.read_text() != text
        self.wanted = dict(sessions)
        if not sessions and self.pid() is None:
            path.unlink(missing_ok=True)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if changed:
            _write_atomic(path, text)  # an empty list makes a running responder stop
        if sessions and self.pid() is None:
            self._start()

    def _start(self, timeout: float = 5.0) -> None:
        self._reap()
        logf = open(self.dir / "bfd.log", "ab")  # noqa: SIM115 (the child owns it)
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "bgp.bfd_daemon", "--dir", str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))
        finally:
            logf.close()
        (self.dir / PIDFILE).write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while not (self.dir / STATE).exists():
            if self._proc.poll() is not None:
                raise OSError(f"the BFD responder exited with {self._proc.returncode} at "
                              f"start; see {self.dir / 'bfd.log'}")
            if time.monotonic() > deadline:
                raise OSError(f"the BFD responder did not start in {timeout:g} s; see "
                              f"{self.dir / 'bfd.log'}")
            time.sleep(0.02)
        log.info("event=bfd_responder_started pid=%d dir=%s", self._proc.pid, self.dir)

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def version(self) -> int:
        """The state file's identity: the responder replaces it at every change."""
        try:
            st = (self.dir / STATE).stat()
        except OSError:
            return 0
        return hash((st.st_ino, st.st_mtime_ns)) or 1

    def _state(self) -> dict[str, object]:
        try:
            doc = json.loads((self.dir / STATE).read_text()) if self.pid() else {}
        except (OSError, ValueError):
            doc = {}
        got = doc.get("sessions", {}) if isinstance(doc, dict) else {}
        return got if isinstance(got, dict) else {}

    def running(self) -> frozenset[IPAddress]:
        return frozenset(ip_address(p) for p in self._state())

    def sessions(self) -> dict[IPAddress, PeerBfd]:
        got = self._state()
        out: dict[IPAddress, PeerBfd] = {}
        for peer in self.wanted:
            s = got.get(str(peer))
            out[peer] = (PeerBfd(peer, str(s.get("state", "pending")), str(s.get("diag", "")),
                                 float(s.get("since", 0.0)))
                         if isinstance(s, dict) else PeerBfd(peer, "pending"))
        return out

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the responder (its sessions announced AdminDown) and wait for it."""
        from bgp.pidfile import kill_recorded

        kill_recorded(self.dir / PIDFILE, str(self.dir), graceful=True, timeout=timeout)
        if self._proc is not None:
            self._proc.wait(timeout=timeout)
            self._proc = None
        (self.dir / SESSIONS).unlink(missing_ok=True)

    def close(self) -> None:
        self._proc = None  # the responder outlives the agent on purpose

