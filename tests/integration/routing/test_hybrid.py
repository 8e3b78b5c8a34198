"""Hybrid routing: natively while a route to the remote pod CIDR is learned (tunnel
counters still), through the tunnel once it is withdrawn, and back, with no lost ping
beyond the switch-over. Learned routes come from a fake speaker."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.unit.routing.cluster import forget, learn

from .topo import POD_CIDR, POD_IP, UNDERLAY, Topo, nsx

pytestmark = pytest.mark.timeout(90)


def converge(topo: Topo, learned: bool) -> None:
    """Both nodes learn (or lose) the other's pod CIDR via the router, then reconcile."""
    snap = topo.snapshot("hybrid", "vxlan")
    for name, node in topo.nodes.items():
        other = "n2" if name == "n1" else "n1"
        if learned:
            learn(node.speaker, POD_CIDR[other], UNDERLAY[name][1])
        else:
            forget(node.speaker, POD_CIDR[other])
        assert node.reconcile(snap).errors == {}


def steady_ping(topo: Topo, count: int, interval: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", topo.nodes["n1"].pod_ns, "ping", "-n", "-q", "-c", str(count),
         "-i", str(interval), "-W", "1", POD_IP["n2"]],
        stdout=subprocess.PIPE, text=True)


def lost(p: subprocess.Popen[str]) -> int:
    out, _ = p.communicate(timeout=30)
    for line in out.splitlines():
        if "packets transmitted" in line:
            parts = line.split(",")
            return int(parts[0].split()[0]) - int(parts[1].split()[0])
    raise AssertionError(out)


def test_hybrid_native_then_tunnel_then_native(topo: Topo) -> None:
    n1 = topo.nodes["n1"]
    for node in topo.nodes.values():
        node.start("hybrid", "vxlan", "kernel")
    topo.router_knows_pods(True)
    converge(topo, learned=True)
    assert "10.232.2.0/24 via 10.231.1.1 dev u0" in nsx(n1.ns, "ip", "route", "show",
                                                       "proto", "201")
    _, tx0 = n1.link_stats("rr.vxlan")
    c0 = topo.router_counter()
    assert topo.ping("n1", "n2", count=5, interval=0.05) == (5, 5)
    _, tx1 = n1.link_stats("rr.vxlan")
    c1 = topo.router_counter()
    assert tx1 == tx0, "native: the tunnel must stay idle"
    assert c1["native"] - c0["native"] >= 10 and c1["vxlan"] == c0["vxlan"]

    # the ToR withdraws the pod CIDRs: traffic moves to the tunnel
    p = steady_ping(topo, count=60, interval=0.02)
    time.sleep(0.4)
    converge(topo, learned=False)
    topo.router_knows_pods(False)
    assert lost(p) <= 2
    assert "10.232.2.0/24 via 10.232.2.0 dev rr.vxlan" in nsx(n1.ns, "ip", "route", "show",
                                                              "proto", "201")
    _, tx2 = n1.link_stats("rr.vxlan")
    c2 = topo.router_counter()
    assert tx2 - tx1 >= 30 and c2["vxlan"] - c1["vxlan"] >= 60
    assert topo.ping("n1", "n2", count=3, interval=0.05) == (3, 3)

    # the routes return: traffic moves back, the tunnel goes idle again
    topo.router_knows_pods(True)
    p = steady_ping(topo, count=60, interval=0.02)
    time.sleep(0.4)
    converge(topo, learned=True)
    assert lost(p) <= 2
    _, tx3 = n1.link_stats("rr.vxlan")
    assert topo.ping("n1", "n2", count=5, interval=0.05) == (5, 5)
    _, tx4 = n1.link_stats("rr.vxlan")
    assert tx4 == tx3
    assert topo.router_counter()["native"] - c2["native"] >= 10
