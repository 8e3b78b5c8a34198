"""Dual-stack pods across the eBPF tunnel (Geneve and VXLAN over an IPv4 underlay): IPv6
ping, full-size IPv6 packets and a TCP exchange reach the other node's pod with the
inner addresses intact, the tunnel counters move, the outer TOS is the inner traffic
class, and IPv4 keeps working. The router
forwards no IPv6 at all, so IPv6 crosses encapsulated or not at all. The kernel VXLAN
device carries IPv6 too, routed via the peer VTEP's link-local address.
Namespaces are named rr6<pid>…, removed even when a test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.unit.routing.cluster import learn

from .tcp import echo, iperf
from .topo import POD_CIDR, POD_IP6, UNDERLAY, Topo, delta, ebpf, nsx, up

pytestmark = pytest.mark.timeout(120)

FULL_SIZE6 = 1450 - 40 - 8  # pod MTU minus IPv6 and ICMPv6 headers


@pytest.fixture
def topo6() -> Iterator[Topo]:
    t = Topo(tag=f"rr6{os.getpid() % 1000000}", dual=True).build()
    try:
        t.install_router_counters()
        yield t
    finally:
        t.teardown()


@pytest.mark.parametrize("protocol", ["geneve", "vxlan"])
def test_ebpf_tunnel_carries_ipv6_pod_traffic(topo6: Topo, protocol: str) -> None:
    assert up(topo6, "tunnel", protocol, "ebpf") == {"n1": {}, "n2": {}}
    n1, n2 = topo6.nodes["n1"], topo6.nodes["n2"]
    assert "fd00:232:2::/64 dev rr.tun" in nsx(n1.ns, "ip", "-6", "route", "show", "proto",
                                               "201")
    assert "fd00:232:1::/64 dev rr.tun" in nsx(n2.ns, "ip", "-6", "route", "show", "proto",
                                               "201")
    s1, s2 = ebpf(topo6, "n1", protocol).stats(), ebpf(topo6, "n2", protocol).stats()
    c0 = topo6.router_counter()

    assert topo6.ping("n1", "n2", count=4, interval=0.05, v6=True) == (4, 4)
    assert topo6.ping("n2", "n1", count=2, interval=0.05, v6=True) == (2, 2)
    # a full-size IPv6 packet at the pod MTU fits the tunnel (no fragmenting on the way)
    assert topo6.ping("n1", "n2", count=2, interval=0.05, v6=True, size=FULL_SIZE6) == (2, 2)
    # the outer IPv4 TOS is the inner traffic class (EF here)
    nsx(n1.pod_ns, "ping", "-n", "-q", "-c", "2", "-i", "0.05", "-W", "1", "-Q", "0xb8",
        POD_IP6["n2"])
    seen = echo(n1.pod_ns, n2.pod_ns, POD_IP6["n2"], size=1 << 20)
    assert seen["peer"] == POD_IP6["n1"] and seen["local"] == POD_IP6["n2"]
    assert seen["bytes"] == 1 << 20 and seen["sha256"] == seen["sent_sha256"]

    d1 = delta(ebpf(topo6, "n1", protocol).stats(), s1)
    d2 = delta(ebpf(topo6, "n2", protocol).stats(), s2)
    assert d1["encap_packets"] >= 8 and d1["decap_packets"] >= 8
    assert d2["encap_packets"] >= 8 and d2["decap_packets"] >= 8
    assert d1["errors"] == d2["errors"] == d1["miss"] == d2["miss"] == 0
    c = delta(topo6.router_counter(), c0)
    assert c[protocol] >= 16 and c["native6"] == 0 and c["native"] == 0
    assert c["tunnel_ef"] >= 2
    # IPv4 shares the tunnel
    assert topo6.ping("n1", "n2", count=2, interval=0.05) == (2, 2)
    assert iperf(n2.pod_ns, n1.pod_ns, POD_IP6["n1"], seconds=1)["bps"] > 1e6


def test_hybrid_ipv4_native_ipv6_through_the_tunnel(topo6: Topo) -> None:
    """The ToR knows the IPv4 pod CIDRs only: IPv4 goes natively, IPv6 through Geneve."""
    for name, node in topo6.nodes.items():
        other = "n2" if name == "n1" else "n1"
        learn(node.speaker, POD_CIDR[other], UNDERLAY[name][1])
    topo6.router_knows_pods(True)
    assert up(topo6, "hybrid", "geneve", "ebpf") == {"n1": {}, "n2": {}}
    n1 = topo6.nodes["n1"]
    routes = nsx(n1.ns, "ip", "route", "show", "proto", "201")
    assert "10.232.2.0/24 via 10.231.1.1 dev u0" in routes
    assert "fd00:232:2::/64 dev rr.tun" in nsx(n1.ns, "ip", "-6", "route", "show", "proto",
                                               "201")
    s1, c0 = ebpf(topo6, "n1", "geneve").stats(), topo6.router_counter()
    assert topo6.ping("n1", "n2", count=3, interval=0.05) == (3, 3)
    assert topo6.ping("n1", "n2", count=3, interval=0.05, v6=True) == (3, 3)
    d1, c = delta(ebpf(topo6, "n1", "geneve").stats(), s1), delta(topo6.router_counter(), c0)
    assert d1["encap_packets"] == 3 and d1["decap_packets"] == 3  # the IPv6 pings only
    assert c["native"] == 6 and c["geneve"] == 6


def test_kernel_vxlan_carries_ipv6_via_the_vteps_link_local_address(topo6: Topo) -> None:
    assert up(topo6, "tunnel", "vxlan", "kernel") == {"n1": {}, "n2": {}}
    n1, n2 = topo6.nodes["n1"], topo6.nodes["n2"]
    # an IPv6 route via the peer VTEP's link-local address, its neighbor on the same MAC
    r1 = nsx(n1.ns, "ip", "-6", "route", "show", "proto", "201")
    assert "fd00:232:2::/64 via fe80::" in r1 and "dev rr.vxlan" in r1, r1
    neigh = nsx(n1.ns, "ip", "-6", "neigh", "show", "dev", "rr.vxlan")
    assert "PERMANENT" in neigh and "fe80::" in neigh, neigh
    c0 = topo6.router_counter()
    assert topo6.ping("n1", "n2", count=4, interval=0.05, v6=True) == (4, 4)
    assert topo6.ping("n2", "n1", count=2, interval=0.05, v6=True) == (2, 2)
    assert topo6.ping("n1", "n2", count=2, interval=0.05, v6=True, size=FULL_SIZE6) == (2, 2)
    seen = echo(n1.pod_ns, n2.pod_ns, POD_IP6["n2"], size=1 << 20)
    assert seen["peer"] == POD_IP6["n1"] and seen["local"] == POD_IP6["n2"]
    assert seen["bytes"] == 1 << 20 and seen["sha256"] == seen["sent_sha256"]
    c = delta(topo6.router_counter(), c0)
    assert c["vxlan"] >= 12 and c["native6"] == 0  # encapsulated, never bare IPv6
    assert topo6.ping("n1", "n2", count=2, interval=0.05) == (2, 2)  # IPv4 alongside
    # a second pass finds routes and entries as it left them (no churn)
    assert n1.reconcile(topo6.snapshot("tunnel", "vxlan")).errors == {}
    assert nsx(n1.ns, "ip", "-6", "route", "show", "proto", "201") == r1
    assert nsx(n1.ns, "ip", "-6", "neigh", "show", "dev", "rr.vxlan") == neigh
