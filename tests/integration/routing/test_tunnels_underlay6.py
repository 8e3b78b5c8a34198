"""The tunnel over an IPv6-only underlay: the node-router links and the router carry IPv6
only (no IPv4 address anywhere on the way), so dual-stack pods reach each other, IPv4
included, only encapsulated in IPv6. Shown for the kernel VXLAN device, eBPF Geneve and
eBPF VXLAN (and eBPF VXLAN against a kernel VXLAN peer): the device's local address and
FDB are IPv6, the tunnel and pod MTU are 1430 (70 bytes of overhead) and full-size
packets at it pass, pings both ways and a 1 MiB TCP transfer per family arrive with the
inner addresses, the router sees tunnel packets in IPv6 and no bare pod traffic, the
eBPF counters move and the outer traffic class is the inner TOS. Pods with IPv6 only
(no inner IPv4 VTEP address) are routed via the peer's link-local address; a cluster
asking for an IPv4 underlay on these nodes gets an error naming the node and no tunnel.
Namespaces are named rru6<pid>…, removed even when a test fails."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

import pytest

from controller.desired.routes import vtep_ll6, vtep_mac
from tests.unit.routing.cluster import forget, learn

from .tcp import echo
from .topo import (
    POD_CIDR,
    POD_CIDR6,
    POD_IP,
    POD_IP6,
    UNDERLAY6,
    Topo,
    delta,
    ebpf,
    nsx,
    up,
)

pytestmark = pytest.mark.timeout(120)

POD_MTU = 1430  # 1500 - 70: outer IPv6 40 + UDP 8 + VXLAN/Geneve 8 + inner Ethernet 14
FULL_SIZE = POD_MTU - 20 - 8  # IPv4 and ICMP headers
FULL_SIZE6 = POD_MTU - 40 - 8  # IPv6 and ICMPv6 headers
OK: dict[str, dict[str, str]] = {"n1": {}, "n2": {}}


def topology(**kw: bool) -> Iterator[Topo]:
    t = Topo(tag=f"rru6{os.getpid() % 1000000}", underlay6=True, **kw).build(pod_mtu=POD_MTU)
    try:
        t.install_router_counters()
        yield t
    finally:
        t.teardown()


@pytest.fixture
def u6() -> Iterator[Topo]:
    """Dual-stack pods over the IPv6-only underlay."""
    yield from topology(dual=True)


@pytest.fixture
def u6only() -> Iterator[Topo]:
    """IPv6-only pods (and pod CIDRs) over the IPv6-only underlay."""
    yield from topology(ipv6_only_pods=True)


def mac(node: str) -> str:
    return vtep_mac(ipaddress.ip_address(UNDERLAY6[node][0]))


def assert_no_ipv4_underlay(topo: Topo) -> None:
    for node in topo.nodes.values():
        assert nsx(node.ns, "ip", "-4", "-o", "addr", "show", "dev", "u0").strip() == ""
    assert nsx(topo.router, "ip", "-4", "-o", "addr", "show", "scope", "global").strip() == ""


def assert_endpoints(topo: Topo) -> None:
    """Each node tunnels from its IPv6 underlay address with the pod MTU 1430."""
    for name, node in topo.nodes.items():
        assert node.reconciler is not None
        assert str(node.reconciler.endpoint) == UNDERLAY6[name][0]
        assert node.reconciler.pod_mtu() == POD_MTU


def assert_tcp(topo: Topo, v6: bool) -> None:
    """1 MiB over one TCP connection n1 → n2, intact, seen with the inner addresses."""
    n1, n2 = topo.nodes["n1"], topo.nodes["n2"]
    ips = POD_IP6 if v6 else POD_IP
    seen = echo(n1.pod_ns, n2.pod_ns, ips["n2"], size=1 << 20)
    assert seen["bytes"] == 1 << 20 and seen["sha256"] == seen["sent_sha256"]
    prefix = "" if v6 else "::ffff:"  # the server's socket is IPv6, IPv4-mapped
    assert (seen["peer"], seen["local"]) == (prefix + ips["n1"], prefix + ips["n2"])


def dual_traffic(topo: Topo) -> int:
    """Pings of both families both ways, full-size packets at the pod MTU, and a TCP
    transfer per family; returns the echo requests each node sent and answered (every
    one of them crossed the tunnel twice)."""
    assert topo.ping("n1", "n2", count=4, interval=0.05) == (4, 4)
    assert topo.ping("n2", "n1", count=4, interval=0.05) == (4, 4)
    assert topo.ping("n1", "n2", count=4, interval=0.05, v6=True) == (4, 4)
    assert topo.ping("n2", "n1", count=4, interval=0.05, v6=True) == (4, 4)
    assert topo.ping("n1", "n2", count=2, interval=0.05, size=FULL_SIZE) == (2, 2)
    assert topo.ping("n2", "n1", count=2, interval=0.05, size=FULL_SIZE) == (2, 2)
    assert topo.ping("n1", "n2", count=2, interval=0.05, v6=True, size=FULL_SIZE6) == (2, 2)
    assert topo.ping("n2", "n1", count=2, interval=0.05, v6=True, size=FULL_SIZE6) == (2, 2)
    assert_tcp(topo, v6=False)
    assert_tcp(topo, v6=True)
    return 12


def test_kernel_vxlan_over_an_ipv6_underlay(u6: Topo) -> None:
    assert_no_ipv4_underlay(u6)
    assert up(u6, "tunnel", "vxlan", "kernel") == OK
    assert_endpoints(u6)
    n1, n2 = u6.nodes["n1"], u6.nodes["n2"]
    link = nsx(n1.ns, "ip", "-d", "link", "show", "rr.vxlan")
    assert "vxlan id 1 local fd00:231:1::2 " in link and "dstport 8472" in link, link
    assert "mtu 1430 " in link and mac("n1") in link and " udp6zerocsumrx" in link, link
    assert f"{mac('n2')} dst fd00:231:2::2 " in nsx(n1.ns, "bridge", "fdb", "show", "dev",
                                                    "rr.vxlan")
    assert f"{mac('n1')} dst fd00:231:1::2 " in nsx(n2.ns, "bridge", "fdb", "show", "dev",
                                                    "rr.vxlan")
    routes = nsx(n1.ns, "ip", "route", "show", "proto", "201")
    assert "10.232.2.0/24 via 10.232.2.0 dev rr.vxlan onlink" in routes, routes
    routes6 = nsx(n1.ns, "ip", "-6", "route", "show", "proto", "201")
    assert f"fd00:232:2::/64 via {vtep_ll6(mac('n2'))} dev rr.vxlan" in routes6, routes6
    (rx1, tx1), (rx2, tx2) = n1.link_stats("rr.vxlan"), n2.link_stats("rr.vxlan")
    c0 = u6.router_counter()

    sent = dual_traffic(u6)

    (rx1b, tx1b), (rx2b, tx2b) = n1.link_stats("rr.vxlan"), n2.link_stats("rr.vxlan")
    assert min(rx1b - rx1, tx1b - tx1, rx2b - rx2, tx2b - tx2) >= 2 * sent
    c = delta(u6.router_counter(), c0)
    assert c["vxlan6"] >= 4 * sent and c["vxlan"] == c["vxlan6"]  # every one in IPv6
    assert c["geneve"] == c["native"] == c["native6"] == 0


@pytest.mark.parametrize("protocol", ["geneve", "vxlan"])
def test_ebpf_tunnel_over_an_ipv6_underlay(u6: Topo, protocol: str) -> None:
    assert_no_ipv4_underlay(u6)
    assert up(u6, "tunnel", protocol, "ebpf") == OK
    assert_endpoints(u6)
    n1, n2 = u6.nodes["n1"], u6.nodes["n2"]
    assert "mtu 1430 " in nsx(n1.ns, "ip", "link", "show", "rr.tun")
    assert "rr_tun_decap" in nsx(n1.ns, "tc", "filter", "show", "dev", "u0", "ingress")
    routes = nsx(n1.ns, "ip", "route", "show", "proto", "201")
    assert "10.232.2.0/24 dev rr.tun" in routes, routes
    routes6 = nsx(n1.ns, "ip", "-6", "route", "show", "proto", "201")
    assert "fd00:232:2::/64 dev rr.tun" in routes6, routes6
    assert "fd00:232:1::/64 dev rr.tun" in nsx(n2.ns, "ip", "-6", "route", "show", "proto",
                                               "201")
    s1, s2 = ebpf(u6, "n1", protocol).stats(), ebpf(u6, "n2", protocol).stats()
    c0 = u6.router_counter()

    sent = dual_traffic(u6)
    # the outer IPv6 traffic class is the inner TOS / traffic class (EF here)
    for dst in (POD_IP["n2"], POD_IP6["n2"]):
        nsx(n1.pod_ns, "ping", "-n", "-q", "-c", "2", "-i", "0.05", "-W", "1", "-Q", "0xb8",
            dst)

    for name, s in (("n1", s1), ("n2", s2)):
        d = delta(ebpf(u6, name, protocol).stats(), s)
        assert d["encap_packets"] >= 2 * sent and d["decap_packets"] >= 2 * sent, d
        assert d["errors"] == d["miss"] == 0, d
    c = delta(u6.router_counter(), c0)
    other = "vxlan" if protocol == "geneve" else "geneve"
    assert c[f"{protocol}6"] >= 4 * sent and c[protocol] == c[f"{protocol}6"], c
    assert c[other] == c["native"] == c["native6"] == 0, c
    assert c["tunnel6_ef"] >= 4 and c["tunnel_ef"] == 0, c


def test_ebpf_vxlan_and_kernel_vxlan_interoperate_over_ipv6(u6: Topo) -> None:
    """The eBPF side sends no UDP checksum over IPv6, the kernel device takes it."""
    snap = u6.snapshot("tunnel", "vxlan")
    n1, n2 = u6.nodes["n1"], u6.nodes["n2"]
    n1.start("tunnel", "vxlan", "ebpf")
    n2.start("tunnel", "vxlan", "kernel")
    assert n1.reconcile(snap).errors == {} and n2.reconcile(snap).errors == {}
    assert_endpoints(u6)
    rx2, tx2 = n2.link_stats("rr.vxlan")
    s1, c0 = ebpf(u6, "n1", "vxlan").stats(), u6.router_counter()

    sent = dual_traffic(u6)

    rx2b, tx2b = n2.link_stats("rr.vxlan")
    assert rx2b - rx2 >= 2 * sent and tx2b - tx2 >= 2 * sent
    d1 = delta(ebpf(u6, "n1", "vxlan").stats(), s1)
    assert d1["encap_packets"] >= 2 * sent and d1["decap_packets"] >= 2 * sent, d1
    assert d1["errors"] == d1["miss"] == 0, d1
    c = delta(u6.router_counter(), c0)
    assert c["vxlan6"] >= 4 * sent and c["native"] == c["native6"] == 0, c


def test_native_ipv4_over_an_ipv6_underlay(u6: Topo) -> None:
    """RFC 8950 without a tunnel: each node learns the other's IPv4 pod CIDR with its
    router's IPv6 address as next hop (what an IPv6 session carrying IPv4 gives), and the
    routing reconciler installs it `via inet6`; IPv4 pod traffic then crosses the IPv6-only
    underlay natively, unencapsulated, both ways, as IPv6 does."""
    assert_no_ipv4_underlay(u6)
    for node in u6.nodes.values():
        node.start("native", "vxlan", "kernel")
    u6.router_knows_pods(True)
    snap = u6.snapshot("native", "vxlan")
    for name, node in u6.nodes.items():
        other = "n2" if name == "n1" else "n1"
        learn(node.speaker, POD_CIDR[other], UNDERLAY6[name][1])
        learn(node.speaker, POD_CIDR6[other], UNDERLAY6[name][1])
        assert node.reconcile(snap).errors == {}
    n1 = u6.nodes["n1"]
    routes = nsx(n1.ns, "ip", "route", "show", "proto", "201")
    assert "10.232.2.0/24 via inet6 fd00:231:1::1 dev u0" in routes, routes
    assert "rr.vxlan" not in nsx(n1.ns, "ip", "link", "show")  # native: no tunnel made
    c0 = u6.router_counter()
    assert u6.ping("n1", "n2", count=4, interval=0.05) == (4, 4)
    assert u6.ping("n2", "n1", count=4, interval=0.05) == (4, 4)
    assert u6.ping("n1", "n2", count=4, interval=0.05, v6=True) == (4, 4)
    assert_tcp(u6, v6=False)
    c = delta(u6.router_counter(), c0)
    assert c["native"] >= 16 and c["native6"] >= 8  # the router forwarded bare pod IPv4
    assert c["vxlan"] == c["geneve"] == 0
    # the route goes with the learned one, and IPv4 pod traffic with it
    forget(n1.speaker, POD_CIDR["n2"])
    assert n1.reconcile(snap).errors == {}
    assert "10.232.2.0/24" not in nsx(n1.ns, "ip", "route", "show", "proto", "201")
    assert u6.ping("n1", "n2", count=2, interval=0.05, timeout=1) == (2, 0)


def test_ipv6_only_pods_route_via_the_vteps_link_local_address(u6only: Topo) -> None:
    n1, n2 = u6only.nodes["n1"], u6only.nodes["n2"]
    assert nsx(n1.pod_ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0").strip() == ""
    assert up(u6only, "tunnel", "vxlan", "kernel") == OK
    assert_endpoints(u6only)
    ll = vtep_ll6(mac("n2"))
    routes6 = nsx(n1.ns, "ip", "-6", "route", "show", "proto", "201")
    assert f"fd00:232:2::/64 via {ll} dev rr.vxlan" in routes6 and "onlink" in routes6, routes6
    assert nsx(n1.ns, "ip", "-4", "route", "show", "proto", "201").strip() == ""
    # the peer has no inner IPv4 address: only its link-local neighbor entry
    assert nsx(n1.ns, "ip", "-4", "neigh", "show", "dev", "rr.vxlan").strip() == ""
    neigh6 = nsx(n1.ns, "ip", "-6", "neigh", "show", "dev", "rr.vxlan")
    assert f"{ll} lladdr {mac('n2')} PERMANENT" in neigh6, neigh6
    assert f"{mac('n2')} dst fd00:231:2::2 " in nsx(n1.ns, "bridge", "fdb", "show", "dev",
                                                    "rr.vxlan")
    c0 = u6only.router_counter()
    assert u6only.ping("n1", "n2", count=4, interval=0.05, v6=True) == (4, 4)
    assert u6only.ping("n2", "n1", count=4, interval=0.05, v6=True) == (4, 4)
    assert u6only.ping("n1", "n2", count=2, interval=0.05, v6=True, size=FULL_SIZE6) == (2, 2)
    assert_tcp(u6only, v6=True)
    c = delta(u6only.router_counter(), c0)
    assert c["vxlan6"] >= 40 and c["native6"] == 0, c
    # a second pass leaves everything as it was
    assert n2.reconcile(u6only.snapshot("tunnel", "vxlan")).errors == {}
    assert n1.reconcile(u6only.snapshot("tunnel", "vxlan")).errors == {}
    assert nsx(n1.ns, "ip", "-6", "route", "show", "proto", "201") == routes6
    assert nsx(n1.ns, "ip", "-6", "neigh", "show", "dev", "rr.vxlan") == neigh6


def test_an_ipv4_underlay_on_ipv6_only_nodes_is_an_error(u6: Topo) -> None:
    errors = up(u6, "tunnel", "vxlan", "kernel", underlay="ipv4")
    for name, node in u6.nodes.items():
        msg = errors[name].get("routing", "")
        assert f"node {name} " in msg and "IPv4" in msg, errors
        assert "rr." not in nsx(node.ns, "ip", "link", "show")
        assert nsx(node.ns, "ip", "route", "show", "proto", "201").strip() == ""
        assert nsx(node.ns, "ip", "-6", "route", "show", "proto", "201").strip() == ""
        assert node.reconciler is not None and node.reconciler.pod_mtu() is None
        assert node.reconciler.endpoint is None
    assert u6.ping("n1", "n2", count=1, timeout=1)[1] == 0
    # the same nodes and reconcilers tunnel once the cluster asks for IPv6
    snap = u6.snapshot("tunnel", "vxlan", "ipv6")
    assert u6.nodes["n1"].reconcile(snap).errors == {}
    assert u6.nodes["n2"].reconcile(snap).errors == {}
    assert u6.ping("n1", "n2", count=2, interval=0.05) == (2, 2)
    assert u6.ping("n1", "n2", count=2, interval=0.05, v6=True) == (2, 2)
