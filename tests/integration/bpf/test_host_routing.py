"""Forwarding in BPF (DatapathConfig.host_routing, on by default): a packet the pod
program translated to a service backend is routed by the program (bpf_fib_lookup) and
sent from the route's interface, so the node's kernel never forwards it; it leaves with
its TTL down by one, as a forwarded packet does; and what the kernel must answer for
(a TTL that expires: ICMP time exceeded) still goes to the kernel. Untranslated traffic
(a pod to another pod's address) is forwarded by the kernel as before."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address as A

import pytest

from bpf.table import Backend, Proto, Service
from controller.lab.netns import entered as in_netns

from .conftest import CIP_REMOTE, Bench, apply, key
from .netlab import nsx, udp_ask

VIP_TTL = "10.96.0.30"
TTL_PORT = 9911
IP_RECVERR = 11
IP_RECVTTL = 12  # linux/in.h (Python's socket module has no name for it)
IP_TTL_CMSG = 2  # the cmsg type IP_RECVTTL delivers (IP_TTL)
SO_EE_ORIGIN_ICMP = 2
ICMP_TIME_EXCEEDED = 11


def forwarded(ns: str) -> int:
    """The namespace's Ip ForwDatagrams counter (packets its kernel forwarded)."""
    lines = [ln.split() for ln in nsx(ns, "cat", "/proc/net/snmp").splitlines()
             if ln.startswith("Ip:")]
    head, vals = lines[0], lines[1]
    return int(vals[head.index("ForwDatagrams")])


@pytest.fixture
def ttl_service(bench: Bench) -> Iterator[socket.socket]:
    """A UDP service whose one backend is a socket of this test in pod b21 (the second
    node) that reports each datagram's TTL."""
    b21 = bench.lab.pods["b21"]
    with in_netns(b21.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    s.bind((b21.ip, TTL_PORT))
    s.settimeout(2.0)
    table = dict(bench.table1)
    table[key(VIP_TTL, 81, Proto.UDP)] = Service(
        (Backend(A(b21.ip), TTL_PORT),),
        name="default/ttl")
    try:
        apply(bench.sync1, table)
        yield s
    finally:
        apply(bench.sync1, bench.table1)
        s.close()


def _ttl_of_next(s: socket.socket) -> int:
    _, anc, _, _ = s.recvmsg(64, socket.CMSG_SPACE(4))
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == IP_TTL_CMSG:
            return int(struct.unpack("i", data[:4])[0])
    raise AssertionError("no TTL reported")


def test_translated_packets_bypass_the_node_kernel_forwarding(bench: Bench) -> None:
    node = bench.node1
    # warm the neighbours (an unresolved next hop is left to the kernel, which resolves it)
    udp_ask(bench.client.ns, CIP_REMOTE, 80)
    udp_ask(bench.client.ns, bench.lab.pods["b21"].ip, 8080)
    n = 20
    before = forwarded(node)
    for _ in range(n):
        reply, _ = udp_ask(bench.client.ns, CIP_REMOTE, 80)  # b21 only
        assert reply.split()[0] == "b21"
    via_service = forwarded(node) - before
    before = forwarded(node)
    for _ in range(n):
        reply, _ = udp_ask(bench.client.ns, bench.lab.pods["b21"].ip, 8080)
        assert reply.split()[0] == "b21"
    direct = forwarded(node) - before
    # direct: both directions through the kernel; via the service: only the replies
    # (they come in from the uplink and are reverse-translated on the pod's veth)
    assert direct >= 2 * n
    assert n <= via_service < n + 3


def test_forwarded_in_bpf_the_ttl_drops_as_in_the_kernel(
        bench: Bench, ttl_service: socket.socket) -> None:
    b21 = bench.lab.pods["b21"]
    with in_netns(bench.client.ns):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        c.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
        c.sendto(b"via service", (VIP_TTL, 81))
        via_service = _ttl_of_next(ttl_service)
        c.sendto(b"direct", (b21.ip, TTL_PORT))
        direct = _ttl_of_next(ttl_service)
    finally:
        c.close()
    # node1 (in BPF), the ToR, node2: three hops either way
    assert direct == 61
    assert via_service == direct


def test_a_ttl_that_expires_is_answered_by_the_kernel(
        bench: Bench, ttl_service: socket.socket) -> None:
    with in_netns(bench.client.ns):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        c.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
        c.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        c.settimeout(2.0)
        c.sendto(b"expires at node1", (VIP_TTL, 81))
        _, anc, _, _ = c.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    finally:
        c.close()
    ttl_service.settimeout(0.3)
    with pytest.raises(TimeoutError):  # nothing was sent on with a TTL of 0
        ttl_service.recv(64)
    ee = [data for level, kind, data in anc if level == socket.IPPROTO_IP and kind == IP_RECVERR]
    assert ee, "no ICMP error queued"
    ee_errno, origin, icmp_type = struct.unpack("IBB", ee[0][:6])
    assert (ee_errno, origin, icmp_type) == (errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP,
                                             ICMP_TIME_EXCEEDED)


VIP_LOCAL = "10.96.0.31"


def tx_packets(ns: str, ifname: str) -> int:
    return int(nsx(ns, "cat", f"/sys/class/net/{ifname}/statistics/tx_packets"))


@pytest.fixture
def local_service(bench: Bench) -> Iterator[str]:
    """A UDP service whose one backend is pod b11, on the client's node."""
    table = dict(bench.table1)
    table[key(VIP_LOCAL, 80, Proto.UDP)] = Service(
        (Backend(A(bench.lab.pods["b11"].ip), 8080, local=True),), name="default/local")
    try:
        apply(bench.sync1, table)
        yield VIP_LOCAL
    finally:
        apply(bench.sync1, bench.table1)


def _sends_through_the_host_veth(bench: Bench, vip: str, n: int = 20) -> int:
    b11 = bench.lab.pods["b11"]
    udp_ask(bench.client.ns, vip, 80)  # neighbours resolved
    before = tx_packets(bench.node1, b11.host_if)
    for _ in range(n):
        reply, src = udp_ask(bench.client.ns, vip, 80)
        assert reply.split()[0] == "b11" and src == (vip, 80)
    return tx_packets(bench.node1, b11.host_if) - before


def test_a_translated_packet_for_a_local_pod_enters_it_directly(
        bench: Bench, local_service: str) -> None:
    # bpf_redirect_peer: the packet skips the host veth's transmit (and the backlog)
    assert _sends_through_the_host_veth(bench, local_service) <= 2
    # untranslated: the kernel forwards it, out of the host veth
    b11 = bench.lab.pods["b11"]
    before = tx_packets(bench.node1, b11.host_if)
    for _ in range(20):
        udp_ask(bench.client.ns, b11.ip, 8080)
    assert tx_packets(bench.node1, b11.host_if) - before >= 20


def test_a_pod_veth_entry_whose_mac_does_not_match_is_not_trusted(
        bench: Bench, local_service: str) -> None:
    # as if the ifindex now named another device: the packet is sent the ordinary way
    from bpf import maps as m
    from bpf.mapstore import PinnedMap

    b11 = bench.lab.pods["b11"]
    pods = PinnedMap.open(str(bench.dp1.cfg.pin_dir / "rr_pod_ifs"))
    ifindex = int(nsx(bench.node1, "cat", f"/sys/class/net/{b11.host_if}/ifindex"))
    saved = pods.lookup(ifindex.to_bytes(4, "little"))
    assert saved is not None  # attach_pod recorded it
    try:
        pods.update_batch([m.pod_if_entry(ifindex, "02:00:00:00:00:01")])
        assert _sends_through_the_host_veth(bench, local_service) >= 20
    finally:
        pods.update_batch([(ifindex.to_bytes(4, "little"), saved)])
        pods.close()
    assert _sends_through_the_host_veth(bench, local_service) <= 2
