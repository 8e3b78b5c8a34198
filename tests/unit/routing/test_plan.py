"""plan_routing: the exact routes and tunnel peers per mode, and hybrid switch-over."""

from __future__ import annotations

import ipaddress

import pytest

from bgp.types import Route
from controller.desired.routes import (
    TunnelLayout,
    TunnelPeer,
    desired_routes,
    plan_routing,
    tunnel_peers,
    vtep_mac,
)
from controller.kernel.routes import KernelRoute
from tests.unit.routing.cluster import TOR, cluster

N = ipaddress.ip_network
A = ipaddress.ip_address
V4 = ipaddress.IPv4Address
N4 = ipaddress.IPv4Network
VX = TunnelLayout("rr.vxlan", via_inner=True)
N6 = ipaddress.IPv6Network
BPF = TunnelLayout("rr.tun", via_inner=False, ipv6=True)

SNAP = {
    "n1": ("10.0.1.2", ["10.244.1.0/24", "fd00:1::/64"]),
    "n2": ("10.0.2.2", ["10.244.2.0/24"]),
    "n3": ("10.0.1.3", ["10.244.3.0/24", "10.245.3.0/24"]),
}


def learned(prefix: str, nh: str) -> Route:
    return Route(N(prefix), A(nh), TOR, (65000, 65002))


def test_vtep_mac_is_deterministic_and_local_unicast() -> None:
    assert vtep_mac(A("10.0.2.2")) == "02:72:0a:00:02:02"
    first = int(vtep_mac(A("192.168.1.1")).split(":")[0], 16)
    assert first & 0x02 and not first & 0x01


def test_tunnel_peers_skip_self_and_nodes_without_v4() -> None:
    snap = cluster({**SNAP, "n4": ("fd00::4", ["10.244.4.0/24"]), "n5": ("10.0.5.2", [])})
    assert tunnel_peers(snap, "n1") == (
        TunnelPeer("n2", V4("10.0.2.2"), "02:72:0a:00:02:02", V4("10.244.2.0"),
                   (N4("10.244.2.0/24"),)),
        TunnelPeer("n3", V4("10.0.1.3"), "02:72:0a:00:01:03", V4("10.244.3.0"),
                   (N4("10.244.3.0/24"), N4("10.245.3.0/24"))),
    )


def test_native_learned_only_without_segments() -> None:
    snap = cluster(SNAP, "native")
    got = plan_routing(snap, "n1", [learned("10.244.2.0/24", "10.0.1.1"),
                                    learned("10.244.1.0/24", "10.0.1.1")], "native", VX)
    assert got.routes == {KernelRoute(N("10.244.2.0/24"), (A("10.0.1.1"),))}
    assert got.peers == () and got.tunneled == set()


def test_native_direct_route_on_shared_segment() -> None:
    snap = cluster(SNAP, "native")
    got = plan_routing(snap, "n1", [], "native", None, segments=[N("10.0.1.0/24")])
    assert got.routes == {
        KernelRoute(N("10.244.3.0/24"), (A("10.0.1.3"),)),
        KernelRoute(N("10.245.3.0/24"), (A("10.0.1.3"),)),
    }


def test_direct_routes_on_an_ipv6_only_segment() -> None:
    """Nodes with only IPv6 underlay addresses: an IPv4 pod CIDR goes straight through
    the node's IPv6 address; where the node also has an IPv4 one there, that one."""
    snap = cluster({"n1": ("fd00:10::11", ["10.244.1.0/24"]),
                    "n2": ("fd00:10::12", ["10.244.2.0/24", "fd00:244:2::/64"]),
                    "n3": (("10.0.1.3", "fd00:10::13"), ["10.244.3.0/24"])}, "native")
    got = plan_routing(snap, "n1", [], "native", None,
                       segments=[N("fd00:10::/64"), N("10.0.1.0/24")])
    assert got.routes == {
        KernelRoute(N("10.244.2.0/24"), (A("fd00:10::12"),)),
        KernelRoute(N("fd00:244:2::/64"), (A("fd00:10::12"),)),
        KernelRoute(N("10.244.3.0/24"), (A("10.0.1.3"),)),
    }


def test_tunnel_kernel_vxlan_routes_through_inner_vtep() -> None:
    snap = cluster(SNAP, "tunnel")
    got = plan_routing(snap, "n1", [learned("10.244.2.0/24", "10.0.1.1"),
                                    learned("192.0.2.0/24", "10.0.1.1")], "tunnel", VX,
                       segments=[N("10.0.1.0/24")])
    assert got.routes == {
        KernelRoute(N("10.244.2.0/24"), (A("10.244.2.0"),), "rr.vxlan", onlink=True),
        KernelRoute(N("10.244.3.0/24"), (A("10.244.3.0"),), "rr.vxlan", onlink=True),
        KernelRoute(N("10.245.3.0/24"), (A("10.244.3.0"),), "rr.vxlan", onlink=True),
        KernelRoute(N("192.0.2.0/24"), (A("10.0.1.1"),)),  # not a pod CIDR: learned
    }
    assert [p.node for p in got.peers] == ["n2", "n3"]
    assert got.tunneled == {N("10.244.2.0/24"), N("10.244.3.0/24"), N("10.245.3.0/24")}


def test_tunnel_ebpf_routes_out_of_the_device() -> None:
    snap = cluster(SNAP, "tunnel", "geneve")
    got = plan_routing(snap, "n2", [], "tunnel", BPF)
    assert got.routes == {
        KernelRoute(N("10.244.1.0/24"), dev="rr.tun"),
        KernelRoute(N("10.244.3.0/24"), dev="rr.tun"),
        KernelRoute(N("10.245.3.0/24"), dev="rr.tun"),
        KernelRoute(N("fd00:1::/64"), dev="rr.tun"),  # IPv6 inside the IPv4 underlay
    }
    assert N("fd00:1::/64") in got.tunneled and got.untunneled == set()


def test_hybrid_per_destination() -> None:
    snap = cluster(SNAP, "hybrid")
    got = plan_routing(snap, "n1", [learned("10.244.2.0/24", "10.0.1.1")], "hybrid", VX)
    assert got.routes == {
        KernelRoute(N("10.244.2.0/24"), (A("10.0.1.1"),)),
        KernelRoute(N("10.244.3.0/24"), (A("10.244.3.0"),), "rr.vxlan", onlink=True),
        KernelRoute(N("10.245.3.0/24"), (A("10.244.3.0"),), "rr.vxlan", onlink=True),
    }
    # every remote node stays a tunnel peer, so switching never waits for FDB entries
    assert [p.node for p in got.peers] == ["n2", "n3"]


def test_hybrid_segment_beats_tunnel() -> None:
    snap = cluster(SNAP, "hybrid")
    got = plan_routing(snap, "n1", [], "hybrid", BPF, segments=[N("10.0.1.0/24")])
    assert KernelRoute(N("10.244.3.0/24"), (A("10.0.1.3"),)) in got.routes
    assert KernelRoute(N("10.244.2.0/24"), dev="rr.tun") in got.routes


def test_hybrid_switches_to_tunnel_and_back() -> None:
    snap = cluster(SNAP, "hybrid")
    native = KernelRoute(N("10.244.2.0/24"), (A("10.0.1.1"),))
    tunnel = KernelRoute(N("10.244.2.0/24"), (A("10.244.2.0"),), "rr.vxlan", onlink=True)
    with_route = plan_routing(snap, "n1", [learned("10.244.2.0/24", "10.0.1.1")], "hybrid", VX)
    without = plan_routing(snap, "n1", [], "hybrid", VX)
    again = plan_routing(snap, "n1", [learned("10.244.2.0/24", "10.0.1.1")], "hybrid", VX)
    assert native in with_route.routes and tunnel not in with_route.routes
    assert tunnel in without.routes and native not in without.routes
    assert again == with_route
    assert with_route.peers == without.peers


def test_tunnel_or_hybrid_without_a_tunnel_degrades_to_native() -> None:
    snap = cluster(SNAP, "hybrid")
    got = plan_routing(snap, "n1", [learned("10.244.2.0/24", "10.0.1.1")], "hybrid", None)
    assert got.routes == {KernelRoute(N("10.244.2.0/24"), (A("10.0.1.1"),))}
    assert got.peers == ()


def test_unknown_mode_refused() -> None:
    with pytest.raises(ValueError, match="routing mode"):
        plan_routing(cluster(SNAP), "n1", [], "bridged", None)


def test_desired_routes_compat() -> None:
    got = desired_routes([learned("10.244.2.0/24", "10.0.1.1")], {N("10.244.1.0/24")})
    assert got == {KernelRoute(N("10.244.2.0/24"), (A("10.0.1.1"),))}


DUAL = {
    "n1": ("10.0.1.2", ["10.244.1.0/24", "fd00:1::/64"]),
    "n2": ("10.0.2.2", ["10.244.2.0/24", "fd00:2::/64", "fd00:22::/64"]),
    "n3": ("10.0.1.3", ["10.244.3.0/24"]),
    "n4": ("10.0.4.2", ["fd00:4::/64"]),  # no IPv4 pod CIDR: a peer without inner address
}


def test_tunnel_peers_carry_the_ipv6_pod_cidrs() -> None:
    peers = tunnel_peers(cluster(DUAL, "tunnel", "geneve"), "n1")
    assert peers == (
        TunnelPeer("n2", V4("10.0.2.2"), "02:72:0a:00:02:02", V4("10.244.2.0"),
                   (N4("10.244.2.0/24"),), (N6("fd00:2::/64"), N6("fd00:22::/64"))),
        TunnelPeer("n3", V4("10.0.1.3"), "02:72:0a:00:01:03", V4("10.244.3.0"),
                   (N4("10.244.3.0/24"),), ()),
        TunnelPeer("n4", V4("10.0.4.2"), "02:72:0a:00:04:02", None, (), (N6("fd00:4::/64"),)),
    )
    assert peers[0].holds(N("fd00:22::/64")) and not peers[1].holds(N("fd00:22::/64"))


def test_tunnel_ebpf_routes_both_families_of_every_peer() -> None:
    got = plan_routing(cluster(DUAL, "tunnel", "geneve"), "n1", [], "tunnel", BPF)
    assert got.routes == {
        KernelRoute(N("10.244.2.0/24"), dev="rr.tun"),
        KernelRoute(N("fd00:2::/64"), dev="rr.tun"),
        KernelRoute(N("fd00:22::/64"), dev="rr.tun"),
        KernelRoute(N("10.244.3.0/24"), dev="rr.tun"),
        KernelRoute(N("fd00:4::/64"), dev="rr.tun"),
    }
    assert got.tunneled == {N("10.244.2.0/24"), N("fd00:2::/64"), N("fd00:22::/64"),
                            N("10.244.3.0/24"), N("fd00:4::/64")}
    assert got.untunneled == set() and got.problems == ()


def test_tunnel_kernel_vxlan_leaves_ipv6_out_and_names_it() -> None:
    got = plan_routing(cluster(DUAL, "tunnel"), "n1", [], "tunnel", VX)
    assert got.routes == {
        KernelRoute(N("10.244.2.0/24"), (A("10.244.2.0"),), "rr.vxlan", onlink=True),
        KernelRoute(N("10.244.3.0/24"), (A("10.244.3.0"),), "rr.vxlan", onlink=True),
    }
    assert got.untunneled == {N("fd00:2::/64"), N("fd00:22::/64"), N("fd00:4::/64")}
    assert got.peers[0].cidrs6 == (N6("fd00:2::/64"), N6("fd00:22::/64"))


def test_hybrid_ipv6_per_destination_through_the_ebpf_tunnel() -> None:
    learned6 = [learned("fd00:2::/64", "fd00:ffff::1"), learned("10.244.2.0/24", "10.0.1.1")]
    got = plan_routing(cluster(DUAL, "hybrid", "geneve"), "n1", learned6, "hybrid", BPF)
    assert got.routes == {
        KernelRoute(N("10.244.2.0/24"), (A("10.0.1.1"),)),
        KernelRoute(N("fd00:2::/64"), (A("fd00:ffff::1"),)),
        KernelRoute(N("fd00:22::/64"), dev="rr.tun"),  # not learned: the tunnel
        KernelRoute(N("10.244.3.0/24"), dev="rr.tun"),
        KernelRoute(N("fd00:4::/64"), dev="rr.tun"),
    }
    assert got.tunneled == {N("fd00:22::/64"), N("10.244.3.0/24"), N("fd00:4::/64")}


def test_hybrid_kernel_vxlan_reports_only_ipv6_it_would_need() -> None:
    learned6 = [learned("fd00:2::/64", "fd00:ffff::1")]
    got = plan_routing(cluster(DUAL, "hybrid"), "n1", learned6, "hybrid", VX)
    assert KernelRoute(N("fd00:2::/64"), (A("fd00:ffff::1"),)) in got.routes
    # fd00:2::/64 is reached natively
    assert got.untunneled == {N("fd00:22::/64"), N("fd00:4::/64")}


def test_native_never_reports_untunneled() -> None:
    got = plan_routing(cluster(DUAL, "native"), "n1", [], "native", VX)
    assert got.untunneled == set() and got.peers == ()
