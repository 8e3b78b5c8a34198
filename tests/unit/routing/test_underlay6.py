"""The tunnel over an IPv6 underlay, the pure parts: which InternalIP is a node's tunnel
endpoint (`tunnelUnderlay`), peers of the local endpoint's family with IPv6 remotes and
VTEP MACs, IPv6-only-pod peers without an inner address, the kernel VXLAN layout's routes,
the problems reported (a node without an InternalIP of the family, clashing MACs), the
kernel VXLAN driver against the fake link port (local IPv6, MTU 1500 - 70), the
reconciler choosing its endpoint, and the manifest field."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from controller.desired import routes
from controller.desired.routes import (
    TunnelLayout,
    TunnelPeer,
    plan_routing,
    tunnel_peers,
    underlay_address,
    vtep_ll6,
    vtep_mac,
)
from controller.kernel.links import FakeLinks, Underlay, Vtep
from controller.kernel.routes import FakeRoutes, KernelRoute
from controller.kernel.tunnels import KernelVxlan
from controller.model.crds import ClusterNetworkConfig
from controller.model.parse import parse_object
from controller.reconcile.loop import PassContext
from controller.reconcile.routing import RoutingReconciler
from tests.unit.routing.cluster import cluster

A = ipaddress.ip_address
N = ipaddress.ip_network
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
N4 = ipaddress.IPv4Network
N6 = ipaddress.IPv6Network
VX = TunnelLayout("rr.vxlan", via_inner=True, ipv6=True)
BPF = TunnelLayout("rr.tun", via_inner=False, ipv6=True)

# IPv6-only nodes; n3 has IPv6 pods only (no inner IPv4 address); n4 has no IPv6 InternalIP
SNAP6 = {
    "n1": ("fd00:0:1::2", ["10.244.1.0/24", "fd00:1::/64"]),
    "n2": ("fd00:0:2::2", ["10.244.2.0/24", "fd00:2::/64"]),
    "n3": ("fd00:0:3::2", ["fd00:3::/64"]),
}
N4_V4ONLY = ("10.0.4.2", ["10.244.4.0/24"])
# dual-stack nodes: both families of InternalIP, the IPv6 one listed first
DUALADDR = {
    "n1": (("fd00:0:1::2", "10.0.1.2"), ["10.244.1.0/24", "fd00:1::/64"]),
    "n2": (("fd00:0:2::2", "10.0.2.2"), ["10.244.2.0/24", "fd00:2::/64"]),
}


def mac(addr: str) -> str:
    return vtep_mac(A(addr))


# ---------------------------------------------------------------- underlay_address


def test_underlay_address_per_setting() -> None:
    dual = (A("fd00::1"), A("10.0.0.1"), A("10.0.0.2"), A("fd00::2"))
    assert underlay_address(dual) == A("10.0.0.1")  # auto: IPv4 first, wherever listed
    assert underlay_address(dual, "auto") == A("10.0.0.1")
    assert underlay_address(dual, "ipv4") == A("10.0.0.1")
    assert underlay_address(dual, "ipv6") == A("fd00::1")


def test_underlay_address_of_a_node_with_one_family() -> None:
    only6, only4 = (A("fd00::1"),), (A("10.0.0.1"),)
    assert underlay_address(only6, "auto") == A("fd00::1")
    assert underlay_address(only6, "ipv6") == A("fd00::1")
    assert underlay_address(only6, "ipv4") is None
    assert underlay_address(only4, "auto") == A("10.0.0.1")
    assert underlay_address(only4, "ipv6") is None
    assert underlay_address((), "auto") is None


@pytest.mark.parametrize("bad", ["IPv6", "v6", "", "dual"])
def test_underlay_address_refuses_other_settings(bad: str) -> None:
    with pytest.raises(ValueError, match="tunnel underlay"):
        underlay_address((A("10.0.0.1"),), bad)


# ---------------------------------------------------------------- VTEP MACs


def test_ipv6_vtep_macs_are_local_unicast_and_tell_subnets_apart() -> None:
    a, b = mac("fd00:0:1::2"), mac("fd00:0:2::2")  # the same last four bytes
    assert a == mac("fd00:0:1::2") and a != b
    for m in (a, b):
        octets = m.split(":")
        assert m.startswith("06:") and len(octets) == 6
        assert all(len(o) == 2 and int(o, 16) < 256 for o in octets)
        assert int(octets[0], 16) & 0x02 and not int(octets[0], 16) & 0x01
        assert vtep_ll6(m).is_link_local
    assert vtep_ll6(a) != vtep_ll6(b)
    assert mac("10.0.2.2") == "02:72:0a:00:02:02"  # IPv4 ones as before


# ---------------------------------------------------------------- tunnel_peers


def test_tunnel_peers_over_ipv6() -> None:
    snap = cluster({**SNAP6, "n4": N4_V4ONLY}, "tunnel")
    assert tunnel_peers(snap, "n1") == (
        TunnelPeer("n2", V6("fd00:0:2::2"), mac("fd00:0:2::2"), V4("10.244.2.0"),
                   (N4("10.244.2.0/24"),), (N6("fd00:2::/64"),)),
        # IPv6 pods only: no inner IPv4 address
        TunnelPeer("n3", V6("fd00:0:3::2"), mac("fd00:0:3::2"), None, (),
                   (N6("fd00:3::/64"),)),
    )  # n4: no IPv6 InternalIP, no peer
    assert tunnel_peers(snap, "n1", "ipv6") == tunnel_peers(snap, "n1")
    assert tunnel_peers(snap, "n1", "ipv4") == ()  # n1 has no IPv4 endpoint
    # from the IPv4-only node, the IPv4 underlay: none of the others can be reached
    assert tunnel_peers(snap, "n4") == ()


def test_tunnel_peers_of_dual_address_nodes_follow_the_setting() -> None:
    snap = cluster(DUALADDR, "tunnel")
    assert [p.remote for p in tunnel_peers(snap, "n1")] == [V4("10.0.2.2")]
    assert [p.remote for p in tunnel_peers(snap, "n1", "ipv4")] == [V4("10.0.2.2")]
    (p,) = tunnel_peers(snap, "n1", "ipv6")
    assert (p.remote, p.mac, p.inner) == (V6("fd00:0:2::2"), mac("fd00:0:2::2"),
                                          V4("10.244.2.0"))


# ---------------------------------------------------------------- plan_routing


def test_kernel_vxlan_routes_over_an_ipv6_underlay() -> None:
    got = plan_routing(cluster(SNAP6, "tunnel"), "n1", [], "tunnel", VX, underlay="ipv6")
    assert got.routes == {
        KernelRoute(N("10.244.2.0/24"), (A("10.244.2.0"),), "rr.vxlan", onlink=True),
        KernelRoute(N("fd00:2::/64"), (vtep_ll6(mac("fd00:0:2::2")),), "rr.vxlan",
                    onlink=True),
        KernelRoute(N("fd00:3::/64"), (vtep_ll6(mac("fd00:0:3::2")),), "rr.vxlan",
                    onlink=True),
    }
    assert got.tunneled == {N("10.244.2.0/24"), N("fd00:2::/64"), N("fd00:3::/64")}
    assert got.untunneled == set() and got.problems == ()
    assert [p.node for p in got.peers] == ["n2", "n3"]
    # auto picks the same endpoint on these nodes
    assert plan_routing(cluster(SNAP6, "tunnel"), "n1", [], "tunnel", VX) == got


def test_ebpf_routes_over_an_ipv6_underlay() -> None:
    got = plan_routing(cluster(SNAP6, "tunnel", "geneve"), "n1", [], "tunnel", BPF, [],
                       "ipv6")
    assert got.routes == {KernelRoute(N(c), dev="rr.tun")
                          for c in ("10.244.2.0/24", "fd00:2::/64", "fd00:3::/64")}
    assert {p.remote for p in got.peers} == {V6("fd00:0:2::2"), V6("fd00:0:3::2")}


def test_a_node_without_an_internal_ip_of_the_family_is_a_problem() -> None:
    snap = cluster({**SNAP6, "n4": N4_V4ONLY}, "tunnel")
    got = plan_routing(snap, "n1", [], "tunnel", VX, underlay="ipv6")
    assert len(got.problems) == 1, got.problems
    assert "node n4 " in got.problems[0] and "IPv6 InternalIP" in got.problems[0]
    assert not any(r.dst == N("10.244.4.0/24") for r in got.routes)
    assert N("10.244.4.0/24") not in got.tunneled | got.untunneled
    # the other nodes are routed all the same
    assert {N("10.244.2.0/24"), N("fd00:2::/64"), N("fd00:3::/64")} <= got.tunneled
    # natively nothing is missing: no problem
    assert plan_routing(snap, "n1", [], "native", VX, underlay="ipv6").problems == ()


def test_an_ipv4_underlay_leaves_ipv6_nodes_out_and_says_so() -> None:
    snap = cluster({**DUALADDR, "n3": SNAP6["n3"]}, "tunnel")
    got = plan_routing(snap, "n1", [], "tunnel", VX, underlay="ipv4")
    assert [p.node for p in got.peers] == ["n2"]
    assert len(got.problems) == 1 and "node n3 " in got.problems[0], got.problems
    assert "IPv4" in got.problems[0]


def test_auto_in_a_mixed_cluster_never_tunnels_to_the_other_familys_endpoint() -> None:
    """A dual-address node tunnels from IPv4 under auto: an IPv6-only node must not send
    to its IPv6 address (no tunnel there), and says why instead."""
    snap = cluster({"n1": (("10.0.1.2", "fd00:0:1::2"), ["10.244.1.0/24"]),
                    "n3": SNAP6["n3"]}, "tunnel")
    assert tunnel_peers(snap, "n3") == ()
    got = plan_routing(snap, "n3", [], "tunnel", VX)
    assert got.routes == set() and got.tunneled == set()
    (msg,) = got.problems
    assert msg.startswith("node n1 tunnels over IPv4, this node over IPv6")
    (msg,) = plan_routing(snap, "n1", [], "tunnel", VX).problems
    assert msg.startswith("node n3 tunnels over IPv6, this node over IPv4")
    # the whole cluster on ipv4: n3 has no endpoint of that family at all
    (msg,) = plan_routing(snap, "n1", [], "tunnel", VX, underlay="ipv4").problems
    assert msg.startswith("node n3 has no IPv4 InternalIP")
    # the whole cluster on ipv6: both tunnel
    assert [p.node for p in tunnel_peers(snap, "n3", "ipv6")] == ["n1"]


def test_clashing_vtep_macs_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = routes.vtep_mac
    clash = {A("fd00:0:2::2"), A("fd00:0:3::2")}

    def fake_mac(addr: Any) -> str:
        return "06:00:00:00:00:01" if addr in clash else real(addr)

    monkeypatch.setattr(routes, "vtep_mac", fake_mac)
    got = plan_routing(cluster(SNAP6, "tunnel"), "n1", [], "tunnel", VX, underlay="ipv6")
    assert len(got.problems) == 1, got.problems
    msg = got.problems[0]
    assert "n2" in msg and "n3" in msg and "06:00:00:00:00:01" in msg and "n1" not in msg
    # with this node's own MAC
    clash.add(A("fd00:0:1::2"))
    clash.discard(A("fd00:0:3::2"))
    (msg,) = plan_routing(cluster(SNAP6, "tunnel"), "n1", [], "tunnel", VX,
                          underlay="ipv6").problems
    assert "n1" in msg and "n2" in msg and "n3" not in msg


def test_distinct_macs_no_problem_over_ipv4_either() -> None:
    snap = cluster({"n1": ("10.0.1.2", ["10.244.1.0/24"]),
                    "n2": ("10.1.1.2", ["10.244.2.0/24"])}, "tunnel")
    assert plan_routing(snap, "n1", [], "tunnel", VX).problems == ()


# ---------------------------------------------------------------- KernelVxlan on FakeLinks

LOCAL6 = V6("fd00:0:1::2")


def peers6() -> tuple[TunnelPeer, ...]:
    return tunnel_peers(cluster(SNAP6, "tunnel"), "n1", "ipv6")


def test_kernel_vxlan_with_an_ipv6_local_address() -> None:
    links = FakeLinks({LOCAL6: Underlay("u0", 2, 1500)})
    d = KernelVxlan(links)
    assert d.sync(LOCAL6, peers6()) == []
    link = links.vxlan("rr.vxlan")
    assert link is not None
    assert (link.local, link.vni, link.port, link.mtu) == (LOCAL6, 1, 8472, 1430)
    assert link.mac == mac("fd00:0:1::2") and d.mtu() == 1430
    m2, m3 = mac("fd00:0:2::2"), mac("fd00:0:3::2")
    assert links.vteps("rr.vxlan") == {
        Vtep(m2, V6("fd00:0:2::2"), V4("10.244.2.0"), vtep_ll6(m2)),
        Vtep(m3, V6("fd00:0:3::2"), None, vtep_ll6(m3)),  # IPv6 pods only
    }
    assert d.sync(LOCAL6, peers6()) == [] and links.recreated == 0  # steady
    assert d.sync(LOCAL6, peers6()[1:]) == []
    assert links.vteps("rr.vxlan") == {Vtep(m3, V6("fd00:0:3::2"), None, vtep_ll6(m3))}
    d.teardown(LOCAL6)
    assert links.links() == set() and d.mtu() is None


def test_kernel_vxlan_switching_underlay_family_recreates_the_device() -> None:
    local4 = V4("10.0.1.2")
    links = FakeLinks({local4: Underlay("u0", 2, 1500), LOCAL6: Underlay("u0", 2, 1500)})
    d = KernelVxlan(links)
    assert d.sync(local4, []) == [] and d.mtu() == 1450
    assert d.sync(LOCAL6, peers6()) == [] and d.mtu() == 1430
    link = links.vxlan("rr.vxlan")
    assert link is not None and link.local == LOCAL6 and link.mac.startswith("06:")
    assert links.recreated == 1


def test_ipv6_mtu_floor_over_an_ipv6_underlay() -> None:
    ok = FakeLinks({LOCAL6: Underlay("u0", 2, 1350)})
    assert KernelVxlan(ok).sync(LOCAL6, peers6()) == []  # 1280: just enough
    low = FakeLinks({LOCAL6: Underlay("u0", 2, 1349)})
    errs = KernelVxlan(low).sync(LOCAL6, peers6())
    assert len(errs) == 1 and "1279" in errs[0] and "1350" in errs[0], errs


def test_kernel_vxlan_without_the_ipv6_address_reports() -> None:
    errs = KernelVxlan(FakeLinks()).sync(LOCAL6, peers6())
    assert len(errs) == 1 and "fd00:0:1::2" in errs[0]


# ---------------------------------------------------------------- the reconciler


def reconcile(r: RoutingReconciler, underlay: str | None, nodes: Any = None) -> PassContext:
    ctx = PassContext(cluster(nodes or SNAP6, "tunnel", "vxlan", underlay), "n1")
    r.reconcile(ctx)
    return ctx


@pytest.mark.parametrize("underlay", [None, "auto", "ipv6"])
def test_reconciler_tunnels_from_the_ipv6_internal_ip(underlay: str | None) -> None:
    rts, links = FakeRoutes(), FakeLinks({LOCAL6: Underlay("u0", 2, 1500)})
    r = RoutingReconciler(rts, links, lambda: {}, mode="tunnel", protocol="vxlan")
    assert reconcile(r, underlay).errors == {}
    assert r.endpoint == LOCAL6 and r.pod_mtu() == 1430
    assert links.links() == {"rr.vxlan"}
    assert KernelRoute(N("fd00:3::/64"), (vtep_ll6(mac("fd00:0:3::2")),), "rr.vxlan",
                       onlink=True) in rts.list()


def test_reconciler_refuses_an_ipv4_underlay_on_ipv6_nodes() -> None:
    rts, links = FakeRoutes(), FakeLinks({LOCAL6: Underlay("u0", 2, 1500)})
    r = RoutingReconciler(rts, links, lambda: {}, mode="tunnel", protocol="vxlan")
    msg = reconcile(r, "ipv4").errors["routing"]
    assert "node n1 " in msg and "IPv4" in msg, msg
    assert links.links() == set() and rts.list() == set()
    assert r.endpoint is None and r.pod_mtu() is None
    assert reconcile(r, "ipv6").errors == {} and links.links() == {"rr.vxlan"}
    # and back: the device goes again
    assert "IPv4" in reconcile(r, "ipv4").errors["routing"]
    assert links.links() == set() and rts.list() == set()


def test_reconciler_on_dual_address_nodes_follows_the_setting() -> None:
    local4 = V4("10.0.1.2")
    links = FakeLinks({local4: Underlay("u0", 2, 1500), LOCAL6: Underlay("u0", 2, 1500)})
    r = RoutingReconciler(FakeRoutes(), links, lambda: {}, mode="tunnel", protocol="vxlan")
    assert reconcile(r, None, DUALADDR).errors == {}
    assert r.endpoint == local4 and r.pod_mtu() == 1450
    assert reconcile(r, "ipv6", DUALADDR).errors == {}
    assert r.endpoint == LOCAL6 and r.pod_mtu() == 1430
    link = links.vxlan("rr.vxlan")
    assert link is not None and link.local == LOCAL6
    assert {v.remote for v in links.vteps("rr.vxlan")} == {V6("fd00:0:2::2")}


def test_the_agents_pinned_underlay_overrides_the_cluster_config() -> None:
    local4 = V4("10.0.1.2")
    links = FakeLinks({local4: Underlay("u0", 2, 1500), LOCAL6: Underlay("u0", 2, 1500)})
    r = RoutingReconciler(FakeRoutes(), links, lambda: {}, mode="tunnel", protocol="vxlan",
                          underlay="ipv6")
    assert reconcile(r, "ipv4", DUALADDR).errors == {}  # the cluster says ipv4
    assert r.endpoint == LOCAL6 and r.pod_mtu() == 1430
    with pytest.raises(ValueError, match="tunnel underlay"):
        RoutingReconciler(FakeRoutes(), links, underlay="dual")


# ---------------------------------------------------------------- the manifest


def config(spec: Any) -> dict[str, Any]:
    return {"apiVersion": "rackroute.io/v1alpha1", "kind": "RackrouteConfig",
            "metadata": {"name": "default"}, "spec": spec}


@pytest.mark.parametrize("value", ["auto", "ipv4", "ipv6"])
def test_manifest_tunnel_underlay(value: str) -> None:
    r = parse_object(config({"routingMode": "tunnel", "tunnelUnderlay": value}))
    assert r.errors == [] and isinstance(r.obj, ClusterNetworkConfig)
    assert r.obj.tunnel_underlay == value


def test_manifest_tunnel_underlay_defaults_to_auto() -> None:
    for spec in ({}, {"tunnelUnderlay": None}, None):
        r = parse_object(config(spec))
        assert r.errors == [] and isinstance(r.obj, ClusterNetworkConfig)
        assert r.obj.tunnel_underlay == "auto"


@pytest.mark.parametrize(("value", "error"), [
    ("IPv6", "must be one of auto, ipv4, ipv6, got 'IPv6'"),
    ("dual", "must be one of auto, ipv4, ipv6, got 'dual'"),
    (6, "must be a string, got integer 6"),
])
def test_manifest_bad_tunnel_underlay_names_the_field(value: Any, error: str) -> None:
    r = parse_object(config({"tunnelUnderlay": value}), "f.yaml#1")
    assert r.obj is None
    assert r.errors == [f"RackrouteConfig default: spec.tunnelUnderlay: {error}"]
