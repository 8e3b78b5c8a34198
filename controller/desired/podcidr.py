"""Pod CIDR IPAM: which CIDRs each node's pods are addressed from (pure).

Two modes (API.md): `kubernetes` reads Node.spec.podCIDRs; `cluster-pool` carves
per-node CIDRs out of the cluster pools. Allocations are stable: a node keeps the CIDR
it has (from its NodeNetwork) while that CIDR is still valid, whatever the input order;
a node that goes away frees its CIDR; exhaustion is a condition on the node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from bgp.types import IPNetwork
from controller.model.crds import ClusterNetworkConfig
from controller.model.k8s import Node
from controller.model.meta import Condition, Meta
from controller.store import Snapshot

COND = "rackroute.io/PodCIDRAllocated"


@dataclass(frozen=True)
class PodCIDRResult:
    """Per node: its pod CIDRs (possibly empty) and a condition saying why."""

    allocations: Mapping[str, tuple[IPNetwork, ...]]
    conditions: Mapping[str, Condition]


DEFAULT_CONFIG = ClusterNetworkConfig(Meta("RackrouteConfig", "default"))


def node_pod_cidrs(snap: Snapshot, node: str) -> tuple[IPNetwork, ...]:
    """A node's pod CIDRs as agents read them: Node.spec.podCIDRs in `kubernetes` mode,
    its NodeNetwork (written by the operator) in `cluster-pool` mode."""
    cfg = snap.network_config
    if cfg is not None and cfg.ipam_mode == "kubernetes":
        n = snap.nodes.get(node)
        return n.pod_cidrs if n else ()
    nn = snap.node_networks.get(node)
    return nn.pod_cidrs if nn else ()


def cluster_pod_cidrs(snap: Snapshot) -> tuple[IPNetwork, ...]:
    """Every pod address of the cluster: each node's pod CIDRs and the cluster pools
    (nodes not seen yet carve theirs from these), overlaps merged, IPv4 then IPv6."""
    nets: list[IPNetwork] = []
    for name in snap.nodes:
        nets.extend(node_pod_cidrs(snap, name))
    for name in snap.node_networks:
        nets.extend(node_pod_cidrs(snap, name))
    cfg = snap.network_config
    if cfg is not None:
        nets.extend(cfg.cluster_pool_v4)
        nets.extend(cfg.cluster_pool_v6)
    return collapsed(nets)


def collapsed(nets: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Nets with overlaps and neighbours merged, IPv4 then IPv6, in address order (a set
    of intervals holds no two that overlap)."""
    nets = list(nets)
    v4 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))
    return (*v4, *v6)


def _subnets(pool: IPNetwork, mask: int) -> Iterator[IPNetwork]:
    step = 1 << (pool.max_prefixlen - mask)
    base = int(pool.network_address)
    for i in range(1 << (mask - pool.prefixlen)):
        yield ipaddress.ip_network((base + i * step, mask))


class _Family:
    """Allocation state of one address family's cluster pools."""

    def __init__(self, pools: tuple[IPNetwork, ...], mask: int) -> None:
        self.pools, self.mask = pools, mask
        self.used: set[IPNetwork] = set()
        self._cursor = (s for p in pools for s in _subnets(p, mask))

    def valid(self, cidr: IPNetwork) -> bool:
        return (
            cidr.prefixlen == self.mask
            and cidr not in self.used
            and any(cidr.version == p.version and cidr.subnet_of(p) for p in self.pools)  # type: ignore[arg-type]
        )

    def next_free(self) -> IPNetwork | None:
        for s in self._cursor:
            if s not in self.used:
                return s
        return None


def plan_pod_cidrs(
    nodes: Mapping[str, Node],
    config: ClusterNetworkConfig | None,
    existing: Mapping[str, tuple[IPNetwork, ...]],
) -> PodCIDRResult:
    """Pod CIDRs per node; `existing` is what NodeNetwork objects record today."""
    cfg = config or DEFAULT_CONFIG
    allocs: dict[str, tuple[IPNetwork, ...]] = {}
    conds: dict[str, Condition] = {}
    names = sorted(nodes)
    if cfg.ipam_mode == "kubernetes":
        for n in names:
            cidrs = nodes[n].pod_cidrs
            allocs[n] = cidrs
            conds[n] = (
                Condition(COND, "True", "FromNodeSpec", ", ".join(map(str, cidrs)))
                if cidrs
                else Condition(COND, "False", "NoPodCIDR", f"Node {n}: spec.podCIDRs is empty")
            )
        return PodCIDRResult(allocs, conds)

    fams = [
        f
        for f in (
            _Family(cfg.cluster_pool_v4, cfg.cluster_pool_v4_mask),
            _Family(cfg.cluster_pool_v6, cfg.cluster_pool_v6_mask),
        )
        if f.pools
    ]
    if not fams:
        msg = "RackrouteConfig default: spec.ipam.clusterPoolIPv4PodCIDRList is empty"
        for n in names:
            allocs[n] = ()
            conds[n] = Condition(COND, "False", "NoClusterPool", msg)
        return PodCIDRResult(allocs, conds)

    chosen: dict[str, list[IPNetwork | None]] = {n: [None] * len(fams) for n in names}
    # 1. keep what is recorded and still valid (sorted order settles duplicates)
    for n in names:
        for cidr in existing.get(n, ()):
            for i, fam in enumerate(fams):
                if chosen[n][i] is None and fam.valid(cidr):
                    chosen[n][i] = cidr
                    fam.used.add(cidr)
    # 2. give the lowest free CIDR to whoever still lacks one
    for n in names:
        missing: list[str] = []
        for i, fam in enumerate(fams):
            if chosen[n][i] is None:
                got = fam.next_free()
                if got is None:
                    pools = ", ".join(map(str, fam.pools))
                    missing.append(f"no free /{fam.mask} left in {pools}")
                else:
                    chosen[n][i] = got
                    fam.used.add(got)
        allocs[n] = tuple(c for c in chosen[n] if c is not None)
        conds[n] = (
            Condition(COND, "False", "PoolExhausted", f"Node {n}: {'; '.join(missing)}")
            if missing
            else Condition(COND, "True", "Allocated", ", ".join(map(str, allocs[n])))
        )
    return PodCIDRResult(allocs, conds)
