"""Per-neighbor exports on gobgpd (pure): one global RIB, chosen per neighbor by policy.

gobgpd announces one path per prefix to all its neighbors; a global export policy decides
per neighbor. Each announced path carries marker large communities
`MARKER_ASN:<neighbor id>:<group id>`, one per neighbor that gets it, the group naming the
attributes that neighbor gets (communities, large communities, local preference). The
policy has one statement per (neighbor, group), a grant: that neighbor and that marker →
the group's communities and large communities in place of the path's (every marker goes
with them) and its local preference, accepted; then everything else is rejected.

A change of who gets what changes a path's markers, so gobgpd sends the path again and the
policy withdraws it from a neighbor that no longer gets it: gobgpd evaluates export policy
only when it sends a path, so a policy change alone would leave what was sent in place
(and what was refused refused). A path no neighbor gets carries the marker NOBODY, so it
too is sent again when that changes, and when the exports end (the paths unmarked).
Ids are hashes (of the neighbor's address, of the attributes), so they stay the same from
one pass to the next and an unchanged path is not sent again.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace

from bgp.types import IPAddress, IPNetwork, Path

MARKER_ASN = 4294967294  # the global part of every marker (reserved for private use)
MARKER_PREFIX = f"{MARKER_ASN}:"
NOBODY = f"{MARKER_ASN}:0:0"  # ids are never 0


@dataclass(frozen=True, order=True)
class Grant:
    """One statement of the export policy: what `peer` gets for paths of one group."""

    peer_id: int
    group_id: int
    peer: str  # the neighbor's address
    communities: tuple[str, ...]
    large_communities: tuple[str, ...]
    local_pref: int | None

    @property
    def marker(self) -> str:
        return f"{MARKER_ASN}:{self.peer_id}:{self.group_id}"


def _id(text: str) -> int:
    return (zlib.crc32(text.encode()) & 0x7FFFFFFF) or 1


def peer_id(peer: IPAddress) -> int:
    return _id(str(peer))


def group_id(p: Path) -> int:
    return _id(repr((sorted(p.communities), sorted(p.large_communities), p.local_pref)))


def grant(peer: IPAddress, p: Path) -> Grant:
    return Grant(peer_id(peer), group_id(p), str(peer), tuple(sorted(p.communities)),
                 tuple(sorted(p.large_communities)), p.local_pref)


def marked(paths: Mapping[IPNetwork, Path],
           exports: Mapping[IPAddress, Mapping[IPNetwork, Path]]
           ) -> tuple[dict[IPNetwork, Path], frozenset[Grant]]:
    """The paths to announce (each with the markers of the neighbors that get it) and the
    grants the policy needs for them."""
    grants: set[Grant] = set()
    markers: dict[IPNetwork, set[str]] = {}
    for peer, mine in exports.items():
        for prefix, p in mine.items():
            g = grant(peer, p)
            grants.add(g)
            markers.setdefault(prefix, set()).add(g.marker)
    out = {k: replace(p, large_communities=p.large_communities | markers.get(k, {NOBODY}))
           for k, p in paths.items()}
    return out, frozenset(grants)


def unmarked(p: Path) -> Path:
    """A path as it was given, its markers taken off."""
    return replace(p, large_communities=frozenset(
        c for c in p.large_communities if not c.startswith(MARKER_PREFIX)))
