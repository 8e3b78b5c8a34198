"""Learned routes → the node's kernel: native routing across a routed underlay.

Every prefix a speaker learned (other nodes' pod CIDRs, via the ToR) becomes a kernel
route with rackroute's protocol number, through the best next hops (ECMP over the routes
that tie on local preference and AS-path length). The node's own pod CIDRs and routes
without a next hop are skipped. Routes rackroute did not install are never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from bgp.speaker import Speaker
from bgp.types import IPNetwork, Route
from controller.desired.cluster import node_pod_cidrs
from controller.kernel.routes import KernelRoute, RoutePort, sync_routes
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.learned")


def desired_routes(received: Iterable[Route], own: set[IPNetwork]) -> set[KernelRoute]:
    """Pure: kernel routes for learned routes (ECMP over equally good next hops)."""
    by_prefix: dict[IPNetwork, list[Route]] = {}
    for r in received:
        if r.next_hop is None or r.next_hop.version != r.prefix.version:
            continue
        if any(r.prefix.version == o.version and r.prefix.overlaps(o) for o in own):
            continue
        by_prefix.setdefault(r.prefix, []).append(r)
    out: set[KernelRoute] = set()
    for prefix, routes in by_prefix.items():

        def rank(r: Route) -> tuple[int, int]:
            return (-(r.local_pref if r.local_pref is not None else 100), len(r.as_path))

        best = min(rank(r) for r in routes)
        gws = sorted(
            {r.next_hop for r in routes if rank(r) == best and r.next_hop},
            key=lambda a: (a.version, int(a)),
        )
        out.add(KernelRoute(prefix, tuple(gws)))
    return out


class LearnedRoutesReconciler:
    """Installs the speakers' learned routes into the kernel (optional, per agent)."""

    name = "learned-routes"

    def __init__(self, port: RoutePort, speakers: Callable[[], dict[str, Speaker]]) -> None:
        self.port = port
        self.speakers = speakers

    def reconcile(self, ctx: PassContext) -> None:
        received: list[Route] = []
        for sp in self.speakers().values():
            received.extend(sp.received())
        own = set(node_pod_cidrs(ctx.snap, ctx.node))
        _, _, errors = sync_routes(self.port, desired_routes(received, own))
        for e in errors:
            log.warning("event=route_error msg=%r", e)
        if errors:
            ctx.errors[self.name] = "; ".join(errors)

    def close(self) -> None:
        """Leave installed routes in place: a restarting agent must not cut traffic."""
