"""Adj-RIB-In bookkeeping with best-path selection, for adapters whose speaker only
streams updates (ExaBGP). Best: highest local preference, shortest AS path, lowest peer.
"""

from __future__ import annotations

from bgp.types import BestPathEvent, IPAddress, IPNetwork, Route


def best_key(r: Route) -> tuple[int, int, int, int]:
    peer = r.peer
    return (-(r.local_pref if r.local_pref is not None else 100), len(r.as_path),
            peer.version if peer else 0, int(peer) if peer else 0)


class RibIn:
    """Routes per (peer, prefix); every change returns the best-path events it caused."""

    def __init__(self) -> None:
        self.routes: dict[tuple[IPAddress, IPNetwork], Route] = {}
        self.best: dict[IPNetwork, Route] = {}

    def update(self, r: Route) -> list[BestPathEvent]:
        assert r.peer is not None
        self.routes[(r.peer, r.prefix)] = r
        return self._recompute({r.prefix})

    def withdraw(self, peer: IPAddress, prefix: IPNetwork) -> list[BestPathEvent]:
        self.routes.pop((peer, prefix), None)
        return self._recompute({prefix})

    def drop_peer(self, peer: IPAddress) -> list[BestPathEvent]:
        gone = {p for (a, p) in self.routes if a == peer}
        for p in gone:
            del self.routes[(peer, p)]
        return self._recompute(gone)

    def _recompute(self, prefixes: set[IPNetwork]) -> list[BestPathEvent]:
        events = []
        for pfx in sorted(prefixes, key=lambda p: (p.version, int(p.network_address),
                                                   p.prefixlen)):
            cands = [r for (_, p), r in self.routes.items() if p == pfx]
            best = min(cands, key=best_key) if cands else None
            if best != self.best.get(pfx):
                if best is None:
                    del self.best[pfx]
                else:
                    self.best[pfx] = best
                events.append(BestPathEvent(pfx, best))
        return events
