"""IPv6 service load balancing on the `bench6` bench (two nodes, a ToR, fd… addresses).

East-west: a client pod reaches a ClusterIP over TCP and UDP through the pod-veth program
(the backend names itself, the reply comes from the VIP). North-south through the uplink
program: a Local LoadBalancer IP keeps the external client's address; a Cluster NodePort
and a Cluster LoadBalancer IP whose backend runs on the other node are reached with the
source translated to the node's IPv6 address (SNAT, port search in rr_ct6), and replies
are translated back to come from the service address.
"""

from __future__ import annotations

import socket
from ipaddress import IPv6Address

import pytest
from pyroute2 import IPRoute

from bpf import maps as m
from bpf.mapstore import PinnedMap
from controller.datapath_setup import _uplink_ipv6

from .netlab import in_netns, nsx, read_line
from .v6lab import EXT_UP, LB_CLUSTER, LB_VIP, NODE1_UP, NP_CLUSTER, PODS, PORT, VIP, Bench6


def tcp6(ns: str, ip: str, port: int, timeout: float = 2.0) -> tuple[str, tuple[str, int]]:
    """Connect over IPv6; returns (greeting, the peer address the socket sees)."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((ip, port))
        peer = s.getpeername()
        return read_line(s), (peer[0], peer[1])
    finally:
        s.close()


def udp6(ns: str, ip: str, port: int, timeout: float = 2.0) -> tuple[str, tuple[str, int]]:
    with in_netns(ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(b"hi", (ip, port))
        data, addr = s.recvfrom(2048)
        return data.decode(), (addr[0], addr[1])
    finally:
        s.close()


def test_tcp_to_ipv6_clusterip_reaches_both_backends(bench6: Bench6) -> None:
    seen = set()
    for _ in range(20):
        greeting, peer = tcp6(bench6.client, VIP, 80)
        name, client = greeting.split()
        assert name in bench6.backends
        assert client.rsplit(":", 1)[0] == PODS["c6"][1]  # no SNAT east-west
        assert peer == (VIP, 80)
        seen.add(name)
    assert seen == set(bench6.backends)


def test_tcp_established_ipv6_connection_keeps_its_backend(bench6: Bench6) -> None:
    with in_netns(bench6.client):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect((VIP, 80))
        name = read_line(s).split()[0]
        for i in range(5):
            s.sendall(f"line{i}\n".encode())
            assert read_line(s) == f"{name} line{i}"
    finally:
        s.close()


def test_udp_to_ipv6_clusterip_reply_comes_from_the_vip(bench6: Bench6) -> None:
    seen = set()
    for _ in range(20):
        reply, src = udp6(bench6.client, VIP, 80)
        name, client = reply.split()
        assert src == (VIP, 80)
        assert name in bench6.backends
        assert client.rsplit(":", 1)[0] == PODS["c6"][1]
        seen.add(name)
    assert seen == set(bench6.backends)


def test_not_a_service_is_left_alone(bench6: Bench6) -> None:
    greeting, peer = tcp6(bench6.client, PODS["b61"][1], PORT)
    assert greeting.split()[0] == "b61" and peer == (PODS["b61"][1], PORT)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ipv6_loadbalancer_local_through_the_uplink_keeps_the_client(bench6: Bench6,
                                                                     proto: str) -> None:
    ask = tcp6 if proto == "tcp" else udp6
    reply, src = ask(bench6.ext, LB_VIP, 80)
    name, client = reply.split()
    assert name in bench6.backends
    assert client.rsplit(":", 1)[0] == EXT_UP  # Local: the client address is preserved
    assert src == (LB_VIP, 80)


CLUSTER = [(NODE1_UP, NP_CLUSTER), (LB_CLUSTER, 80)]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize(("vip", "port"), CLUSTER, ids=["nodeport", "loadbalancer"])
def test_ipv6_cluster_policy_remote_backend_is_reached_through_snat(
        bench6: Bench6, vip: str, port: int, proto: str) -> None:
    ask = tcp6 if proto == "tcp" else udp6
    snat_ports = set()
    for _ in range(10):
        reply, src = ask(bench6.ext, vip, port)
        name, client = reply.split()
        assert name == "b63"  # the only backend, on the other node
        client_ip, client_port = client.rsplit(":", 1)
        assert client_ip == NODE1_UP  # the backend sees node 1's IPv6 address
        assert src == (vip, port)  # the reply is translated back to the service
        snat_ports.add(client_port)
    # each flow got its own translated port (the search skips ports in use in rr_ct6)
    assert len(snat_ports) == 10


def test_ipv6_snat_long_tcp_exchange(bench6: Bench6) -> None:
    with in_netns(bench6.ext):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect((NODE1_UP, NP_CLUSTER))
        assert s.getpeername()[:2] == (NODE1_UP, NP_CLUSTER)
        name, client = read_line(s).split()
        assert name == "b63" and client.rsplit(":", 1)[0] == NODE1_UP
        for i in range(300):
            s.sendall(f"line{i}\n".encode())
            assert read_line(s) == f"b63 line{i}"
        big = "".join(chr(ord("a") + i % 26) for i in range(200_000))  # many full segments
        for _ in range(3):
            s.sendall(f"{big}\n".encode())
            assert read_line(s) == f"b63 {big}"
    finally:
        s.close()


def test_uplink_config_holds_the_ipv6_snat_source(bench6: Bench6) -> None:
    cfg = PinnedMap.open(str(bench6.dp.cfg.pin_dir / "rr_config"))
    try:
        raw = cfg.lookup(bytes(4))
        assert raw is not None
        val = m.Config.from_buffer_copy(raw)
    finally:
        cfg.close()
    assert bytes(val.node_addr6) == IPv6Address(NODE1_UP).packed
    assert bytes(val.node_addr) == bytes(16)  # an IPv6-only node: no IPv4 SNAT source


def test_agent_picks_the_uplinks_global_ipv6_address(bench6: Bench6) -> None:
    nsx(bench6.node, "ip", "link", "add", "rrx6a", "type", "veth", "peer", "rrx6b")
    for dev in ("rrx6a", "rrx6b"):
        nsx(bench6.node, "ip", "link", "set", dev, "up")
    nsx(bench6.node, "ip", "-6", "addr", "add", "fd00:9::1/64", "dev", "rrx6a", "nodad",
        "preferred_lft", "0")  # deprecated
    nsx(bench6.node, "ip", "-6", "addr", "add", "fd00:9::2/64", "dev", "rrx6a", "nodad")
    nsx(bench6.node, "ip", "-6", "addr", "add", "fe80::9/64", "dev", "rrx6b", "nodad")
    try:
        with IPRoute(netns=bench6.node, flags=0) as ipr:
            assert _uplink_ipv6(ipr, "rrx6a") == IPv6Address("fd00:9::2")
            assert _uplink_ipv6(ipr, "rrx6b") is None  # link-local only
    finally:
        nsx(bench6.node, "ip", "link", "del", "rrx6a")
