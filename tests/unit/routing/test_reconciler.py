"""RoutingReconciler against fakes: modes from the cluster config or pinned, hybrid
switch-over both ways as learned routes come and go, tunnel teardown, errors."""

from __future__ import annotations

import ipaddress

import pytest

from bgp.fake import FakeSpeaker
from controller.desired.routes import TunnelLayout, vtep_ll6, vtep_mac
from controller.kernel.links import FakeLinks, Underlay
from controller.kernel.routes import FakeRoutes, KernelRoute
from controller.kernel.tunnels import FakeTunnel, KernelVxlan, TunnelDriver
from controller.reconcile.loop import PassContext
from controller.reconcile.routing import RoutingReconciler, RoutingWhenNeeded
from controller.store import Snapshot
from tests.unit.routing.cluster import cluster, forget, learn, learned_speaker

N = ipaddress.ip_network
A = ipaddress.ip_address
NODES = {"n1": ("10.0.1.2", ["10.244.1.0/24"]), "n2": ("10.0.2.2", ["10.244.2.0/24"])}
NATIVE = KernelRoute(N("10.244.2.0/24"), (A("10.0.1.1"),))
VIA_VX = KernelRoute(N("10.244.2.0/24"), (A("10.244.2.0"),), "rr.vxlan", onlink=True)


def run(r: RoutingReconciler, snap: Snapshot) -> PassContext:
    ctx = PassContext(snap, "n1")
    r.reconcile(ctx)
    return ctx


def setup() -> tuple[FakeRoutes, FakeLinks, RoutingReconciler, FakeSpeaker]:
    routes = FakeRoutes()
    links = FakeLinks({ipaddress.IPv4Address("10.0.1.2"): Underlay("u0", 2, 1500)})
    sp = learned_speaker()
    r = RoutingReconciler(routes, links, lambda: {"tor": sp})
    return routes, links, r, sp


def test_mode_from_cluster_config_native_then_tunnel() -> None:
    routes, links, r, sp = setup()
    learn(sp, "10.244.2.0/24", "10.0.1.1")
    assert run(r, cluster(NODES, "native")).errors == {}
    assert routes.list() == {NATIVE} and links.links() == set()
    assert r.pod_mtu() is None and r.endpoint is None
    assert run(r, cluster(NODES, "tunnel")).errors == {}
    assert routes.list() == {VIA_VX} and links.links() == {"rr.vxlan"}
    assert r.pod_mtu() == 1450
    assert str(r.endpoint) == "10.0.1.2"  # the node's underlay address (NodeNetworks show it)
    assert run(r, cluster(NODES, "native")).errors == {}
    assert routes.list() == {NATIVE} and links.links() == set()
    assert r.endpoint is None


def test_hybrid_switch_over_both_ways() -> None:
    routes, links, r, sp = setup()
    snap = cluster(NODES, "hybrid")
    learn(sp, "10.244.2.0/24", "10.0.1.1")
    run(r, snap)
    assert routes.list() == {NATIVE}
    assert len(links.vteps("rr.vxlan")) == 1  # the tunnel stands by
    forget(sp, "10.244.2.0/24")
    run(r, snap)
    assert routes.list() == {VIA_VX}
    learn(sp, "10.244.2.0/24", "10.0.1.1")
    run(r, snap)
    assert routes.list() == {NATIVE}
    assert r.plan is not None and r.plan.tunneled == frozenset()


def test_pinned_mode_and_protocol_switch_tears_old_tunnel_down() -> None:
    made: dict[str, FakeTunnel] = {}

    def factory(protocol: str) -> TunnelDriver:
        made[protocol] = FakeTunnel()
        return made[protocol]

    routes = FakeRoutes()
    r = RoutingReconciler(routes, FakeLinks(), tunnels=factory, mode="tunnel")
    run(r, cluster(NODES, "native", "vxlan"))
    assert made["vxlan"].up and [p.node for p in made["vxlan"].peers] == ["n2"]
    assert routes.list() == {KernelRoute(N("10.244.2.0/24"), dev="rr.fake")}
    run(r, cluster(NODES, "native", "geneve"))
    assert made["geneve"].up and not made["vxlan"].up


def test_tunnel_errors_are_reported_and_routes_still_synced() -> None:
    bad = FakeTunnel(fail=True)
    routes = FakeRoutes()
    r = RoutingReconciler(routes, FakeLinks(), tunnels=lambda p: bad, mode="tunnel")
    ctx = run(r, cluster(NODES))
    assert "fake tunnel failure" in ctx.errors["routing"]
    assert routes.list() == {KernelRoute(N("10.244.2.0/24"), dev="rr.fake")}


def test_tunnel_needs_a_node_address() -> None:
    r = RoutingReconciler(FakeRoutes(), FakeLinks(), tunnels=lambda p: FakeTunnel(),
                          mode="tunnel")
    nodes = {"n1": ("fd00::1", ["10.244.1.0/24"]), "n2": NODES["n2"]}
    err = run(r, cluster(nodes, underlay="ipv4")).errors["routing"]
    assert "node n1 has no IPv4 InternalIP" in err and r.endpoint is None
    # auto: n1 tunnels over IPv6, and names the node it cannot reach over it
    err = run(r, cluster(nodes)).errors["routing"]
    assert "node n2 tunnels over IPv4, this node over IPv6" in err
    assert r.endpoint == ipaddress.ip_address("fd00::1")


def test_kernel_vxlan_by_default_and_bad_settings_refused() -> None:
    routes, links, r, _ = setup()
    run(r, cluster(NODES, "tunnel", "vxlan"))
    assert isinstance(r._drivers["vxlan"], KernelVxlan)
    with pytest.raises(ValueError, match="routing mode"):
        RoutingReconciler(routes, links, mode="overlay")
    with pytest.raises(ValueError, match="tunnel protocol"):
        RoutingReconciler(routes, links, protocol="gre")


def test_direct_routes_on_a_shared_segment_only_when_asked() -> None:
    import dataclasses

    shared = {"n1": ("10.0.1.2", ["10.244.1.0/24"]), "n2": ("10.0.1.3", ["10.244.2.0/24"])}
    routes, links, r, sp = setup()
    links.subnets.add(N("10.0.1.0/24"))
    snap = cluster(shared, "hybrid")
    run(r, snap)  # nothing learned, no direct routes: the tunnel carries n2's CIDR
    assert routes.list() == {KernelRoute(N("10.244.2.0/24"), (A("10.244.2.0"),), "rr.vxlan",
                                         onlink=True)}
    assert snap.network_config is not None
    direct = dataclasses.replace(
        snap, network_config=dataclasses.replace(snap.network_config,
                                                 auto_direct_node_routes=True))
    run(r, direct)
    assert routes.list() == {KernelRoute(N("10.244.2.0/24"), (A("10.0.1.3"),))}


DUAL = {"n1": ("10.0.1.2", ["10.244.1.0/24", "fd00:1::/64"]),
        "n2": ("10.0.2.2", ["10.244.2.0/24", "fd00:2::/64"])}


def test_ipv6_pod_cidrs_through_a_tunnel_that_carries_them() -> None:
    fake = FakeTunnel(layout=TunnelLayout("rr.fake", False, ipv6=True))
    routes = FakeRoutes()
    r = RoutingReconciler(routes, FakeLinks(), tunnels=lambda p: fake, mode="tunnel")
    assert run(r, cluster(DUAL, "tunnel", "geneve")).errors == {}
    assert routes.list() == {KernelRoute(N("10.244.2.0/24"), dev="rr.fake"),
                             KernelRoute(N("fd00:2::/64"), dev="rr.fake")}
    assert [p.cidrs6 for p in fake.peers] == [(N("fd00:2::/64"),)]


def test_kernel_vxlan_routes_ipv6_via_the_vteps_link_local_address() -> None:
    routes, links, r, _ = setup()
    assert run(r, cluster(DUAL, "tunnel", "vxlan")).errors == {}
    ll6 = vtep_ll6(vtep_mac(A("10.0.2.2")))
    assert routes.list() == {VIA_VX, KernelRoute(N("fd00:2::/64"), (ll6,), "rr.vxlan",
                                                 onlink=True)}
    [vtep] = links.vteps("rr.vxlan")
    assert (vtep.inner, vtep.inner6) == (A("10.244.2.0"), ll6)  # one entry, both families


def test_kernel_vxlan_single_stack_peers_get_no_ipv6_neighbor() -> None:
    _, links, r, _ = setup()
    assert run(r, cluster({"n1": DUAL["n1"], "n2": ("10.0.2.2", ["10.244.2.0/24"])},
                          "tunnel", "vxlan")).errors == {}
    [vtep] = links.vteps("rr.vxlan")
    assert vtep.inner6 is None


def test_a_tunnel_without_ipv6_reports_the_ipv6_pod_cidrs_it_cannot_carry() -> None:
    fake = FakeTunnel(layout=TunnelLayout("rr.fake", True, ipv6=False))
    routes = FakeRoutes()
    r = RoutingReconciler(routes, FakeLinks(), tunnels=lambda p: fake, mode="tunnel")
    err = run(r, cluster(DUAL, "tunnel", "vxlan")).errors["routing"]
    assert "rr.fake: carries IPv4 only" in err and "fd00:2::/64" in err
    # IPv4 still tunnelled, IPv6 not black-holed
    assert routes.list() == {KernelRoute(N("10.244.2.0/24"), (A("10.244.2.0"),), "rr.fake",
                                         onlink=True)}


def test_kernel_vxlan_hybrid_ipv6_native_while_learned_then_tunnelled() -> None:
    routes, _, r, sp = setup()
    learn(sp, "fd00:2::/64", "fd00:ffff::1")
    assert run(r, cluster(DUAL, "hybrid", "vxlan")).errors == {}
    assert KernelRoute(N("fd00:2::/64"), (A("fd00:ffff::1"),)) in routes.list()
    forget(sp, "fd00:2::/64")
    assert run(r, cluster(DUAL, "hybrid", "vxlan")).errors == {}
    ll6 = vtep_ll6(vtep_mac(A("10.0.2.2")))
    assert KernelRoute(N("fd00:2::/64"), (ll6,), "rr.vxlan", onlink=True) in routes.list()


def test_the_cni_plugins_routes_to_this_nodes_pods_are_left_alone() -> None:
    """They carry the same protocol number; deleting them cut the node off its own pods
    (IPv6: the kernel took the delete; IPv4's delete missed by luck)."""
    from controller.cni.netsetup import host_ifname, is_pod_route

    routes, _, r, sp = setup()
    veth = host_ifname("c1", "eth0")
    pods = {KernelRoute(N("10.244.1.5/32"), dev=veth),
            KernelRoute(N("fd00:244:1::5/128"), dev=veth)}
    for p in pods:
        routes.replace(p)
        assert is_pod_route(p)
    learn(sp, "10.244.2.0/24", "10.0.1.1")
    assert run(r, cluster(NODES, "native")).errors == {}
    assert routes.list() == pods | {NATIVE}
    # a device route to a whole CIDR, or out of another device, is the reconciler's
    assert not is_pod_route(KernelRoute(N("10.244.1.0/24"), dev=veth))
    assert not is_pod_route(KernelRoute(N("10.244.1.5/32"), dev="rr.vxlan"))
    assert not is_pod_route(KernelRoute(N("10.244.1.5/32"), (A("10.0.1.1"),), veth))


def test_a_peer_bfd_found_dead_has_its_routes_dropped_until_it_answers_again(
        caplog: pytest.LogCaptureFixture) -> None:
    """Its BGP session may last a hold time more; the node stops routing through it at
    once, and uses it again once BFD is back up."""
    from bgp.bfd import Settings
    from bgp.bfd_port import FakeBfd, failed
    from tests.unit.routing.cluster import TOR

    bfd = FakeBfd()
    bfd.set_sessions({TOR: Settings()})
    routes, links = FakeRoutes(), FakeLinks()
    sp = learned_speaker()
    r = RoutingReconciler(routes, links, lambda: {"tor": sp},
                          failed_peers=lambda: failed(bfd.sessions()))
    learn(sp, "10.244.2.0/24", "10.0.1.1")
    run(r, cluster(NODES, "native"))
    assert routes.list() == {NATIVE}
    bfd.set_state(TOR, "down")  # never up yet (the peer runs no BFD): not a failure
    run(r, cluster(NODES, "native"))
    assert routes.list() == {NATIVE}
    bfd.set_state(TOR, "down", "detect_expired")
    with caplog.at_level("WARNING"):
        run(r, cluster(NODES, "native"))
    assert routes.list() == set()
    assert f"event=bfd_peer_routes_ignored peer={TOR}" in caplog.text
    bfd.set_state(TOR, "init", "detect_expired")  # coming back: not yet
    run(r, cluster(NODES, "native"))
    assert routes.list() == set()
    bfd.set_state(TOR, "up")
    run(r, cluster(NODES, "native"))
    assert routes.list() == {NATIVE}


def test_geneve_on_the_kernel_tunnel_datapath_names_the_setting() -> None:
    from controller.kernel.links import FakeLinks
    from controller.reconcile.routing import default_tunnels

    with pytest.raises(ValueError) as e:
        default_tunnels(FakeLinks(), "kernel")("geneve")
    assert "RackrouteConfig spec.tunnelProtocol" in str(e.value)
    assert "--tunnel-datapath is kernel; use auto or ebpf" in str(e.value)


def test_without_import_learned_routes_are_not_installed_but_still_count_in_hybrid() -> None:
    """The agent without --import-routes: the node's own routing carries what BGP
    learned; hybrid mode still tunnels only what nothing learned."""
    routes = FakeRoutes()
    links = FakeLinks({ipaddress.IPv4Address("10.0.1.2"): Underlay("u0", 2, 1500)})
    sp = learned_speaker()
    r = RoutingReconciler(routes, links, lambda: {"tor": sp}, import_learned=False)
    learn(sp, "10.244.2.0/24", "10.0.1.1")
    assert run(r, cluster(NODES, "native")).errors == {}
    assert routes.list() == set()
    run(r, cluster(NODES, "hybrid"))
    assert routes.list() == set() and r.plan is not None and r.plan.tunneled == frozenset()
    forget(sp, "10.244.2.0/24")
    run(r, cluster(NODES, "hybrid"))
    assert routes.list() == {VIA_VX}  # nothing learned: the tunnel


def test_routing_starts_when_the_cluster_asks_for_a_tunnel_without_any_flag() -> None:
    """RoutingWhenNeeded: an agent without routing flags leaves the node's routes alone
    under a native RackrouteConfig, and starts the routing reconciler (tunnel, routes)
    once the config asks for a tunnel; with the flags it starts at once."""
    routes = FakeRoutes()
    links = FakeLinks({ipaddress.IPv4Address("10.0.1.2"): Underlay("u0", 2, 1500)})
    sp = learned_speaker()
    learn(sp, "10.244.2.0/24", "10.0.1.1")
    made: list[RoutingReconciler] = []

    def make() -> RoutingReconciler:
        made.append(RoutingReconciler(routes, links, lambda: {"tor": sp},
                                      import_learned=False))
        return made[-1]

    lazy = RoutingWhenNeeded(make, always=False)
    ctx = PassContext(cluster(NODES, "native"), "n1")
    lazy.reconcile(ctx)
    assert made == [] and lazy.pod_mtu() is None and lazy.tunnel_state() is None
    lazy.reconcile(PassContext(cluster(NODES, "tunnel"), "n1"))
    assert len(made) == 1 and routes.list() == {VIA_VX} and links.links() == {"rr.vxlan"}
    assert lazy.pod_mtu() == 1450 and str(lazy.endpoint) == "10.0.1.2"
    lazy.reconcile(PassContext(cluster(NODES, "native"), "n1"))  # kept: it cleans up
    assert len(made) == 1 and routes.list() == set() and links.links() == set()
    eager = RoutingWhenNeeded(make, always=True)
    eager.reconcile(PassContext(cluster(NODES, "native"), "n1"))
    assert len(made) == 2


def test_only_learned_routes_inside_the_clusters_pod_addresses_are_imported_by_default(
        caplog: pytest.LogCaptureFixture) -> None:
    """import_scope "pods": another node's pod CIDR is installed, an outside network and
    another node's LoadBalancer /32 are not (and the count left out is logged); "all"
    installs every one."""
    import logging

    routes = FakeRoutes()
    links = FakeLinks({ipaddress.IPv4Address("10.0.1.2"): Underlay("u0", 2, 1500)})
    sp = learned_speaker()
    for prefix in ("10.244.2.0/24", "203.0.113.0/24", "198.51.100.7/32"):
        learn(sp, prefix, "10.0.1.1")
    r = RoutingReconciler(routes, links, lambda: {"tor": sp}, import_scope="pods")
    with caplog.at_level(logging.INFO, logger="rackroute.routing"):
        assert run(r, cluster(NODES, "native")).errors == {}
    assert routes.list() == {NATIVE}
    assert "event=learned_routes_out_of_scope prefixes=2" in caplog.text
    everything = RoutingReconciler(routes, links, lambda: {"tor": sp}, import_scope="all")
    run(everything, cluster(NODES, "native"))
    assert {str(x.dst) for x in routes.list()} == {
        "10.244.2.0/24", "203.0.113.0/24", "198.51.100.7/32"}
    with pytest.raises(ValueError, match="import scope"):
        RoutingReconciler(routes, links, import_scope="some")
