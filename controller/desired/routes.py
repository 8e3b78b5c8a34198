"""Routes and tunnel entries to every other node's pods: pure, per routing mode.

Inputs are the snapshot (nodes, their InternalIPs and pod CIDRs), this node's name,
the routes learned over BGP, the routing mode and the tunnel's layout. Outputs are the
exact kernel routes rackroute should own and the tunnel peers (one per remote node)
that the tunnel datapath needs.

- `native`: learned routes (ECMP over equally good next hops); a remote pod CIDR with
  no learned route whose node sits on one of this node's segments goes straight to
  that node.
- `tunnel`: every remote node's pod CIDRs (IPv4 and IPv6) go through the tunnel;
  learned routes to anything else are still installed.
- `hybrid`: per destination: native (learned, else a shared segment) when possible,
  the tunnel otherwise.

The underlay is IPv4: a tunnel peer is a node with an IPv4 InternalIP and an IPv4 pod
CIDR, and it carries the node's IPv6 pod CIDRs too. Whether they can go through the
tunnel is the layout's to say (`TunnelLayout.ipv6`): the eBPF tunnel encapsulates IPv6
by destination; the kernel VXLAN device routes IPv4 via the peer's inner address and
IPv6 via the peer's link-local VTEP address (`vtep_ll6`). An IPv6 pod CIDR that needs a
tunnel that cannot carry it gets no route and is listed in `RoutingPlan.untunneled`, for
the reconciler to report.

Tunnel endpoints need no exchange: a node's VTEP MAC is derived from its InternalIP,
its inner VTEP address is the network address of its first IPv4 pod CIDR, and its IPv6
next hop the link-local address of that MAC.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from bgp.types import IPAddress, IPNetwork, Route
from controller.desired.podcidr import node_pod_cidrs
from controller.kernel.routes import KernelRoute
from controller.store import Snapshot

MODES = ("native", "tunnel", "hybrid")
PROTOCOLS = ("vxlan", "geneve")


def vtep_mac(addr: IPAddress) -> str:
    """Deterministic, locally administered unicast MAC of the node with InternalIP addr."""
    b = addr.packed[-4:]
    return "02:72:" + ":".join(f"{x:02x}" for x in b)


def vtep_ll6(mac: str) -> ipaddress.IPv6Address:
    """The IPv6 link-local next hop of a VTEP (EUI-64 of its MAC): the kernel VXLAN
    device's IPv6 routes go via it and a permanent neighbor entry maps it to the MAC, as
    the IPv4 inner address does for IPv4 (an IPv6 route cannot go via an IPv4 address)."""
    b = bytes(int(x, 16) for x in mac.split(":"))
    eui = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:6]
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui)


@dataclass(frozen=True, order=True)
class TunnelPeer:
    """A remote node as a tunnel endpoint: underlay address, VTEP MAC and inner address,
    and every pod CIDR of the node, IPv4 and IPv6 (the datapath's encapsulation entries)."""

    node: str
    remote: ipaddress.IPv4Address
    mac: str
    inner: ipaddress.IPv4Address
    cidrs: tuple[ipaddress.IPv4Network, ...]
    cidrs6: tuple[ipaddress.IPv6Network, ...] = ()

    def holds(self, cidr: IPNetwork) -> bool:
        """Whether cidr is one of the node's pod CIDRs (either family)."""
        return cidr in self.cidrs or cidr in self.cidrs6


@dataclass(frozen=True)
class TunnelLayout:
    """How the tunnel appears to routing: its device, whether routes go through the
    remote VTEP's inner address (kernel VXLAN: neighbor + FDB) or straight out of the
    device (the eBPF tunnel encapsulates by destination), and whether it carries inner
    IPv6 (the underlay is IPv4 either way)."""

    dev: str
    via_inner: bool
    ipv6: bool = False

    def carries(self, cidr: IPNetwork) -> bool:
        """Whether traffic to cidr can go through this tunnel."""
        return cidr.version == 4 or self.ipv6


@dataclass(frozen=True)
class RoutingPlan:
    routes: frozenset[KernelRoute]
    peers: tuple[TunnelPeer, ...]  # empty: no tunnel needed
    tunneled: frozenset[IPNetwork]  # pod CIDRs routed through the tunnel
    untunneled: frozenset[IPNetwork] = frozenset()  # needed the tunnel, its family can't


def learned_routes(
    received: Iterable[Route], own: Iterable[IPNetwork]
) -> dict[IPNetwork, KernelRoute]:
    """Kernel routes for learned routes (ECMP over equally good next hops); prefixes
    overlapping this node's own pod CIDRs and routes without a usable next hop skipped."""
    own = tuple(own)
    by_prefix: dict[IPNetwork, list[Route]] = {}
    for r in received:
        if r.next_hop is None or r.next_hop.version != r.prefix.version:
            continue
        if any(r.prefix.version == o.version and r.prefix.overlaps(o) for o in own):
            continue
        by_prefix.setdefault(r.prefix, []).append(r)

    def rank(r: Route) -> tuple[int, int]:
        return (-(r.local_pref if r.local_pref is not None else 100), len(r.as_path))

    out: dict[IPNetwork, KernelRoute] = {}
    for prefix, routes in by_prefix.items():
        best = min(rank(r) for r in routes)
        gws = sorted(
            {r.next_hop for r in routes if rank(r) == best and r.next_hop},
            key=lambda a: (a.version, int(a)),
        )
        out[prefix] = KernelRoute(prefix, tuple(gws))
    return out


def desired_routes(received: Iterable[Route], own: set[IPNetwork]) -> set[KernelRoute]:
    """Native mode's learned routes alone (kept for callers of the first version)."""
    return set(learned_routes(received, own).values())


def tunnel_peers(snap: Snapshot, node: str) -> tuple[TunnelPeer, ...]:
    """Every other node with an IPv4 InternalIP and an IPv4 pod CIDR, sorted by name,
    with all its pod CIDRs of both families."""
    out: list[TunnelPeer] = []
    for name in sorted(snap.nodes):
        if name == node:
            continue
        addrs = [a for a in snap.nodes[name].addresses if a.version == 4]
        cidrs = node_pod_cidrs(snap, name)
        v4 = tuple(c for c in cidrs if isinstance(c, ipaddress.IPv4Network))
        v6 = tuple(c for c in cidrs if isinstance(c, ipaddress.IPv6Network))
        if not addrs or not v4:
            continue
        remote = addrs[0]
        assert isinstance(remote, ipaddress.IPv4Address)
        out.append(TunnelPeer(name, remote, vtep_mac(remote), v4[0].network_address, v4, v6))
    return tuple(out)


def _segment_route(
    cidr: IPNetwork, remote: Iterable[IPAddress], segments: Iterable[IPNetwork]
) -> KernelRoute | None:
    for addr in remote:
        if addr.version == cidr.version and any(
            addr.version == s.version and addr in s for s in segments
        ):
            return KernelRoute(cidr, (addr,))
    return None


def plan_routing(
    snap: Snapshot,
    node: str,
    received: Iterable[Route],
    mode: str,
    tunnel: TunnelLayout | None,
    segments: Iterable[IPNetwork] = (),
) -> RoutingPlan:
    """The node's desired routes and tunnel peers for `mode` (see the module docstring).

    `tunnel` is the tunnel's layout (None: no tunnel datapath, so tunnel and hybrid
    degrade to native); `segments` are this node's directly connected underlay subnets.
    """
    if mode not in MODES:
        raise ValueError(f"routing mode must be one of {MODES}, got {mode!r}")
    segs = tuple(segments)
    own_cidrs = node_pod_cidrs(snap, node)
    routes = learned_routes(received, own_cidrs)
    use_tunnel = mode != "native" and tunnel is not None
    peers = tunnel_peers(snap, node) if use_tunnel else ()
    tunneled: set[IPNetwork] = set()
    untunneled: set[IPNetwork] = set()
    for name in sorted(snap.nodes):
        if name == node:
            continue
        for cidr in node_pod_cidrs(snap, name):
            if any(cidr.version == o.version and cidr.overlaps(o) for o in own_cidrs):
                continue
            learned = cidr in routes
            if mode != "tunnel" and learned:
                continue
            direct = _segment_route(cidr, snap.nodes[name].addresses, segs)
            if mode != "tunnel" and direct is not None:
                routes[cidr] = direct
                continue
            peer = next((p for p in peers if p.holds(cidr)), None)
            if peer is None or tunnel is None:
                continue  # native only (or no IPv4 InternalIP / pod CIDR): nothing to add
            if not tunnel.carries(cidr):
                untunneled.add(cidr)
                continue
            routes[cidr] = _tunnel_route(cidr, peer, tunnel)
            tunneled.add(cidr)
    return RoutingPlan(frozenset(routes.values()), peers, frozenset(tunneled),
                       frozenset(untunneled))


def _tunnel_route(cidr: IPNetwork, peer: TunnelPeer, tunnel: TunnelLayout) -> KernelRoute:
    if tunnel.via_inner:
        gw: IPAddress = peer.inner if cidr.version == 4 else vtep_ll6(peer.mac)
        return KernelRoute(cidr, (gw,), tunnel.dev, onlink=True)
    return KernelRoute(cidr, dev=tunnel.dev)
