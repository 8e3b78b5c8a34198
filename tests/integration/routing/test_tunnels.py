"""Pod to pod across a router that does not know pod CIDRs: native cannot reach; the
kernel VXLAN device, eBPF Geneve and eBPF VXLAN (against a kernel VXLAN peer) can, and
their counters move."""

from __future__ import annotations

import pytest

from .tcp import iperf
from .topo import POD_IP, Topo, ebpf, nsx

pytestmark = pytest.mark.timeout(90)


def up(topo: Topo, mode: str, protocol: str, datapath: str = "auto",
       nodes: tuple[str, ...] = ("n1", "n2")) -> None:
    snap = topo.snapshot(mode, protocol)
    for name in nodes:
        node = topo.nodes[name]
        node.start(mode, protocol, datapath)
        assert node.reconcile(snap).errors == {}


def test_native_cannot_reach_through_this_router(topo: Topo) -> None:
    up(topo, "native", "vxlan")
    assert topo.ping("n1", "n2", count=2, interval=0.2, timeout=1)[1] == 0


def test_kernel_vxlan_pod_to_pod(topo: Topo) -> None:
    up(topo, "tunnel", "vxlan", "kernel")
    n1, n2 = topo.nodes["n1"], topo.nodes["n2"]
    routes = nsx(n1.ns, "ip", "route", "show", "proto", "201")
    assert "10.232.2.0/24 via 10.232.2.0 dev rr.vxlan onlink" in routes
    assert n1.reconciler is not None and n1.reconciler.pod_mtu() == 1450
    link = nsx(n1.ns, "ip", "-d", "link", "show", "rr.vxlan")
    assert "vxlan id 1 local 10.231.1.2" in link and "dstport 8472 nolearning" in link
    assert "mtu 1450" in link and "02:72:0a:e7:01:02" in link
    fdb = nsx(n1.ns, "bridge", "fdb", "show", "dev", "rr.vxlan")
    assert "02:72:0a:e7:02:02 dst 10.231.2.2" in fdb
    rx1, tx1 = n1.link_stats("rr.vxlan")
    rx2, tx2 = n2.link_stats("rr.vxlan")
    before = n1.reconciler.tunnel_state()
    assert before is not None and (before.protocol, before.dev, before.peers) == (
        "vxlan", "rr.vxlan", 1)
    assert topo.ping("n1", "n2", count=4, interval=0.05) == (4, 4)
    assert topo.ping("n2", "n1", count=2, interval=0.05) == (2, 2)
    rx1b, tx1b = n1.link_stats("rr.vxlan")
    rx2b, tx2b = n2.link_stats("rr.vxlan")
    assert tx1b - tx1 >= 6 and rx1b - rx1 >= 6
    assert tx2b - tx2 >= 6 and rx2b - rx2 >= 6
    # the counters the agent exports are the device's
    after = n1.reconciler.tunnel_state()
    assert after is not None
    assert after.stats["encap_packets"] - before.stats["encap_packets"] == tx1b - tx1
    assert after.stats["decap_packets"] - before.stats["decap_packets"] == rx1b - rx1
    assert after.stats["errors"] == 0
    c = topo.router_counter()
    assert c["vxlan"] >= 12 and c["native"] == 0
    assert iperf(n1.pod_ns, n2.pod_ns, POD_IP["n2"], seconds=1)["bps"] > 0


def test_ebpf_geneve_ping_and_tcp(topo: Topo) -> None:
    up(topo, "tunnel", "geneve")
    n1, n2 = topo.nodes["n1"], topo.nodes["n2"]
    assert "10.232.2.0/24 dev rr.tun" in nsx(n1.ns, "ip", "route", "show", "proto", "201")
    assert "mtu 1450" in nsx(n1.ns, "ip", "link", "show", "rr.tun")
    assert topo.ping("n1", "n2", count=4, interval=0.05) == (4, 4)
    res = iperf(n1.pod_ns, n2.pod_ns, POD_IP["n2"], seconds=1)
    assert res["bps"] > 1e6  # full-size segments pass: the pod MTU leaves room
    s1, s2 = ebpf(topo, "n1", "geneve").stats(), ebpf(topo, "n2", "geneve").stats()
    st = n1.reconciler.tunnel_state() if n1.reconciler else None
    assert st is not None and (st.protocol, st.dev, st.mtu) == ("geneve", "rr.tun", 1450)
    assert st.stats["encap_packets"] >= s1["encap_packets"] > 4  # the program's counters
    assert s1["encap_packets"] > 4 and s1["decap_packets"] > 4
    assert s2["encap_packets"] > 4 and s2["decap_packets"] > 4
    assert s1["errors"] == s2["errors"] == 0
    c = topo.router_counter()
    assert c["geneve"] > 8 and c["vxlan"] == 0 and c["native"] == 0


def test_ebpf_geneve_pod_mtu_too_large_stalls_bulk_tcp(topo: Topo) -> None:
    """The MTU rule matters: with 1500 in the pods, ping's small packets pass but
    full-size frames do not fit once encapsulated."""
    topo.set_pod_mtu(1500)
    up(topo, "tunnel", "geneve")
    assert topo.ping("n1", "n2", count=2, interval=0.05) == (2, 2)
    big = nsx(topo.nodes["n1"].pod_ns, "ping", "-n", "-q", "-c", "2", "-i", "0.05", "-W", "1",
              "-M", "do", "-s", "1472", POD_IP["n2"], check=False)
    assert " 0 received" in big


def test_ebpf_vxlan_interoperates_with_kernel_vxlan(topo: Topo) -> None:
    up(topo, "tunnel", "vxlan", "ebpf", nodes=("n1",))
    up(topo, "tunnel", "vxlan", "kernel", nodes=("n2",))
    n1, n2 = topo.nodes["n1"], topo.nodes["n2"]
    rx2, tx2 = n2.link_stats("rr.vxlan")
    assert topo.ping("n1", "n2", count=3, interval=0.05) == (3, 3)
    assert topo.ping("n2", "n1", count=3, interval=0.05) == (3, 3)
    assert iperf(n2.pod_ns, n1.pod_ns, POD_IP["n1"], seconds=1)["bps"] > 1e6
    rx2b, tx2b = n2.link_stats("rr.vxlan")
    assert rx2b - rx2 >= 6 and tx2b - tx2 >= 6
    s1 = ebpf(topo, "n1", "vxlan").stats()
    assert s1["encap_packets"] >= 6 and s1["decap_packets"] >= 6 and s1["errors"] == 0
    assert topo.router_counter()["vxlan"] >= 12


def test_ebpf_tunnel_teardown_leaves_nothing(topo: Topo) -> None:
    up(topo, "tunnel", "geneve", nodes=("n1",))
    n1 = topo.nodes["n1"]
    assert "rr_tun_decap" in nsx(n1.ns, "tc", "filter", "show", "dev", "u0", "ingress")
    assert n1.reconciler is not None
    n1.reconciler.mode = "native"  # the cluster switches to native routing
    assert n1.reconcile(topo.snapshot("native", "geneve")).errors == {}
    assert "rr.tun" not in nsx(n1.ns, "ip", "link")
    assert "rr_tun" not in nsx(n1.ns, "tc", "filter", "show", "dev", "u0", "ingress")
    assert nsx(n1.ns, "ip", "route", "show", "proto", "201").strip() == ""
