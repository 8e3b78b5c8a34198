"""Pool address arithmetic for LB-IPAM: blocks as integer ranges, conflicts, free-address cursors.

A pool's blocks become inclusive integer ranges per IP version. Two views exist:

- *raw* ranges: every address of every block. Pool overlap (PoolConflict) and "is this
  existing allocation still inside the pool" are judged on these.
- *allocatable* ranges: raw ranges minus the first and last address of each cidr block
  when `allowFirstLastIPs: "No"` (not for /31, /32, /127, /128, not for start/stop
  ranges). New allocations and the IPsTotal count use these.

Nothing here enumerates a pool: free addresses are found by a cursor that skips the
used set, so a /16 (or a /64) costs as much as the addresses actually handed out.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

from bgp.types import IPAddress
from controller.model.crds import LoadBalancerIPPool, PoolBlock

Range = tuple[int, int]  # inclusive (lo, hi)

NO_FIRST_LAST_EXEMPT = {4: (31, 32), 6: (127, 128)}


def block_version(block: PoolBlock) -> int:
    """The IP version of a block."""
    if block.cidr is not None:
        return block.cidr.version
    assert block.start is not None
    return block.start.version


def block_range(block: PoolBlock) -> Range:
    """Every address of a block as an inclusive integer range."""
    if block.cidr is not None:
        return int(block.cidr.network_address), int(block.cidr.broadcast_address)
    assert block.start is not None
    stop = block.stop if block.stop is not None else block.start
    return int(block.start), int(stop)


def allocatable_range(block: PoolBlock, allow_first_last: bool) -> Range | None:
    """The addresses of a block that may be handed out; None when there are none."""
    lo, hi = block_range(block)
    cidr = block.cidr
    if cidr is None or allow_first_last or cidr.prefixlen in NO_FIRST_LAST_EXEMPT[cidr.version]:
        return lo, hi
    return (lo + 1, hi - 1) if hi - lo >= 2 else None


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, disjoint, non-adjacent union of ranges."""
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def to_ip(version: int, value: int) -> IPAddress:
    """An integer back to an address of the given version."""
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _in_ranges(ranges: list[Range], value: int) -> bool:
    """Membership in a sorted disjoint range list, by bisection."""
    i = bisect.bisect_right(ranges, (value, 1 << 129)) - 1
    return i >= 0 and ranges[i][0] <= value <= ranges[i][1]


@dataclass
class FreeCursor:
    """The lowest free address of a range list, moving forward only.

    Valid while the used set only grows, which holds within one plan.
    """

    ranges: list[Range]
    index: int = 0
    pos: int | None = None

    def peek(self, used: Set[int]) -> int | None:
        """The lowest address not in `used`, or None when the ranges are exhausted."""
        while self.index < len(self.ranges):
            lo, hi = self.ranges[self.index]
            pos = lo if self.pos is None else max(self.pos, lo)
            while pos <= hi and pos in used:
                pos += 1
            if pos <= hi:
                self.pos = pos
                return pos
            self.index, self.pos = self.index + 1, None
        return None


@dataclass
class PoolSpace:
    """One pool with its ranges per IP version and the state of this plan."""

    pool: LoadBalancerIPPool
    raw: dict[int, list[Range]]
    allocatable: dict[int, list[Range]]
    conflict: str | None = None  # message when this pool lost an overlap
    cursors: dict[int, FreeCursor] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.pool.meta.name

    @property
    def accepts_new(self) -> bool:
        """Whether new allocations may come from this pool."""
        return self.conflict is None and not self.pool.disabled

    def holds(self, ip: IPAddress) -> bool:
        """The address is inside one of the pool's blocks (first/last included)."""
        return _in_ranges(self.raw.get(ip.version, []), int(ip))

    def can_allocate(self, ip: IPAddress) -> bool:
        """The address is one the pool may hand out."""
        return _in_ranges(self.allocatable.get(ip.version, []), int(ip))

    def lowest_free(self, version: int, used: Set[int]) -> int | None:
        """The lowest allocatable address of `version` not in `used`."""
        cursor = self.cursors.get(version)
        if cursor is None:
            cursor = self.cursors[version] = FreeCursor(self.allocatable.get(version, []))
        return cursor.peek(used)

    def total(self) -> int:
        """How many addresses the pool may hand out."""
        return sum(hi - lo + 1 for ranges in self.allocatable.values() for lo, hi in ranges)


def pool_space(pool: LoadBalancerIPPool) -> PoolSpace:
    """Build a pool's ranges."""
    raw: dict[int, list[Range]] = {}
    alloc: dict[int, list[Range]] = {}
    for block in pool.blocks:
        version = block_version(block)
        raw.setdefault(version, []).append(block_range(block))
        usable = allocatable_range(block, pool.allow_first_last)
        if usable is not None:
            alloc.setdefault(version, []).append(usable)
    return PoolSpace(
        pool,
        {v: merge(r) for v, r in raw.items()},
        {v: merge(r) for v, r in alloc.items()},
    )


def pool_age(pool: LoadBalancerIPPool) -> tuple[str, str]:
    """Sort key: older pools first, then by name."""
    return pool.meta.creation_timestamp, pool.meta.name


@dataclass
class OwnerIndex:
    """Which accepted (non-conflicting) pool holds an address; accepted pools never overlap."""

    los: dict[int, list[int]] = field(default_factory=dict)
    entries: dict[int, list[tuple[int, int, PoolSpace]]] = field(default_factory=dict)

    def find(self, version: int, lo: int, hi: int) -> tuple[Range, PoolSpace] | None:
        """The lowest accepted range that intersects [lo, hi].

        Entries are disjoint and sorted, so only the last one starting at or below `lo`
        and the one after it can intersect first.
        """
        entries = self.entries.get(version, [])
        i = max(bisect.bisect_right(self.los.get(version, []), lo) - 1, 0)
        for elo, ehi, space in entries[i : i + 2]:
            if elo <= hi and lo <= ehi:
                return (elo, ehi), space
        return None

    def owner(self, ip: IPAddress) -> PoolSpace | None:
        """The accepted pool whose blocks hold `ip`."""
        found = self.find(ip.version, int(ip), int(ip))
        return found[1] if found else None

    def add(self, space: PoolSpace) -> None:
        """Accept a pool whose ranges overlap no accepted pool."""
        for version, ranges in space.raw.items():
            los = self.los.setdefault(version, [])
            entries = self.entries.setdefault(version, [])
            for lo, hi in ranges:
                i = bisect.bisect_right(los, lo)
                los.insert(i, lo)
                entries.insert(i, (lo, hi, space))


def _overlap(space: PoolSpace, index: OwnerIndex) -> str | None:
    """A conflict message when one of the pool's blocks overlaps an accepted pool."""
    for block in space.pool.blocks:
        lo, hi = block_range(block)
        found = index.find(block_version(block), lo, hi)
        if found is not None:
            (elo, ehi), winner = found
            first = to_ip(block_version(block), max(lo, elo))
            return (
                f"pool {space.name}: block {block} overlaps pool {winner.name} "
                f"(from {first}); the older pool {winner.name} wins and this pool "
                "allocates nothing"
            )
    return None


def build_spaces(pools: Iterable[LoadBalancerIPPool]) -> tuple[list[PoolSpace], OwnerIndex]:
    """Every pool's space, oldest first, with conflicts decided, and the owner index."""
    index = OwnerIndex()
    spaces: list[PoolSpace] = []
    for pool in sorted(pools, key=pool_age):
        space = pool_space(pool)
        space.conflict = _overlap(space, index)
        if space.conflict is None:
            index.add(space)
        spaces.append(space)
    return spaces, index
