"""Routes to every other node's pods: native, tunnel or hybrid, one reconciler.

Each pass reads the routing mode and tunnel protocol (the cluster's RackrouteConfig,
unless the agent pins them), the routes the speakers learned and this node's connected
subnets, plans with `controller.desired.routes.plan_routing`, then applies: the tunnel
device and its per-node entries first (routes point into it), then the routes (own
protocol number only). A tunnel that is no longer used is torn down after the routes
have left it. Nothing rackroute does not own is touched; `close` leaves kernel state in
place so that a restarting agent never cuts traffic.

The tunnel's underlay is IPv4 or IPv6: the node's InternalIP of the family the cluster's
`tunnelUnderlay` names (`auto`: IPv4 when the node has one). IPv6 pod CIDRs go through
the tunnel like IPv4 ones over either: the eBPF tunnel encapsulates by destination, the
kernel VXLAN device routes them via the peer VTEP's link-local address. A tunnel driver
whose layout carries no IPv6 has a remote IPv6 pod CIDR that would need it left without
a route, and the pass reports it as a routing error naming the CIDRs, so the gap is
visible instead of a silent black hole; so is a node the tunnel cannot reach (no
InternalIP of the underlay's family) and a VTEP MAC two nodes derive alike.

Routes learned over BGP are installed only where the agent is told to (`import_learned`,
the agent's `--import-routes`), and by default only those inside the cluster's pod
addresses (`import_scope` "pods": outside networks, a full table or other nodes'
LoadBalancer /32s stay out of the node's kernel; "all" takes everything); otherwise the
node relies on its own routing (a default route to the ToR, which has every pod CIDR),
and learned routes only tell hybrid mode which destinations need no tunnel.
`RoutingWhenNeeded` starts the reconciler the first pass the node needs one: learned
routes to import, a pinned mode, or a RackrouteConfig asking for a tunnel or direct
routes, so a cluster's `routingMode: tunnel` is honoured without any agent flag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bgp.speaker import Speaker
from bgp.types import IPAddress, IPNetwork, Route
from controller.cni.netsetup import is_pod_route
from controller.desired.podcidr import cluster_pod_cidrs
from controller.desired.routes import (
    MODES,
    PROTOCOLS,
    UNDERLAYS,
    RoutingPlan,
    TunnelLayout,
    desired_routes,
    plan_routing,
    underlay_address,
)
from controller.kernel.links import LinkPort
from controller.kernel.routes import RoutePort, sync_routes
from controller.kernel.tunnels import KernelVxlan, TunnelDriver
from controller.reconcile.loop import PassContext

__all__ = ["RoutingReconciler", "default_tunnels", "desired_routes", "untunneled_errors"]

log = logging.getLogger("rackroute.routing")
IMPORT_SCOPES = ("pods", "all")


def within(prefix: IPNetwork, scope: tuple[IPNetwork, ...]) -> bool:
    """Is prefix inside one of scope's networks?"""
    return any(prefix.version == c.version and prefix.subnet_of(c)  # type: ignore[arg-type]
               for c in scope)

TunnelFactory = Callable[[str], TunnelDriver]


@dataclass(frozen=True)
class TunnelState:
    """The tunnel in use: its protocol and device, this node's endpoint, MTU, peers and
    counters (controller.kernel.tunnels.STATS)."""

    protocol: str
    dev: str
    endpoint: IPAddress
    mtu: int | None
    peers: int
    stats: dict[str, int]


def default_tunnels(
    links: LinkPort, datapath: str = "auto", netns: str | None = None
) -> TunnelFactory:
    """protocol → driver: VXLAN through the kernel device (or eBPF with datapath="ebpf"),
    Geneve always in eBPF (this kernel has no Geneve device)."""
    if datapath not in ("auto", "kernel", "ebpf"):
        raise ValueError(f"tunnel datapath must be auto, kernel or ebpf, got {datapath!r}")

    def make(protocol: str) -> TunnelDriver:
        if protocol == "vxlan" and datapath != "ebpf":
            return KernelVxlan(links)
        if protocol == "geneve" and datapath == "kernel":
            raise ValueError("RackrouteConfig spec.tunnelProtocol (or --tunnel-protocol) geneve: "
                             "this kernel has no Geneve device, and the agent's "
                             "--tunnel-datapath is kernel; use auto or ebpf (Geneve in eBPF)")
        from bpf.tunnel import EbpfTunnel

        return EbpfTunnel(links, protocol, netns=netns)

    return make


def untunneled_errors(plan: RoutingPlan, layout: TunnelLayout | None) -> list[str]:
    """The error naming the pod CIDRs that needed the tunnel but cannot use it."""
    if not plan.untunneled or layout is None:
        return []
    cidrs = ", ".join(map(str, sorted(plan.untunneled, key=lambda c: (c.version, c))))
    return [f"tunnel {layout.dev}: carries IPv4 only, no route to the IPv6 pod CIDRs "
            f"{cidrs}"]


class RoutingReconciler:
    """Keeps the node's routes (and tunnel) to every other node's pod CIDRs."""

    name = "routing"

    def __init__(
        self,
        routes: RoutePort,
        links: LinkPort | None = None,
        speakers: Callable[[], dict[str, Speaker]] | None = None,
        tunnels: TunnelFactory | None = None,
        mode: str | None = None,
        protocol: str | None = None,
        underlay: str | None = None,
        failed_peers: Callable[[], frozenset[IPAddress]] | None = None,
        import_learned: bool = True,
        import_scope: str = "all",
    ) -> None:
        """`mode` / `protocol` / `underlay` pin the routing mode, tunnel protocol and
        tunnel underlay (else the cluster config decides); `tunnels` builds a driver per
        protocol (default: `default_tunnels(links)`); `failed_peers`: the peers BFD found
        unreachable, whose routes are not used (their BGP session may take a hold time to
        end: the node stops sending through a dead ToR within BFD's detection time);
        `import_learned`: install the routes learned over BGP; `import_scope`: "pods"
        uses only the learned routes inside the cluster's pod addresses, "all" every one."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"routing mode must be one of {MODES}, got {mode!r}")
        if protocol is not None and protocol not in PROTOCOLS:
            raise ValueError(f"tunnel protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if underlay is not None and underlay not in UNDERLAYS:
            raise ValueError(f"tunnel underlay must be one of {UNDERLAYS}, got {underlay!r}")
        self.routes, self.links = routes, links
        self.speakers = speakers or dict
        if tunnels is None and links is not None:
            tunnels = default_tunnels(links)
        self.tunnels = tunnels
        self.mode, self.protocol, self.underlay = mode, protocol, underlay
        self.failed_peers = failed_peers or frozenset
        self.import_learned = import_learned
        if import_scope not in IMPORT_SCOPES:
            raise ValueError(f"import scope must be one of {IMPORT_SCOPES}, got {import_scope!r}")
        self.import_scope = import_scope
        self._out_of_scope = 0
        self._ignored: frozenset[IPAddress] = frozenset()
        self._drivers: dict[str, TunnelDriver] = {}
        self.active: str | None = None  # protocol of the tunnel in use
        self.endpoint: IPAddress | None = None  # our underlay address, tunnelling
        self.plan: RoutingPlan | None = None

    def _in_scope(self, received: list[Route], scope: tuple[IPNetwork, ...]) -> list[Route]:
        """The learned routes inside the cluster's pod addresses; how many were left out is
        logged when it changes."""
        kept = [r for r in received if within(r.prefix, scope)]
        out = len({r.prefix for r in received}) - len({r.prefix for r in kept})
        if out != self._out_of_scope:
            log.info("event=learned_routes_out_of_scope prefixes=%d scope=%s", out,
                     ",".join(map(str, scope)) or "-")
            self._out_of_scope = out
        return kept

    def _driver(self, protocol: str) -> TunnelDriver:
        if protocol not in self._drivers:
            assert self.tunnels is not None
            self._drivers[protocol] = self.tunnels(protocol)
        return self._drivers[protocol]

    def settings(self, ctx: PassContext) -> tuple[str, str]:
        cfg = ctx.snap.network_config
        mode = self.mode or (cfg.routing_mode if cfg else "native")
        protocol = self.protocol or (cfg.tunnel_protocol if cfg else "vxlan")
        return mode, protocol

    def tunnel_state(self) -> TunnelState | None:
        """The tunnel in use (None: none), for metrics: read when scraped."""
        if self.active is None or self.endpoint is None:
            return None
        d = self._drivers[self.active]
        return TunnelState(self.active, d.layout.dev, self.endpoint, d.mtu(),
                           len(self.plan.peers) if self.plan else 0, d.stats())

    def pod_mtu(self) -> int | None:
        """The MTU pods of this node must use while a tunnel is active (None: underlay's)."""
        return self._drivers[self.active].mtu() if self.active else None

    def reconcile(self, ctx: PassContext) -> None:
        mode, protocol = self.settings(ctx)
        received: list[Route] = []
        for sp in self.speakers().values():
            received.extend(sp.received())
        failed = self.failed_peers()
        if failed != self._ignored:
            for peer in sorted(failed - self._ignored, key=str):
                log.warning("event=bfd_peer_routes_ignored peer=%s reason='BFD: the peer "
                            "stopped answering'", peer)
            for peer in sorted(self._ignored - failed, key=str):
                log.info("event=bfd_peer_routes_used_again peer=%s", peer)
            self._ignored = failed
        if failed:
            received = [r for r in received if r.peer not in failed]
        if self.import_scope == "pods":
            received = self._in_scope(received, cluster_pod_cidrs(ctx.snap))
        errors: list[str] = []
        node = ctx.snap.nodes.get(ctx.node)
        cfg = ctx.snap.network_config
        underlay = self.underlay or (cfg.tunnel_underlay if cfg else "auto")
        local = underlay_address(node.addresses if node else (), underlay)
        want: str | None = None
        if mode != "native":
            if self.tunnels is None:
                errors.append(f"routing mode {mode}: no tunnel datapath configured")
            elif local is None:
                family = {"ipv4": "IPv4 ", "ipv6": "IPv6 "}.get(underlay, "")
                errors.append(f"routing mode {mode}: node {ctx.node} has no {family}"
                              f"InternalIP to be its tunnel endpoint (tunnel underlay "
                              f"{underlay})")
            else:
                want = protocol
        driver = self._driver(want) if want else None
        direct = cfg is not None and cfg.auto_direct_node_routes
        segments = self.links.connected() if self.links is not None and direct else set()
        plan = plan_routing(ctx.snap, ctx.node, received, mode,
                            driver.layout if driver else None, segments, underlay,
                            self.import_learned)
        if driver is not None and local is not None:
            errors.extend(driver.sync(local, plan.peers))
        errors.extend(untunneled_errors(plan, driver.layout if driver else None))
        errors.extend(plan.problems)
        # the CNI plugin's routes to this node's pods carry the same protocol number
        _, _, route_errors = sync_routes(self.routes, set(plan.routes), is_pod_route)
        errors.extend(route_errors)
        if self.active is not None and self.active != want:
            try:
                self._drivers[self.active].teardown(local)
                log.info("event=tunnel_down protocol=%s", self.active)
            except Exception as e:
                errors.append(f"tunnel {self.active}: teardown: {e}")
        if want is not None and self.active != want:
            log.info("event=tunnel_up protocol=%s dev=%s", want, self._driver(want).layout.dev)
        self.active = want
        self.endpoint = local if want is not None else None
        self.plan = plan
        for msg in errors:
            log.warning("event=routing_error msg=%r", msg)
        if errors:
            ctx.errors[self.name] = "; ".join(errors)

    def close(self) -> None:
        """Drop handles; routes, links and tunnel programs stay in place."""
        for d in self._drivers.values():
            d.close()


def needs_routing(ctx: PassContext) -> bool:
    """Does the cluster's RackrouteConfig ask this node for routes of its own: a tunnel
    (tunnel or hybrid mode) or direct routes to nodes on a shared segment?"""
    cfg = ctx.snap.network_config
    return cfg is not None and (cfg.routing_mode != "native" or cfg.auto_direct_node_routes)


class RoutingWhenNeeded:
    """The RoutingReconciler, made by `make` on the first pass that needs it (`always`:
    the agent imports learned routes or pins a routing mode; else `needs_routing`), and
    kept from then on (it removes what it made once no longer asked for). Until then the
    node's routes are left alone."""

    name = "routing"

    def __init__(self, make: Callable[[], RoutingReconciler], always: bool) -> None:
        self.make, self.always = make, always
        self.inner: RoutingReconciler | None = None

    def reconcile(self, ctx: PassContext) -> None:
        if self.inner is None:
            if not (self.always or needs_routing(ctx)):
                return
            self.inner = self.make()
            log.info("event=routing_started reason=%s",
                     "agent flags" if self.always else "RackrouteConfig")
        self.inner.reconcile(ctx)

    @property
    def endpoint(self) -> IPAddress | None:
        return self.inner.endpoint if self.inner else None

    def tunnel_state(self) -> TunnelState | None:
        return self.inner.tunnel_state() if self.inner else None

    def pod_mtu(self) -> int | None:
        return self.inner.pod_mtu() if self.inner else None

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
