"""GobgpSpeaker: the Speaker protocol on a supervised gobgpd.

- gobgpd keeps no state, so this adapter holds the desired global config, peers and paths.
  A supervisor thread notices when gobgpd exits, starts a new one, and replays StartBgp,
  every peer (with `local_restarting`, so graceful restart keeps routes at the peers), and
  every path (AddPathStream). A gobgpd left behind by a crashed agent is replaced the same
  way at `start()`.
- Path changes go out as one AddPathStream of withdrawals then announcements, batched.
- `resync()` lists the global RIB's locally originated paths (ListPath, both unicast
  families) and re-sends only what differs from what the adapter announced: a path
  deleted inside gobgpd (`gobgp global rib del`, another API client) comes back.
- A watcher thread streams best-path changes (WatchEvent BEST) of learned routes.
- Per-neighbor exports (`set_paths(exports=...)`) are a global export policy over marked
  paths (bgp.gobgp.exports); it is set before the paths that need it and trimmed after.
- Not available in gobgpd 3.10: BFD, dynamic peer ASN (peer_asn 0), a shorter idle-hold
  after a reset (so peers should connect to us: set `listen_port` and `passive`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path as FsPath

import grpc

from bgp.diagnose import Notifications, session_problem
from bgp.gobgp import convert
from bgp.gobgp import exports as exports_mod
from bgp.gobgp.client import GobgpClient
from bgp.gobgp.process import GobgpdProcess
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
)
from bgp.supervised import Supervised
from bgp.types import (
    BestPathEvent,
    Feature,
    GlobalConfig,
    IPAddress,
    IPNetwork,
    Path,
    PeerSpec,
    PeerStatus,
    Route,
    SessionState,
)

log = logging.getLogger("bgp.gobgp")


class GobgpSpeaker(Supervised):
    """A Speaker backed by one gobgpd it starts, supervises and replays into."""

    features: frozenset[Feature] = frozenset(Feature) - {Feature.BFD, Feature.DYNAMIC_PEER_ASN}

    def __init__(self, state_dir: str | FsPath, *, netns: str | None = None,
                 binary: str = "gobgpd", batch_size: int = 1000,
                 supervise_interval: float = 0.1, rpc_timeout: float = 10.0) -> None:
        self.proc = GobgpdProcess(FsPath(state_dir), netns=netns, binary=binary)
        self.batch_size = batch_size
        self.supervise_interval = supervise_interval
        self.rpc_timeout = rpc_timeout
        Supervised.__init__(self)
        self._events_cv = threading.Condition()
        self._events: list[BestPathEvent] = []
        self._config: GlobalConfig | None = None
        self._peers: dict[IPAddress, PeerSpec] = {}
        self._seen_up: dict[IPAddress, Notifications] = {}  # counters when last Established
        self._desired: dict[IPNetwork, Path] = {}  # as sent (marked, with exports)
        self._announced: dict[IPNetwork, Path] = {}
        self._given: dict[IPNetwork, Path] = {}  # as set_paths was given them
        self._grants: frozenset[exports_mod.Grant] = frozenset()
        self._exports: dict[IPAddress, dict[IPNetwork, Path]] | None = None
        self._client: GobgpClient | None = None
        self._generation = 0
        self._restarting = False
        self.restarts = 0  # how many times gobgpd was replaced and replayed

    # -- lifecycle -------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def start(self, config: GlobalConfig) -> None:
        with self._lock:
            if self._config == config and self.proc.alive():
                return
            if self._config is not None:
                log.info(logfmt("gobgp_global_changed", asn=config.asn,
                                router_id=config.router_id))
                self._shutdown_process()
            self._config = config
            # A gobgpd left by a crashed agent: peers are held back until the first
            # set_paths, so the restarted speaker never sends an empty table + End-of-RIB.
            self._restarting = self.proc.adopt_leftover()
            self._spawn_and_replay(restarting=self._restarting)
            if not self._threads:
                self._spawn_threads(((self._supervise, "gobgp-supervisor"),
                                     (self._watch, "gobgp-watch")))

    def stop(self) -> None:
        def stopped() -> None:
            self._shutdown_process()
            self._config = None
            self._peers.clear()
            self._desired.clear()
            self._announced.clear()
            self._given.clear()
            self._grants = frozenset()
            self._exports = None
        self._end_threads(stopped)

    def detach(self) -> None:
        """Stop supervising and leave gobgpd running (simulates an agent crash)."""
        def let_go() -> None:
            if self._client:
                self._client.close()
                self._client = None
            self.proc.detach()
        self._end_threads(let_go)

    def _shutdown_process(self) -> None:
        if self._client:
            self._client.close()
            self._client = None
        self.proc.stop()

    def _spawn_and_replay(self, *, restarting: bool) -> None:
        """Start gobgpd and push global config, peers and paths (lock held)."""
        assert self._config is not None
        if self._client:
            self._client.close()
            self._client = None
        self.proc.start()
        client = GobgpClient(str(self.proc.socket), timeout=self.rpc_timeout)
        client.start_bgp(self._config)
        if self._grants:  # before any neighbor or path: nothing leaves unfiltered
            client.set_export_policy(self._grants, "reject")
        for spec in self._peers.values():
            client.add_peer(spec, self._config.asn, restarting=restarting)
        paths = list(self._desired.values())
        if paths:
            client.send_paths(paths, (), self.batch_size)
        self._announced = dict(self._desired)
        self._client = client
        self._generation += 1
        log.info(logfmt("gobgp_replayed", pid=self.proc.pid, restarting=restarting,
                        peers=len(self._peers), paths=len(paths)))

    def _supervise(self) -> None:
        while not self._stopping.wait(self.supervise_interval):
            with self._lock:
                if self._stopping.is_set() or self._config is None or self.proc.alive():
                    continue
                log.warning(logfmt("gobgpd_exited", rc=self.proc.exit_code()))
                try:
                    self._spawn_and_replay(restarting=True)
                    self.restarts += 1
                except (SpeakerError, grpc.RpcError, grpc.FutureTimeoutError) as e:
                    log.error(logfmt("gobgpd_restart_failed", error=str(e)))

    def _watch(self) -> None:
        """Stream best-path changes; reconnect whenever gobgpd was replaced."""
        while not self._stopping.is_set():
            with self._lock:
                client, gen = self._client, self._generation
            if client is None:
                self._stopping.wait(0.1)
                continue
            stream = None
            try:
                stream = client.watch_best()
                for res in stream:
                    if self._stopping.is_set() or gen != self._generation:
                        break
                    if res.HasField("table"):
                        self._on_table(res.table.paths)
            except grpc.RpcError as e:
                if not self._stopping.is_set():
                    log.debug(logfmt("gobgp_watch_ended", error=str(e.code())))
            finally:
                if stream is not None:
                    stream.cancel()
            while (not self._stopping.is_set() and gen == self._generation):
                self._stopping.wait(0.1)
                if self.proc.alive() and self._client is client:
                    break

    def _on_table(self, paths: Iterable[object]) -> None:
        events: list[BestPathEvent] = []
        for pb in paths:
            if convert.is_local(pb):
                continue
            r = convert.route_of_pb(pb)
            if r is None:
                continue
            events.append(BestPathEvent(r.prefix, None if pb.is_withdraw else r))  # type: ignore[attr-defined]
        if events:
            with self._events_cv:
                self._events.extend(events)
                self._events_cv.notify_all()

    # -- Speaker ---------------------------------------------------------------------
    def _require(self) -> GobgpClient:
        if self._config is None:
            raise SpeakerError("speaker not started")
        if self._client is None:
            raise SpeakerError("gobgpd is not running (restart pending)")
        return self._client

    def set_peers(self, peers: Iterable[PeerSpec]) -> PeerDiff:
        desired = index_peers(peers)
        with self._lock:
            client = self._require()
            assert self._config is not None
            diff = diff_peers(self._peers, desired)
            if self._restarting:
                self._peers = desired
                log.info(logfmt("bgp_peers_deferred", peers=len(desired),
                                reason="restarting, waiting for paths"))
                return diff
            try:
                if diff.removed and self._exports is not None:
                    # per-neighbor exports drain by themselves: the paths go again without
                    # the removed neighbors' markers, so gobgpd withdraws them there
                    self._apply(client, self._given, {
                        a: ps for a, ps in self._exports.items() if a not in diff.removed})
                    time.sleep(0.3)  # the withdrawals leave before the NOTIFICATION
                    for a in diff.removed:
                        client.delete_peer(str(a))
                elif diff.removed:
                    client.drain_and_delete([str(a) for a in diff.removed],
                                            list(self._announced.values()), self.batch_size)
                for a in diff.updated:
                    client.delete_peer(str(a))
                for a in (*diff.removed, *diff.updated):
                    self._peers.pop(a, None)
                    self._seen_up.pop(a, None)  # a new neighbor's counters start at 0
                    log.info(logfmt("bgp_peer_removed", peer=a, reason="removed"
                                    if a in diff.removed else "updated"))
                for a in (*diff.updated, *diff.added):
                    spec = desired[a]
                    client.add_peer(spec, self._config.asn)
                    self._peers[a] = spec
                    log.info(logfmt("bgp_peer_added", peer=a, name=spec.name,
                                    peer_asn=spec.peer_asn, md5=bool(spec.password),
                                    multihop=spec.ebgp_multihop, passive=spec.passive))
            except grpc.RpcError as e:
                raise SpeakerError(f"gobgpd refused peer change: {e.details()}") from e
            return diff

    def set_paths(self, paths: Iterable[Path],
                  exports: Mapping[IPAddress, Iterable[Path]] | None = None) -> PathDiff:
        given = index_paths(paths)
        per_peer = index_exports(given, exports)
        with self._lock:
            client = self._require()
            public = diff_paths(self._given, given)
            try:
                diff = self._apply(client, given, per_peer)
                if self._restarting:
                    self._restarting = False
                    assert self._config is not None
                    for spec in self._peers.values():
                        client.add_peer(spec, self._config.asn, restarting=True)
                    log.info(logfmt("bgp_peers_added_after_restart", peers=len(self._peers)))
            except grpc.RpcError as e:
                raise SpeakerError(f"gobgpd refused paths: {e.details()}") from e
            if diff:
                log.info(logfmt("bgp_paths_sent", announce=len(diff.announce),
                                withdraw=len(diff.withdraw), total=len(given),
                                per_neighbor=len(per_peer) if per_peer is not None else 0))
            return public

    def _apply(self, client: GobgpClient, given: dict[IPNetwork, Path],
               per_peer: dict[IPAddress, dict[IPNetwork, Path]] | None) -> PathDiff:
        """Send `given` (per neighbor with `per_peer`) as the difference to what was sent
        (lock held): the policy first takes the new grants beside the old ones (the old
        ones let gobgpd withdraw what a neighbor no longer gets), the paths go, then the
        policy keeps only what they need. Returns what was sent, as sent (marked)."""
        desired, grants = (exports_mod.marked(given, per_peer) if per_peer is not None
                           else (given, frozenset[exports_mod.Grant]()))
        old = self._grants
        diff = diff_paths(self._announced, desired)
        self._desired = desired
        if diff or grants != old or self._restarting:
            if grants:
                client.set_export_policy(old | grants, "reject")
            elif old:  # leaving per-neighbor exports: markers stripped on the way out
                client.set_export_policy(old, "strip")
            client.send_paths(diff.announce, diff.withdraw, self.batch_size)
            if old and (old | grants) != grants:  # what no path needs any more
                client.set_export_policy(grants, "reject" if grants else "")
            self._grants = grants
            self._announced = dict(desired)
        self._given = given
        self._exports = per_peer
        return diff

    def resync(self) -> PathDiff:
        with self._lock:
            client = self._require()
            if self._restarting:  # nothing is announced until the first set_paths
                return PathDiff()
            try:
                diff = diff_paths(client.local_paths(), self._announced)
                if diff:
                    client.send_paths(diff.announce, diff.withdraw, self.batch_size)
            except grpc.RpcError as e:
                raise SpeakerError(f"gobgpd resync failed: {e.details()}") from e
            if diff:
                log.info(logfmt("bgp_paths_resynced", announce=len(diff.announce),
                                withdraw=len(diff.withdraw), total=len(self._announced)))
            return diff

    def peers(self) -> list[PeerStatus]:
        """Each neighbor's state; one not up says why (bgp.diagnose), counting the
        NOTIFICATIONs since this adapter last saw it Established."""
        out = []
        with self._lock:
            for st, seen in self._require().list_peers():
                if st.state is SessionState.ESTABLISHED:
                    self._seen_up[st.address] = seen
                spec = self._peers.get(st.address)
                if spec is not None and self._config is not None:
                    base = self._seen_up.get(st.address, Notifications())
                    since = Notifications(seen.received - base.received, seen.sent - base.sent)
                    st = replace(st, last_error=session_problem(spec, st.state,
                                                                self._config.asn, since))
                out.append(st)
        return sorted(out, key=lambda s: (s.address.version, int(s.address)))

    def advertised(self, peer: IPAddress | None = None) -> set[Path]:
        """Originated paths (peer None), or the Adj-RIB-Out towards `peer` as sent on the
        wire (next hop rewritten, so reported as None; local pref only to iBGP peers)."""
        with self._lock:
            client = self._require()
            if peer is None:
                rows = client.list_routes("GLOBAL")
                return {exports_mod.unmarked(convert.path_of_route(r, keep_next_hop=True))
                        for r, local in rows if local}
            if peer not in self._peers:
                return set()
            try:
                rows = client.list_routes("ADJ_OUT", str(peer), self._peers[peer].families)
            except grpc.RpcError:
                return set()
            return {convert.path_of_route(r, keep_next_hop=False) for r, _ in rows}

    def received(self, peer: IPAddress | None = None) -> set[Route]:
        with self._lock:
            client = self._require()
            if peer is None:
                return {r for r, local in client.list_routes("GLOBAL") if not local}
            if peer not in self._peers:
                return set()
            try:
                rows = client.list_routes("ADJ_IN", str(peer), self._peers[peer].families)
            except grpc.RpcError:
                return set()
            return {r for r, _ in rows}

    def best_changes(self, timeout: float = 0.0) -> list[BestPathEvent]:
        with self._events_cv:
            if not self._events and timeout > 0:
                self._events_cv.wait(timeout)
            out, self._events = self._events, []
            return out
