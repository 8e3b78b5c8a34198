"""BGP router IDs from a cluster pool: one IPv4 address per node (pure).

With RackrouteConfig `spec.bgpRouterIDPool` set (Cilium's `routerIDAllocation` mode
`ip-pool`), the operator gives each node one address of the pool and records it as its
NodeNetwork's `spec.bgpRouterID`; the agents use it where a node's BGPNodeConfigOverride
names no routerID (controller/desired/bgpconfig.py). The rules:

- stable: a node keeps the router ID it has (read back from its NodeNetwork, or the
  manifests-mode status) while that address is still allocatable in the pool, whatever
  other nodes come and go and whatever the input order; of two nodes recorded with the
  same address, the first by name keeps it;
- a new node (or one whose address fell outside an edited pool) takes the lowest free
  address; the pool's network address is never given out, nor its broadcast address
  when the prefix is shorter than /31;
- a node that goes away frees its address (it has no entry any more);
- a full pool leaves the extra nodes without one, with a `PoolExhausted` condition that
  names the node and the pool, as pod-CIDR exhaustion does.

Without a pool nothing is allocated or released: the router IDs recorded stay as they are
(the agents do not use them then), so a pool removed by mistake, or a RackrouteConfig that
cannot be read, costs no node its router ID.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from controller.model.meta import Condition

COND = "rackroute.io/BGPRouterIDAllocated"


@dataclass(frozen=True)
class RouterIDResult:
    """Per node: its router ID (None: none yet) and, while a pool is set, a condition."""

    allocations: Mapping[str, IPv4Address | None]
    conditions: Mapping[str, Condition]


def allocatable(pool: IPv4Network, addr: IPv4Address) -> bool:
    """Whether the pool may give `addr` out (inside it, and neither of the reserved ends)."""
    if addr not in pool or addr == pool.network_address:
        return False
    return pool.prefixlen >= 31 or addr != pool.broadcast_address


def _candidates(pool: IPv4Network) -> Iterator[IPv4Address]:
    """The pool's allocatable addresses, lowest first (lazily: a pool may be a /8)."""
    last = int(pool.broadcast_address) - (1 if pool.prefixlen < 31 else 0)
    for n in range(int(pool.network_address) + 1, last + 1):
        yield IPv4Address(n)


def plan_router_ids(
    nodes: Iterable[str],
    pool: IPv4Network | None,
    existing: Mapping[str, IPv4Address | None],
    where: str = "RackrouteConfig default: spec.bgpRouterIDPool",
) -> RouterIDResult:
    """A router ID per node; `existing` is what the NodeNetworks record today, `where`
    names the pool's field in messages."""
    names = sorted(set(nodes))
    if pool is None:
        return RouterIDResult({n: existing.get(n) for n in names}, {})
    chosen: dict[str, IPv4Address | None] = {}
    used: set[IPv4Address] = set()
    # 1. keep what is recorded and still allocatable (name order settles duplicates)
    for n in names:
        rid = existing.get(n)
        if rid is not None and rid not in used and allocatable(pool, rid):
            chosen[n] = rid
            used.add(rid)
    # 2. the lowest free address to whoever still lacks one
    free = (a for a in _candidates(pool) if a not in used)
    conds: dict[str, Condition] = {}
    for n in names:
        if n not in chosen:
            chosen[n] = next(free, None)
        rid = chosen[n]
        conds[n] = (
            Condition(COND, "True", "Allocated", f"{rid} from {pool}")
            if rid is not None
            else Condition(
                COND,
                "False",
                "PoolExhausted",
                f"Node {n}: no free router ID left in {pool} ({where})",
            )
        )
    return RouterIDResult(chosen, conds)
