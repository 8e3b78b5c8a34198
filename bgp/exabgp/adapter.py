"""ExabgpSpeaker: the Speaker protocol on a supervised `exabgp` and its API relay.

- The agent writes exabgp.conf (neighbors, one API process: bgp/exabgp/relay.py) and
  listens on a unix socket the relay connects to. Commands go down that socket one line
  each; ExaBGP answers every one with `done` or `error`, which the adapter waits for.
- Announcements are batched (`announce attributes ... nlri P1 P2 ...`), one set of lines
  for every neighbor while they all get the same paths; with per-neighbor exports, or a
  neighbor behind the others, `neighbor A announce ...` lines per neighbor. What each
  neighbor was sent is kept by neighbor (ExaBGP keeps an Adj-RIB-Out per neighbor).
- Peer changes rewrite the config and reload it (SIGUSR1); paths are then re-announced.
- `manual-eor`: End-of-RIB is sent by the adapter when a session comes up, after every
  path is in ExaBGP. After exabgp dies, the supervisor restarts it and replays all paths
  before any End-of-RIB, so graceful restart at the peer never sweeps desired routes.
- Received routes come from ExaBGP's JSON updates; best paths are chosen here (RibIn).
- `resync()` can only compare against what the adapter itself knows: ExaBGP offers no
  RIB query this adapter reads back, and its RIB can only change through this adapter's
  own API process (the CLI pipe is off), or by exabgp restarting, which the supervisor
  replays. So resync re-sends what the desired set holds and the last successful send
  did not (e.g. after a batch failed part-way); a path removed inside ExaBGP by other
  means would not be seen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from ipaddress import ip_address, ip_network
from pathlib import Path as FsPath
from typing import Any

from bgp.diagnose import session_problem
from bgp.exabgp import config as cfg
from bgp.exabgp.process import ExabgpProcess
from bgp.ribin import RibIn
from bgp.speaker import (
    PathDiff,
    PeerDiff,
    SpeakerError,
    diff_paths,
    diff_peers,
    index_exports,
    index_paths,
    index_peers,
    logfmt,
    prefix_key,
    sort_paths,
)
from bgp.supervised import Supervised
from bgp.types import (
    BestPathEvent,
    Family,
    Feature,
    GlobalConfig,
    IPAddress,
    IPNetwork,
    Path,
    PeerSpec,
    PeerStatus,
    Route,
    SessionState,
    community_text,
)

log = logging.getLogger("bgp.exabgp")
RELAY = FsPath(__file__).with_name("relay.py")
PIPELINE = 64  # commands in flight before waiting for their acks


def announced(peer: IPAddress, update: dict[str, Any]) -> list[Route]:
    """The routes an UPDATE's JSON announces, one per NLRI. An IPv6 next hop may come as
    global and link-local (RFC 2545), ExaBGP listing the NLRI under each: the global one
    is taken (a link-local next hop needs its interface to be installed)."""
    attrs = update.get("attribute", {})
    out: dict[str, Route] = {}
    for by_nh in update.get("announce", {}).values():
        for nh, items in sorted(by_nh.items(), key=lambda kv: not _link_local(kv[0])):
            for item in items:
                nlri = str(item["nlri"] if isinstance(item, dict) else item)
                out[nlri] = _route(peer, nlri, nh, attrs)
    return list(out.values())


def _link_local(nh: str) -> bool:
    try:
        return ip_address(nh).is_link_local
    except ValueError:
        return False


def source_address(peer: IPAddress, netns: str | None = None) -> IPAddress | None:
    """The address the kernel would send to `peer` from (`ip route get`, in netns), or
    None when it has no route there."""
    argv = ["ip", *(("-n", netns) if netns else ()), "-j", "route", "get", str(peer)]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=True)
        src = json.loads(out.stdout)[0].get("prefsrc")
        return ip_address(src) if src else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError):
        return None


class ExabgpSpeaker(Supervised):
    """A Speaker backed by one exabgp process it configures, supervises and replays into."""

    features: frozenset[Feature] = frozenset({
        Feature.IPV6, Feature.MD5, Feature.MULTIHOP, Feature.GRACEFUL_RESTART, Feature.LISTEN,
        Feature.COMMUNITIES, Feature.LARGE_COMMUNITIES, Feature.LOCAL_PREF,
        Feature.RECEIVED_ROUTES, Feature.PER_PEER_EXPORT,
    })

    def __init__(self, state_dir: str | FsPath, *, netns: str | None = None,
                 python: str = sys.executable, ack_timeout: float = 15.0,
                 supervise_interval: float = 0.1, connect_timeout: float = 20.0) -> None:
        self.state_dir = FsPath(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = ExabgpProcess(self.state_dir, netns=netns, python=python)
        self.ack_timeout = ack_timeout
        self.supervise_interval = supervise_interval
        self.connect_timeout = connect_timeout
        self.api_socket = self.state_dir / "api.sock"
        Supervised.__init__(self)
        self._acks: queue.Queue[str] = queue.Queue()
        self._stale_acks = 0  # acks still owed to a send that gave up waiting for them
        self._reload_settle = 0.0  # until then a rejected command may predate a reload
        self._inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._conn: socket.socket | None = None
        self._connected = threading.Event()
        self._server: socket.socket | None = None
        self._tasks: queue.Queue[Callable[[], None]] = queue.Queue()
        self._config: GlobalConfig | None = None
        self._peers: dict[IPAddress, PeerSpec] = {}
        self._desired: dict[IPNetwork, Path] = {}
        self._exports: dict[IPAddress, dict[IPNetwork, Path]] | None = None
        self._announced: dict[IPNetwork, Path] = {}  # the paths last sent (all neighbors')
        self._out: dict[IPAddress, dict[IPNetwork, Path]] = {}  # each neighbor was sent
        self._state: dict[IPAddress, SessionState] = {}
        self._since: dict[IPAddress, datetime] = {}
        self._down_reason: dict[IPAddress, str] = {}  # ExaBGP's words, last time down
        self._rib = RibIn()
        self._events: list[BestPathEvent] = []
        self._events_cv = threading.Condition()
        self._restarting = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    # -- lifecycle -------------------------------------------------------------------
    def start(self, config: GlobalConfig) -> None:
        with self._lock:
            if self._config == config and self.proc.alive():
                return
            if self._config is not None:
                self._shutdown()
            self._config = config
            self._restarting = self.proc.adopt_leftover()
            self._stopping.clear()
            self._listen()
            self._spawn_threads(((self._accept_loop, "exabgp-accept"),
                                 (self._supervise, "exabgp-supervisor"),
                                 (self._event_loop, "exabgp-events"),
                                 (self._task_loop, "exabgp-tasks")))
            self._spawn()
        self._wait_connected()

    def _listen(self) -> None:
        self.api_socket.unlink(missing_ok=True)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(self.api_socket))
        srv.listen(4)
        srv.settimeout(0.2)
        self._server = srv

    def _spawn(self) -> None:
        assert self._config is not None
        self._write_config()
        self._connected.clear()
        self.proc.start(cfg.environment(self._config))

    def _write_config(self) -> None:
        assert self._config is not None
        relay = [self.python_for_relay(), str(RELAY), str(self.api_socket)]
        text = cfg.render(self._config, list(self._peers.values()), relay)
        tmp = self.proc.conf.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)  # may hold MD5 passwords
        tmp.replace(self.proc.conf)

    def python_for_relay(self) -> str:
        return self.proc.python

    def _wait_connected(self) -> None:
        if not self._connected.wait(self.connect_timeout):
            raise SpeakerError(f"exabgp's API relay did not connect in {self.connect_timeout}s;"
                               f" see {self.state_dir / 'exabgp.log'}")

    def stop(self) -> None:
        def stopped() -> None:
            self._shutdown()
            self._config = None
            self._peers.clear()
            self._desired.clear()
            self._exports = None
            self._announced.clear()
            self._out.clear()
            self._state.clear()
        self._end_threads(stopped)

    def detach(self) -> None:
        """Stop supervising, leave exabgp running (simulates an agent crash)."""
        def let_go() -> None:
            self.proc.detach()
            self._close_conn()
            if self._server:
                self._server.close()
                self._server = None
        self._end_threads(let_go)

    def _shutdown(self) -> None:
        self.proc.stop()
        self._close_conn()
        if self._server:
            self._server.close()
            self._server = None
        self.api_socket.unlink(missing_ok=True)

    def _close_conn(self) -> None:
        if self._conn:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        self._connected.clear()

    # -- threads ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            srv = self._server
            if srv is None:
                return
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._close_conn()
                self._conn = conn
                while not self._acks.empty():
                    self._acks.get_nowait()
                self._stale_acks = 0
                threading.Thread(target=self._read_loop, args=(conn,), daemon=True,
                                 name="exabgp-read").start()
                try:
                    self._replay()
                except SpeakerError as e:
                    log.error(logfmt("exabgp_replay_failed", error=str(e)))
                self._connected.set()

    def _configured_peers(self) -> bool:
        return bool(self._peers) and not self._restarting

    def _announce(self, paths: Iterable[Path], only: IPAddress | None = None) -> list[str]:
        """The announce lines of paths for every configured peer (or `only` that one)."""
        assert self._config is not None
        sources = {}
        for a, spec in self._peers.items():
            if cfg.needs_ipv6_self(spec) and cfg.local_address(self._config, spec) is None:
                src = source_address(a, self.proc.netns)
                if src is not None:
                    sources[a] = src
        return cfg.announce_for(self._config, self._peers, paths, only, sources)

    def _replay(self) -> None:
        """Announce every desired path (lock held); End-of-RIB follows on session up."""
        self._out = {}  # a new exabgp: no neighbor has anything
        if self._configured_peers():
            self._sync()
        self._announced = dict(self._desired)
        log.info(logfmt("exabgp_replayed", pid=self.proc.pid, paths=len(self._desired),
                        peers=len(self._peers)))

    def _want(self, peer: IPAddress) -> dict[IPNetwork, Path]:
        """What peer should have: its exports, else every desired path."""
        if self._exports is not None:
            return self._exports.get(peer, {})
        return self._desired

    def _sync(self) -> PathDiff:
        """Send every configured neighbor the difference between what it was sent and
        what it should have (lock held): one set of lines for all when the differences
        are equal, else neighbor-scoped lines of each one's families. Returns every path
        sent (announced or withdrawn) once."""
        diffs = {a: diff_paths(self._out.get(a, {}), self._want(a)) for a in self._peers}
        todo = {a: d for a, d in diffs.items() if d}
        if not todo:
            return PathDiff()
        first = next(iter(diffs.values()))
        if len(todo) == len(diffs) and all(d == first for d in diffs.values()):
            lines = cfg.withdraw_lines(first.withdraw) + self._announce(first.announce)
        else:
            lines = []
            for a, d in todo.items():
                fams = self._peers[a].families
                lines += cfg.withdraw_lines([p for p in d.withdraw if p.family in fams],
                                            f"neighbor {a} ")
                lines += self._announce([p for p in d.announce if p.family in fams], a)
        if lines:
            self._send_settled(lines)
        for a in todo:
            self._out[a] = dict(self._want(a))
        return PathDiff(sort_paths({p for d in todo.values() for p in d.announce}),
                        sort_paths({p for d in todo.values() for p in d.withdraw}))

    def _read_loop(self, conn: socket.socket) -> None:
        """Read the relay's lines without ever taking the adapter's lock.

        `_send` holds the lock while it waits for acknowledgements, and ExaBGP interleaves
        acknowledgements with JSON events on one stream (the ToR echoes our own UPDATEs
        back, so a bulk announce produces events too). Handling an event here under the
        lock would stop this reader in front of the acknowledgements `_send` waits for;
        ExaBGP's blocking writes to the relay then stall its whole reactor. So events are
        parsed here and handed to the event thread; acknowledgements go straight through.
        """
        with conn.makefile("rb") as f:
            for raw in f:
                line = raw.decode(errors="replace").strip()
                if line in ("done", "error"):
                    self._acks.put(line)
                elif line.startswith("{"):
                    try:
                        msg = json.loads(line)
                    except ValueError as e:
                        log.warning(logfmt("exabgp_bad_event", error=str(e)))
                        continue
                    if isinstance(msg, dict):
                        self._inbox.put(msg)
        if conn is self._conn:
            self._acks.put("closed")

    def _event_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                msg = self._inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._on_event(msg)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning(logfmt("exabgp_bad_event", error=str(e)))

    def _supervise(self) -> None:
        while not self._stopping.wait(self.supervise_interval):
            with self._lock:
                if self._stopping.is_set() or self._config is None or self.proc.alive():
                    continue
                log.warning(logfmt("exabgp_exited", rc=self.proc.exit_code()))
                self._close_conn()
                for a in list(self._state):
                    self._peer_down(a)
                self._spawn()
                self.restarts += 1

    def _task_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                task = self._tasks.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                task()
            except SpeakerError as e:
                log.warning(logfmt("exabgp_task_failed", error=str(e)))

    # -- events ----------------------------------------------------------------------
    def _on_event(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        nb = msg.get("neighbor", {})
        addr = nb.get("address", {}).get("peer") if isinstance(nb, dict) else None
        if addr is None:
            return
        peer = ip_address(addr)
        if kind == "state":
            state = nb.get("state")
            if state == "up":
                with self._lock:
                    self._down_reason.pop(peer, None)
                    self._state[peer] = SessionState.ESTABLISHED
                    self._since[peer] = datetime.now(UTC)
                log.info(logfmt("bgp_session_up", peer=peer))
                self._tasks.put(lambda: self._send_eor(peer))
            elif state == "connected":
                with self._lock:
                    self._state[peer] = SessionState.OPENSENT
            elif state == "down":
                reason = str(nb.get("reason", ""))
                log.info(logfmt("bgp_session_down", peer=peer, reason=reason))
                with self._lock:
                    if reason:
                        self._down_reason[peer] = reason
                    self._peer_down(peer)
        elif kind == "update":
            update = nb.get("message", {}).get("update", {})
            self._on_update(peer, update)

    def _peer_down(self, peer: IPAddress) -> None:
        if peer in self._state:
            self._state[peer] = SessionState.ACTIVE
        self._since.pop(peer, None)
        self._emit(self._rib.drop_peer(peer))

    def _send_eor(self, peer: IPAddress) -> None:
        with self._lock:
            spec = self._peers.get(peer)
            if spec is None or self._conn is None:
                return
            self._send([cfg.eor_line(peer, f) for f in spec.families])
        log.info(logfmt("bgp_eor_sent", peer=peer))

    def _on_update(self, peer: IPAddress, update: dict[str, Any]) -> None:
        events: list[BestPathEvent] = []
        with self._lock:
            for fam_routes in update.get("withdraw", {}).values():
                for item in fam_routes:
                    nlri = str(item["nlri"] if isinstance(item, dict) else item)
                    events += self._rib.withdraw(peer, ip_network(nlri, strict=False))
            for r in announced(peer, update):
                events += self._rib.update(r)
        self._emit(events)

    def _emit(self, events: list[BestPathEvent]) -> None:
        if events:
            with self._events_cv:
                self._events.extend(events)
                self._events_cv.notify_all()

    # -- commands --------------------------------------------------------------------
    def _send(self, lines: list[str]) -> None:
        """Send command lines (lock held), waiting for each acknowledgement."""
        conn = self._conn
        if conn is None:
            raise SpeakerError("exabgp is not connected (restart pending)")
        errors = 0
        for i in range(0, len(lines), PIPELINE):
            chunk = lines[i:i + PIPELINE]
            try:
                conn.sendall("".join(line + "\n" for line in chunk).encode())
            except OSError as e:
                raise SpeakerError(f"exabgp relay connection lost: {e}") from e
            for k in range(len(chunk)):
                ack = self._next_ack()
                if ack is None:
                    # the rest may still come: never count them for a later command
                    self._stale_acks += len(chunk) - k
                    raise SpeakerError("exabgp did not acknowledge a command")
                if ack == "closed":
                    raise SpeakerError("exabgp relay connection lost")
                errors += ack == "error"
        if errors:
            raise SpeakerError(f"exabgp rejected {errors} of {len(lines)} commands")

    def _next_ack(self) -> str | None:
        """The next acknowledgement of this send (late ones of a failed send skipped)."""
        while True:
            try:
                ack = self._acks.get(timeout=self.ack_timeout)
            except queue.Empty:
                return None
            if ack != "closed" and self._stale_acks > 0:
                self._stale_acks -= 1
                continue
            return ack

    # -- Speaker ---------------------------------------------------------------------
    def _require(self) -> None:
        if self._config is None:
            raise SpeakerError("speaker not started")

    def set_peers(self, peers: Iterable[PeerSpec]) -> PeerDiff:
        desired = index_peers(peers)
        with self._lock:
            self._require()
            diff = diff_peers(self._peers, desired)
            if not diff:
                return diff
            old, self._peers = self._peers, desired
            if self._restarting:
                log.info(logfmt("bgp_peers_deferred", peers=len(desired),
                                reason="restarting, waiting for paths"))
            else:
                self._apply_peers(diff, old)
            for a in (*diff.removed, *diff.updated):
                self._down_reason.pop(a, None)
            for a in diff.removed:
                self._state.pop(a, None)
                self._since.pop(a, None)
                self._emit(self._rib.drop_peer(a))
            for a in diff.added:
                self._state.setdefault(a, SessionState.ACTIVE)
            return diff

    def _apply_peers(self, diff: PeerDiff, old: dict[IPAddress, PeerSpec]) -> None:
        # ExaBGP drops a removed neighbor's TCP session without a NOTIFICATION, which a
        # graceful-restart peer treats as a restart and keeps our routes stale; so
        # withdraw everything from it first.
        drain = [a for a in diff.removed if self._state.get(a) is SessionState.ESTABLISHED]
        lines = []
        for a in drain:
            fams = old[a].families
            lines += cfg.withdraw_lines([p for p in self._out.get(a, {}).values()
                                         if p.family in fams], f"neighbor {a} ")
        for a in (*diff.removed, *diff.updated):  # a re-created neighbor starts empty
            self._out.pop(a, None)
        if lines:
            with contextlib.suppress(SpeakerError):
                self._send(lines)
            time.sleep(0.2)  # let the withdrawals leave before the session closes
        self._write_config()
        self.proc.reload()
        # ExaBGP applies SIGUSR1 at the top of its loop; commands it reads in the same pass
        # still meet the old neighbors ("no neighbor matching"), so retry for a moment
        self._reload_settle = time.monotonic() + 5.0
        for a in diff.removed:
            log.info(logfmt("bgp_peer_removed", peer=a))
        for a in (*diff.added, *diff.updated):
            spec = self._peers[a]
            log.info(logfmt("bgp_peer_added", peer=a, name=spec.name, peer_asn=spec.peer_asn,
                            md5=bool(spec.password), multihop=spec.ebgp_multihop,
                            passive=spec.passive))
        # a new or re-created neighbor starts with an empty RIB: give it its paths
        if diff.added or diff.updated:
            prefix_lines = []
            for a in (*diff.added, *diff.updated):
                fams = self._peers[a].families
                prefix_lines += self._announce(
                    [p for p in self._want(a).values() if p.family in fams], a)
            self._reload_then(prefix_lines)
            for a in (*diff.added, *diff.updated):
                self._out[a] = dict(self._want(a))

    def _reload_then(self, lines: list[str]) -> None:
        # the reload is asynchronous; a neighbor-scoped command for a neighbor that does
        # not exist yet is an error, so retry briefly
        deadline = time.monotonic() + 5.0
        while True:
            try:
                self._send(lines)
                return
            except SpeakerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _send_settled(self, lines: list[str]) -> None:
        """`_send`, retried while a reload may not have reached ExaBGP yet."""
        if time.monotonic() < self._reload_settle:
            self._reload_then(lines)
        else:
            self._send(lines)

    def set_paths(self, paths: Iterable[Path],
                  exports: Mapping[IPAddress, Iterable[Path]] | None = None) -> PathDiff:
        desired = index_paths(paths)
        per_peer = index_exports(desired, exports)
        with self._lock:
            self._require()
            self._desired, self._exports = desired, per_peer
            diff = diff_paths(self._announced, desired)
            # with no neighbor in exabgp.conf ExaBGP rejects every route command; paths are
            # then only recorded and go to each neighbor when it is added
            sent = self._sync() if self._configured_peers() else PathDiff()
            self._announced = dict(desired)
            if diff or sent:
                log.info(logfmt("bgp_paths_sent", announce=len(sent.announce),
                                withdraw=len(sent.withdraw), total=len(desired),
                                per_peer=per_peer is not None))
            if self._restarting:
                self._restarting = False
                self._apply_peers(PeerDiff(added=tuple(self._peers)), {})
                log.info(logfmt("bgp_peers_added_after_restart", peers=len(self._peers)))
            return diff

    def resync(self) -> PathDiff:
        with self._lock:
            self._require()
            if not self._configured_peers() or self._conn is None:
                return PathDiff()
            diff = self._sync()
            self._announced = dict(self._desired)
            if diff:
                log.info(logfmt("bgp_paths_resynced", announce=len(diff.announce),
                                withdraw=len(diff.withdraw), total=len(self._desired)))
            return diff

    def peers(self) -> list[PeerStatus]:
        with self._lock:
            self._require()
            out = []
            for a, spec in self._peers.items():
                state = self._state.get(a, SessionState.ACTIVE)
                up = state is SessionState.ESTABLISHED
                received: dict[Family, int] = {}
                advertised: dict[Family, int] = {}
                if up:
                    for (peer, _), r in self._rib.routes.items():
                        if peer == a:
                            received[r.family] = received.get(r.family, 0) + 1
                    for p in self._out.get(a, {}).values():
                        if p.family in spec.families:
                            advertised[p.family] = advertised.get(p.family, 0) + 1
                out.append(PeerStatus(
                    address=a, state=state, peer_asn=spec.peer_asn,
                    established_at=self._since.get(a) if up else None,
                    hold_time=spec.hold_time if up else None,
                    keepalive=spec.hold_time // 3 if up else None,
                    received=received, advertised=advertised,
                    last_error=session_problem(spec, state, self._config.asn if self._config
                                               else 0, reason=self._down_reason.get(a))))
        return sorted(out, key=lambda s: (s.address.version, int(s.address)))

    def advertised(self, peer: IPAddress | None = None) -> set[Path]:
        """Announced paths; for a peer, those of its families while it is Established
        (ExaBGP has no Adj-RIB-Out query; local pref is only sent to iBGP peers)."""
        with self._lock:
            self._require()
            if peer is None:
                return set(self._announced.values())
            spec = self._peers.get(peer)
            if spec is None or self._state.get(peer) is not SessionState.ESTABLISHED:
                return set()
            ebgp = spec.peer_asn != self._config.asn if self._config else True
            return {Path(prefix=p.prefix, next_hop=p.next_hop, communities=p.communities,
                         large_communities=p.large_communities,
                         local_pref=None if ebgp else p.local_pref)
                    for p in self._out.get(peer, {}).values() if p.family in spec.families}

    def received(self, peer: IPAddress | None = None) -> set[Route]:
        with self._lock:
            self._require()
            return {r for (a, _), r in self._rib.routes.items() if peer is None or a == peer}

    def best_changes(self, timeout: float = 0.0) -> list[BestPathEvent]:
        with self._events_cv:
            if not self._events and timeout > 0:
                self._events_cv.wait(timeout)
            out, self._events = self._events, []
        return sorted(out, key=lambda e: prefix_key(e.prefix)) if len(out) > 1 else out


def _route(peer: IPAddress, nlri: str, next_hop: str, attrs: dict[str, Any]) -> Route:
    as_path: list[int] = []
    raw = attrs.get("as-path", [])
    if isinstance(raw, dict):  # ExaBGP 5: {"0": {"element": "as-sequence", "value": [...]}}
        for seg in raw.values():
            vals = seg.get("value", []) if isinstance(seg, dict) else seg
            as_path.extend(int(v) for v in vals)
    else:
        as_path.extend(int(v) for v in raw)
    comms = frozenset(community_text((int(a) << 16) | int(b))
                      for a, b in attrs.get("community", []))
    larges = frozenset(f"{a}:{b}:{c}" for a, b, c in attrs.get("large-community", []))
    lp = attrs.get("local-preference")
    try:
        nh: IPAddress | None = ip_address(next_hop)
    except ValueError:
        nh = None
    return Route(prefix=ip_network(nlri, strict=False), next_hop=nh, peer=peer,
                 as_path=tuple(as_path), communities=comms, large_communities=larges,
                 local_pref=int(lp) if lp is not None else None)
