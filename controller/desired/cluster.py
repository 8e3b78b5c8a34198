"""Whole-cluster planning: the operator's allocations and every node's advertisements.

`plan_allocations` is the operator's pure function (pod CIDRs, BGP router IDs from the
RackrouteConfig pool, LB-IPAM); `apply_allocations` folds its result into a snapshot the
way the status files would; `plan_nodes` is what each agent computes for itself.
`rackroute plan` runs all three in one go.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from controller.desired.advertise import NodePlan, PlanContext, plan_node
from controller.desired.bgpconfig import NodeBGP, resolve_node
from controller.desired.lbipam import LBIPAMResult, plan_lbipam
from controller.desired.podcidr import PodCIDRResult, node_pod_cidrs, plan_pod_cidrs
from controller.desired.routerid import RouterIDResult, plan_router_ids
from controller.model.crds import NodeNetwork
from controller.model.meta import Meta
from controller.store import Snapshot


@dataclass(frozen=True)
class Allocations:
    pod_cidrs: PodCIDRResult
    lbipam: LBIPAMResult
    router_ids: RouterIDResult


def plan_allocations(snap: Snapshot) -> Allocations:
    """Pod CIDRs, router IDs and LoadBalancer IPs, stable against what status already
    records."""
    existing = {n: nn.pod_cidrs for n, nn in snap.node_networks.items()}
    router_ids = {n: nn.bgp_router_id for n, nn in snap.node_networks.items()}
    cfg = snap.network_config
    pool = cfg.bgp_router_id_pool if cfg is not None else None
    where = f"{cfg.meta.ref}: spec.bgpRouterIDPool" if cfg is not None else ""
    with gc_paused():
        return Allocations(
            plan_pod_cidrs(snap.nodes, cfg, existing),
            plan_lbipam(snap.services.values(), snap.pools.values()),
            plan_router_ids(snap.nodes, pool, router_ids, where),
        )


def apply_allocations(snap: Snapshot, alloc: Allocations) -> Snapshot:
    """The snapshot as agents will see it once the operator's status is written."""
    services = dict(snap.services)
    for key, sa in alloc.lbipam.services.items():
        if key in services:
            services[key] = dataclasses.replace(services[key], status_ingress=sa.ips)
    nets = {
        n: NodeNetwork(Meta("NodeNetwork", n), cidrs, alloc.router_ids.allocations.get(n))
        for n, cidrs in alloc.pod_cidrs.allocations.items()
    }
    return dataclasses.replace(snap, services=services, node_networks=nets)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC for one planning pass.

    A pass allocates hundreds of thousands of short-lived, acyclic objects; each full
    collection it triggers walks the whole snapshot too, which made planning superlinear
    in the number of services (R11: 19x from 1k to 10k services, ~10x with the GC paused).
    Reference counting still frees everything; cycles wait until the pass ends.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def plan_nodes(
    snap: Snapshot, nodes: Iterable[str] | None = None
) -> dict[str, tuple[NodeBGP, NodePlan]]:
    """Resolved BGP config and advertisement plan for each node (default: all nodes)."""
    out: dict[str, tuple[NodeBGP, NodePlan]] = {}
    with gc_paused():
        ctx = PlanContext.of(snap)
        for name in sorted(nodes if nodes is not None else snap.nodes):
            node = snap.nodes.get(name)
            if node is None:
                continue
            bgp = resolve_node(snap, node)
            out[name] = (bgp, plan_node(ctx, bgp, node_pod_cidrs(snap, name)))
    return out
