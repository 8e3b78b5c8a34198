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

The underlay is IPv4 or IPv6 (`underlay_address`: the cluster's `tunnelUnderlay`, `auto`
taking a node's IPv4 InternalIP when it has one and its IPv6 one otherwise). A tunnel
peer is a node with an InternalIP of this node's underlay family and a pod CIDR, and it
carries the node's pod CIDRs of both families. Whether IPv6 ones can go through the
tunnel is the layout's to say (`TunnelLayout.ipv6`): the eBPF tunnel encapsulates IPv6
by destination; the kernel VXLAN device routes IPv4 via the peer's inner address and
IPv6 via the peer's link-local VTEP address (`vtep_ll6`). An IPv6 pod CIDR that needs a
tunnel that cannot carry it gets no route and is listed in `RoutingPlan.untunneled`, for
the reconciler to report; a node the tunnel cannot reach (no InternalIP of the
underlay's family) and two nodes whose VTEP MACs clash are listed in
`RoutingPlan.problems`.

Tunnel endpoints need no exchange: a node's VTEP MAC is derived from its underlay
address, its inner VTEP address is the network address of its first IPv4 pod CIDR (none
on an IPv6-only node), and its IPv6 next hop the link-local address of that MAC.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bgp.types import IPAddress, IPNetwork, Route
from controller.desired.podcidr import node_pod_cidrs
from controller.kernel.routes import KernelRoute
from controller.store import Snapshot

MODES = ("native", "tunnel", "hybrid")
PROTOCOLS = ("vxlan", "geneve")
UNDERLAYS = ("auto", "ipv4", "ipv6")


def underlay_address(addresses: Sequence[IPAddress], underlay: str = "auto") -> IPAddress | None:
    """A node's tunnel endpoint among its InternalIPs: its first of the underlay's family
    (`auto`: IPv4 if it has one, else IPv6), or None."""
    if underlay not in UNDERLAYS:
        raise ValueError(f"tunnel underlay must be one of {UNDERLAYS}, got {underlay!r}")
    v4 = [a for a in addresses if a.version == 4]
    v6 = [a for a in addresses if a.version == 6]
    if underlay == "ipv4" or (underlay == "auto" and v4):
        return v4[0] if v4 else None
    return v6[0] if v6 else None


def vtep_mac(addr: IPAddress) -> str:
    """Deterministic, locally administered unicast MAC of the node whose tunnel endpoint
    is addr: 02:72 and the IPv4 address's four bytes; for an IPv6 address, 06 and five
    bytes of its BLAKE2b digest (its last four bytes repeat too often across subnets;
    `plan_routing` reports a clash)."""
    if addr.version == 4:
        return "02:72:" + ":".join(f"{x:02x}" for x in addr.packed)
    digest = hashlib.blake2b(addr.packed, digest_size=5, person=b"rackroute-vtep").digest()
    return "06:" + ":".join(f"{x:02x}" for x in digest)


def vtep_ll6(mac: str) -> ipaddress.IPv6Address:
    """The IPv6 link-local next hop of a VTEP (EUI-64 of its MAC): the kernel VXLAN
    device's IPv6 routes go via it and a permanent neighbor entry maps it to the MAC, as
    the IPv4 inner address does for IPv4 (an IPv6 route cannot go via an IPv4 address)."""
    b = bytes(int(x, 16) for x in mac.split(":"))
    eui = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:6]
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui)


@dataclass(frozen=True, order=True)
class TunnelPeer:
    """A remote node as a tunnel endpoint: underlay address (IPv4 or IPv6), VTEP MAC and
    inner IPv4 address (None without an IPv4 pod CIDR), and every pod CIDR of the node,
    IPv4 and IPv6 (the datapath's encapsulation entries)."""

    node: str
    remote: IPAddress
    mac: str
    inner: ipaddress.IPv4Address | None
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
    IPv6 (over either underlay family)."""

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
    problems: tuple[str, ...] = ()  # nodes the tunnel cannot reach, VTEP MAC clashes


def learned_routes(
    received: Iterable[Route], own: Iterable[IPNetwork]
) -> dict[IPNetwork, KernelRoute]:
    """Kernel routes for learned routes (ECMP over equally good next hops); prefixes
    overlapping this node's own pod CIDRs and routes without a usable next hop skipped.

    An IPv4 prefix may come with an IPv6 next hop (RFC 8950: IPv4 carried over an IPv6
    session, an IPv6-only underlay); where equally good next hops of both families are
    learned (a dual-stack underlay with both families on both sessions), the IPv4 ones
    are used, so such a node routes as before."""
    own = tuple(own)
    by_prefix: dict[IPNetwork, list[Route]] = {}
    for r in received:
        if r.next_hop is None or r.next_hop.is_unspecified:
            continue
        if r.next_hop.version != r.prefix.version and r.prefix.version != 4:
            continue
        if any(r.prefix.version == o.version and r.prefix.overlaps(o) for o in own):
            continue
        by_prefix.setdefault(r.prefix, []).append(r)

    def rank(r: Route) -> tuple[int, int]:
        return (-(r.local_pref if r.local_pref is not None else 100), len(r.as_path))

    out: dict[IPNetwork, KernelRoute] = {}
    for prefix, routes in by_prefix.items():
        best = min(rank(r) for r in routes)
        hops = {r.next_hop for r in routes if rank(r) == best and r.next_hop}
        same = {h for h in hops if h.version == prefix.version}
        gws = sorted(same or hops, key=lambda a: (a.version, int(a)))
        out[prefix] = KernelRoute(prefix, tuple(gws))
    return out


def desired_routes(received: Iterable[Route], own: set[IPNetwork]) -> set[KernelRoute]:
    """Native mode's learned routes alone (kept for callers of the first version)."""
    return set(learned_routes(received, own).values())


def tunnel_peers(snap: Snapshot, node: str, underlay: str = "auto") -> tuple[TunnelPeer, ...]:
    """Every other node with a pod CIDR whose tunnel endpoint (`underlay_address`, the
    same rule as this node's) is of this node's family, sorted by name, with all its pod
    CIDRs of both families."""
    me = snap.nodes.get(node)
    local = underlay_address(me.addresses if me else (), underlay)
    family = local.version if local is not None else None
    out: list[TunnelPeer] = []
    for name in sorted(snap.nodes):
        if name == node:
            continue
        # the peer's own endpoint by the same rule: a dual-address peer under `auto`
        # tunnels from IPv4, and its IPv6 address would reach no tunnel
        remote = underlay_address(snap.nodes[name].addresses, underlay)
        if remote is not None and remote.version != family:
            remote = None
        cidrs = node_pod_cidrs(snap, name)
        v4 = tuple(c for c in cidrs if isinstance(c, ipaddress.IPv4Network))
        v6 = tuple(c for c in cidrs if isinstance(c, ipaddress.IPv6Network))
        if remote is None or not cidrs:
            continue
        inner = v4[0].network_address if v4 else None
        out.append(TunnelPeer(name, remote, vtep_mac(remote), inner, v4, v6))
    return tuple(out)


def _peer_problems(snap: Snapshot, node: str, peers: Sequence[TunnelPeer],
                   unreachable: Iterable[str], underlay: str) -> tuple[str, ...]:
    """What keeps nodes out of the tunnel: no InternalIP of the underlay's family, and
    VTEP MACs that clash (a derived MAC shared by two endpoints)."""
    me = snap.nodes.get(node)
    local = underlay_address(me.addresses if me else (), underlay)
    family = f"IPv{local.version}" if local is not None else "underlay"
    out: list[str] = []
    for n in sorted(set(unreachable)):
        theirs = underlay_address(snap.nodes[n].addresses, underlay)
        if theirs is None or local is None:
            out.append(f"node {n} has no {family} InternalIP: no tunnel to its pods "
                       f"(tunnel underlay {underlay})")
        else:
            out.append(f"node {n} tunnels over IPv{theirs.version}, this node over {family}: "
                       f"no tunnel to its pods (tunnel underlay {underlay}; set ipv4 or "
                       "ipv6 for the whole cluster)")
    owners: dict[str, list[str]] = {}
    if local is not None:
        owners[vtep_mac(local)] = [node]
    for p in peers:
        owners.setdefault(p.mac, []).append(p.node)
    out.extend(f"nodes {', '.join(sorted(names))} derive the same VTEP MAC {mac} from their "
               "tunnel endpoints: give one another InternalIP" for mac, names in
               sorted(owners.items()) if len(names) > 1)
    return tuple(out)


def _segment_route(
    cidr: IPNetwork, remote: Iterable[IPAddress], segments: Iterable[IPNetwork]
) -> KernelRoute | None:
    """A route to a node's pod CIDR straight through its address on a shared segment: of
    the CIDR's family, or for an IPv4 CIDR an IPv6 one (an IPv6-only segment, RFC 8950's
    kind of next hop)."""
    onlink = [a for a in remote if any(a.version == s.version and a in s for s in segments)]
    for addr in sorted(onlink, key=lambda a: a.version != cidr.version):
        if addr.version == cidr.version or cidr.version == 4:
            return KernelRoute(cidr, (addr,))
    return None


def plan_routing(
    snap: Snapshot,
    node: str,
    received: Iterable[Route],
    mode: str,
    tunnel: TunnelLayout | None,
    segments: Iterable[IPNetwork] = (),
    underlay: str = "auto",
    import_learned: bool = True,
) -> RoutingPlan:
    """The node's desired routes and tunnel peers for `mode` (see the module docstring).

    `tunnel` is the tunnel's layout (None: no tunnel datapath, so tunnel and hybrid
    degrade to native); `segments` are this node's directly connected underlay subnets;
    `underlay` the tunnel's underlay family (`UNDERLAYS`); `import_learned`: the learned
    routes are installed (else they only count as native reachability in hybrid mode,
    the node's own routing carrying them).
    """
    if mode not in MODES:
        raise ValueError(f"routing mode must be one of {MODES}, got {mode!r}")
    segs = tuple(segments)
    own_cidrs = node_pod_cidrs(snap, node)
    learned_map = learned_routes(received, own_cidrs)
    routes = dict(learned_map) if import_learned else {}
    use_tunnel = mode != "native" and tunnel is not None
    peers = tunnel_peers(snap, node, underlay) if use_tunnel else ()
    tunneled: set[IPNetwork] = set()
    untunneled: set[IPNetwork] = set()
    unreachable: set[str] = set()
    for name in sorted(snap.nodes):
        if name == node:
            continue
        for cidr in node_pod_cidrs(snap, name):
            if any(cidr.version == o.version and cidr.overlaps(o) for o in own_cidrs):
                continue
            learned = cidr in learned_map
            if mode != "tunnel" and learned:
                continue
            direct = _segment_route(cidr, snap.nodes[name].addresses, segs)
            if mode != "tunnel" and direct is not None:
                routes[cidr] = direct
                continue
            peer = next((p for p in peers if p.holds(cidr)), None)
            if tunnel is None or not use_tunnel:
                continue  # native only: nothing to add
            if peer is None:
                unreachable.add(name)  # no InternalIP of the underlay's family
                continue
            if not tunnel.carries(cidr):
                untunneled.add(cidr)
                continue
            routes[cidr] = _tunnel_route(cidr, peer, tunnel)
            tunneled.add(cidr)
    problems = _peer_problems(snap, node, peers, unreachable, underlay) if use_tunnel else ()
    return RoutingPlan(frozenset(routes.values()), peers, frozenset(tunneled),
                       frozenset(untunneled), problems)


def _tunnel_route(cidr: IPNetwork, peer: TunnelPeer, tunnel: TunnelLayout) -> KernelRoute:
    if tunnel.via_inner:
        gw: IPAddress | None = peer.inner if cidr.version == 4 else vtep_ll6(peer.mac)
        assert gw is not None  # an IPv4 pod CIDR makes the peer's inner address
        return KernelRoute(cidr, (gw,), tunnel.dev, onlink=True)
    return KernelRoute(cidr, dev=tunnel.dev)
