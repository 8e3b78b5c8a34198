"""In-memory fake speaker for unit tests: same contract as the real adapters, no sockets.

Tests drive the "network" side with `set_state` (a neighbor's session state) and
`inject` / `withdraw_received` (routes a neighbor sends), and the "daemon" side with
`drift_remove` / `drift_replace` (a path lost or changed inside the speaker daemon behind
the adapter's back: `advertised()` shows it, `set_paths` does not see it, `resync`
repairs it). Best paths are chosen by highest local preference, then shortest AS path,
then lowest peer address.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from bgp.speaker import (
    PathDiff,
    PeerDiff,
    SpeakerError,
    diff_paths,
    diff_peers,
    index_exports,
    index_paths,
    index_peers,
)
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
)


def _best_key(r: Route) -> tuple[int, int, int, int]:
    peer = r.peer
    return (
        -(r.local_pref if r.local_pref is not None else 100),
        len(r.as_path),
        peer.version if peer else 0,
        int(peer) if peer else 0,
    )


class FakeSpeaker:
    """A speaker that keeps everything in memory and records every diff it sent."""

    features: frozenset[Feature] = frozenset(Feature) - {Feature.BFD}

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.config: GlobalConfig | None = None
        self._peers: dict[IPAddress, PeerSpec] = {}
        self._exports: dict[IPAddress, dict[IPNetwork, Path]] | None = None
        self._state: dict[IPAddress, SessionState] = {}
        self._since: dict[IPAddress, datetime] = {}
        self._paths: dict[IPNetwork, Path] = {}  # what the adapter believes it announced
        self._daemon: dict[IPNetwork, Path] = {}  # what the "daemon" really announces
        self._rib_in: dict[tuple[IPAddress, IPNetwork], Route] = {}
        self._best: dict[IPNetwork, Route] = {}
        self._events: list[BestPathEvent] = []
        self.sent: list[PathDiff] = []  # every non-empty diff, in order (for tests)

    # -- Speaker -----------------------------------------------------------------
    def start(self, config: GlobalConfig) -> None:
        with self._lock:
            if self.config is not None and self.config != config:
                raise SpeakerError("already started with another global config")
            self.config = config

    def _require_started(self) -> None:
        if self.config is None:
            raise SpeakerError("speaker not started")

    def set_peers(self, peers: Iterable[PeerSpec]) -> PeerDiff:
        desired = index_peers(peers)
        with self._lock:
            self._require_started()
            diff = diff_peers(self._peers, desired)
            for a in diff.removed:
                del self._peers[a]
                self._state.pop(a, None)
                self._since.pop(a, None)
                for key in [k for k in self._rib_in if k[0] == a]:
                    del self._rib_in[key]
                self._recompute(None)
            for a in (*diff.added, *diff.updated):
                self._peers[a] = desired[a]
                self._state.setdefault(a, SessionState.ACTIVE)
            return diff

    def set_paths(self, paths: Iterable[Path],
                  exports: Mapping[IPAddress, Iterable[Path]] | None = None) -> PathDiff:
        desired = index_paths(paths)
        per_peer = index_exports(desired, exports)
        with self._lock:
            self._require_started()
            diff = diff_paths(self._paths, desired)
            self._paths = desired
            self._exports = per_peer
            self._apply(diff)
            return diff

    def resync(self) -> PathDiff:
        with self._lock:
            self._require_started()
            diff = diff_paths(self._daemon, self._paths)
            self._apply(diff)
            return diff

    def peers(self) -> list[PeerStatus]:
        with self._lock:
            out = []
            for a, spec in self._peers.items():
                state = self._state.get(a, SessionState.ACTIVE)
                up = state is SessionState.ESTABLISHED
                out.append(
                    PeerStatus(
                        address=a,
                        state=state,
                        peer_asn=spec.peer_asn,
                        established_at=self._since.get(a) if up else None,
                        hold_time=spec.hold_time if up else None,
                        keepalive=spec.keepalive if up else None,
                        received=self._count_received(a) if up else {},
                        advertised=self._count_advertised(spec) if up else {},
                    )
                )
            return sorted(out, key=lambda s: (s.address.version, int(s.address)))

    def advertised(self, peer: IPAddress | None = None) -> set[Path]:
        with self._lock:
            if peer is None:
                return set(self._daemon.values())
            spec = self._peers.get(peer)
            if spec is None or self._state.get(peer) is not SessionState.ESTABLISHED:
                return set()
            if self._exports is not None:  # a neighbor's own paths, of what is announced
                mine = self._exports.get(peer, {})
                return {p for k, p in mine.items()
                        if k in self._daemon and p.family in spec.families}
            return {p for p in self._daemon.values() if p.family in spec.families}

    def received(self, peer: IPAddress | None = None) -> set[Route]:
        with self._lock:
            return {r for (a, _), r in self._rib_in.items() if peer is None or a == peer}

    def best_changes(self, timeout: float = 0.0) -> list[BestPathEvent]:
        with self._changed:
            if not self._events and timeout > 0:
                self._changed.wait(timeout)
            out, self._events = self._events, []
            return out

    def stop(self) -> None:
        with self._lock:
            self.config = None
            self._peers.clear()
            self._state.clear()
            self._paths.clear()
            self._daemon.clear()
            self._rib_in.clear()
            self._best.clear()

    # -- test hooks: the network side -----------------------------------------------
    def set_state(self, address: IPAddress, state: SessionState) -> None:
        """Move a configured neighbor's session; leaving Established drops its routes."""
        with self._lock:
            if address not in self._peers:
                raise KeyError(f"no such peer {address}")
            self._state[address] = state
            if state is SessionState.ESTABLISHED:
                self._since[address] = datetime.now(UTC)
            else:
                for key in [k for k in self._rib_in if k[0] == address]:
                    del self._rib_in[key]
                self._recompute(None)

    def inject(self, route: Route) -> None:
        """A neighbor (route.peer, which must be Established) sends `route`."""
        with self._lock:
            if route.peer is None or self._state.get(route.peer) is not SessionState.ESTABLISHED:
                raise SpeakerError(f"peer {route.peer} is not established")
            self._rib_in[(route.peer, route.prefix)] = route
            self._recompute(route.prefix)

    def withdraw_received(self, peer: IPAddress, prefix: IPNetwork) -> None:
        """A neighbor withdraws `prefix`."""
        with self._lock:
            self._rib_in.pop((peer, prefix), None)
            self._recompute(prefix)

    # -- test hooks: the daemon side ------------------------------------------------
    def drift_remove(self, prefix: IPNetwork) -> None:
        """The daemon loses the path for `prefix` without the adapter knowing."""
        with self._lock:
            self._daemon.pop(prefix, None)

    def drift_replace(self, path: Path) -> None:
        """The daemon announces `path` (new or changed) without the adapter knowing."""
        with self._lock:
            self._daemon[path.prefix] = path

    # -- internals (lock held) -------------------------------------------------------
    def _apply(self, diff: PathDiff) -> None:
        for p in diff.withdraw:
            self._daemon.pop(p.prefix, None)
        for p in diff.announce:
            self._daemon[p.prefix] = p
        if diff:
            self.sent.append(diff)

    def _recompute(self, prefix: IPNetwork | None) -> None:
        prefixes = {prefix} if prefix is not None else {k[1] for k in self._rib_in}
        if prefix is None:
            prefixes |= set(self._best)
        for pfx in prefixes:
            cands = [r for (_, p), r in self._rib_in.items() if p == pfx]
            best = min(cands, key=_best_key) if cands else None
            if best != self._best.get(pfx):
                if best is None:
                    del self._best[pfx]
                else:
                    self._best[pfx] = best
                self._events.append(BestPathEvent(pfx, best))
        self._changed.notify_all()

    def _count_received(self, a: IPAddress) -> dict[Family, int]:
        counts: dict[Family, int] = {}
        for (peer, _), r in self._rib_in.items():
            if peer == a:
                counts[r.family] = counts.get(r.family, 0) + 1
        return counts

    def _count_advertised(self, spec: PeerSpec) -> dict[Family, int]:
        counts: dict[Family, int] = {}
        for p in self._daemon.values():
            if p.family in spec.families:
                counts[p.family] = counts.get(p.family, 0) + 1
        return counts
