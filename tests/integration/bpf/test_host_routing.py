"""Forwarding in BPF (DatapathConfig.host_routing, on by default): a packet leaving a pod
(translated to a service backend or not) is routed by the program (bpf_fib_lookup) and
sent from the route's interface, so the node's kernel never forwards it; it leaves with
its TTL down by one, as a forwarded packet does; what the kernel must answer for (a TTL
that expires: ICMP time exceeded) still goes to the kernel. A packet for a pod of the
node enters it directly (bpf_redirect_peer; the host veth never transmits it), a reply
leaving a backend pod is reverse-translated there, at its source, also when the client's
neighbour is still to be resolved (bpf_redirect_neigh resolves it). With host_routing
off, the kernel forwards both ways, and replies are translated on the client's veth."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address as A

import pytest

from bpf.table import Backend, Proto, Service
from controller.lab.netns import entered as in_netns

from .conftest import CIP_REMOTE, LB_LOCAL, NODE1, NP_LOCAL, Bench, key, with_service
from .netlab import forwarded, nsx, read_line, tcp_connect, tx_packets, udp_ask
from .test_ipv6 import udp6
from .v6lab import VIP as VIP6
from .v6lab import Bench6

VIP_TTL = "10.96.0.30"
TTL_PORT = 9911
IP_RECVERR = 11
IP_RECVTTL = 12  # linux/in.h (Python's socket module has no name for it)
IP_TTL_CMSG = 2  # the cmsg type IP_RECVTTL delivers (IP_TTL)
SO_EE_ORIGIN_ICMP = 2
ICMP_TIME_EXCEEDED = 11


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
    try:
        with with_service(bench, key(VIP_TTL, 81, Proto.UDP),
                          Service((Backend(A(b21.ip), TTL_PORT),), name="default/ttl")):
            yield s
    finally:
        s.close()


def _ttl_of_next(s: socket.socket) -> int:
    _, anc, _, _ = s.recvmsg(64, socket.CMSG_SPACE(4))
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == IP_TTL_CMSG:
            return int(struct.unpack("i", data[:4])[0])
    raise AssertionError("no TTL reported")


def _forwarded_over(bench: Bench, ip: str, port: int, n: int = 20,
                    sport: int = 23000) -> tuple[int, int, int]:
    """(node1's, node2's kernel forwards, the client's host veth transmits) over n UDP
    asks to ip (b21 answers), from source ports sport...sport+n (_ask_from)."""
    _ask_from(bench.client.ns, ip, port, sport)  # neighbours resolved
    before = (forwarded(bench.node1), forwarded(bench.node2),
              tx_packets(bench.node1, bench.client.host_if))
    for i in range(n):
        reply, src = _ask_from(bench.client.ns, ip, port, sport + 1 + i)
        assert reply.split()[0] == "b21" and src == (ip, port)
    return (forwarded(bench.node1) - before[0], forwarded(bench.node2) - before[1],
            tx_packets(bench.node1, bench.client.host_if) - before[2])


def test_pod_traffic_across_nodes_bypasses_the_kernels_forwarding_both_ways(
        bench: Bench) -> None:
    # through a service or not: a pod's packets are forwarded by its node's program; at
    # the other node the uplink program hands them into the pod; the replies likewise,
    # the service's reply restored on node 1's uplink and handed into the client
    for ip, port, sport in ((CIP_REMOTE, 80, 23000), (bench.lab.pods["b21"].ip, 8080, 23100)):
        node1, node2, to_client = _forwarded_over(bench, ip, port, sport=sport)
        assert node1 <= 2 and node2 <= 2 and to_client <= 2, (ip, node1, node2, to_client)


def test_with_kernel_host_routing_the_kernel_forwards_both_ways(bench: Bench) -> None:
    from dataclasses import replace

    from bpf.loader import Datapath

    kernel = Datapath(replace(bench.dp1.cfg, host_routing=False)).load(("pod", "uplink"))
    try:
        kernel.attach_pod(bench.client.host_if, bench.node1)
        kernel.attach_uplink(bench.uplink1, A(NODE1), bench.node1)
        node1, _, _ = _forwarded_over(bench, CIP_REMOTE, 80, sport=23200)
        assert node1 >= 40
    finally:
        bench.dp1.attach_pod(bench.client.host_if, bench.node1)
        bench.dp1.attach_uplink(bench.uplink1, A(NODE1), bench.node1)
        kernel.close()
    assert _forwarded_over(bench, CIP_REMOTE, 80, sport=23300)[0] <= 2


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


@pytest.fixture
def via_inet6(bench: Bench) -> Iterator[None]:
    """Node 1 reaches node 2's pod CIDR through the ToR's IPv6 address (`via inet6`, as
    a route learned over RFC 8950 is installed): bpf_fib_lookup then answers for the
    IPv4 packet with an IPv6 next hop, and fib.family AF_INET6."""
    tor, n1 = bench.lab.ns("T"), bench.node1
    nsx(tor, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    nsx(tor, "ip", "-6", "addr", "add", "fd00:250:1::1/64", "dev", "tor1", "nodad")
    nsx(n1, "ip", "-6", "addr", "add", "fd00:250:1::2/64", "dev", "uplink", "nodad")
    nsx(n1, "ip", "route", "add", "10.201.2.0/24", "via", "inet6", "fd00:250:1::1")
    try:
        yield
    finally:
        nsx(n1, "ip", "route", "del", "10.201.2.0/24")
        nsx(n1, "ip", "-6", "addr", "del", "fd00:250:1::2/64", "dev", "uplink")
        nsx(tor, "ip", "-6", "addr", "del", "fd00:250:1::1/64", "dev", "tor1")


def test_an_ipv4_route_through_an_ipv6_gateway_is_forwarded_in_bpf(
        bench: Bench, ttl_service: socket.socket, via_inet6: None) -> None:
    assert "via inet6 fd00:250:1::1" in nsx(bench.node1, "ip", "route", "get", "10.201.2.21")
    b21 = bench.lab.pods["b21"]
    with in_netns(bench.client.ns):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        c.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
        for payload, to in ((b"via service", (VIP_TTL, 81)), (b"direct", (b21.ip, TTL_PORT))):
            c.sendto(payload, to)
            assert _ttl_of_next(ttl_service) == 61  # the IPv4 TTL down by one at node1
    finally:
        c.close()
    # still sent by node1's program, not its kernel, both ways
    for ip, port, sport in ((CIP_REMOTE, 80, 24000), (b21.ip, 8080, 24100)):
        node1, node2, to_client = _forwarded_over(bench, ip, port, sport=sport)
        assert node1 <= 2 and node2 <= 2 and to_client <= 2, (ip, node1, node2, to_client)


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


@pytest.fixture
def local_service(bench: Bench) -> Iterator[str]:
    """A UDP service whose one backend is pod b11, on the client's node."""
    with with_service(bench, key(VIP_LOCAL, 80, Proto.UDP), Service(
            (Backend(A(bench.lab.pods["b11"].ip), 8080, local=True),), name="default/local")):
        yield VIP_LOCAL


def _ask_from(ns: str, ip: str, port: int, sport: int) -> tuple[str, tuple[str, int]]:
    """udp_ask from a fixed source port: below the ephemeral range, so no earlier flow
    through a service (whose live reply entry would claim the backend's answer, as the
    kernel's conntrack would without its NAT clash handling) used it."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", sport))
        s.settimeout(2.0)
        s.sendto(b"hi", (ip, port))
        data, addr = s.recvfrom(2048)
        return data.decode(), addr
    finally:
        s.close()


def _sends_through_the_host_veth(bench: Bench, vip: str, n: int = 20, port: int = 80,
                                 sport: int = 20000) -> tuple[int, int]:
    """(b11's host veth, the client's host veth) transmit counts over n UDP asks from
    source ports sport...sport+n."""
    b11, c1 = bench.lab.pods["b11"], bench.client
    _ask_from(c1.ns, vip, port, sport)  # neighbours resolved
    before = (tx_packets(bench.node1, b11.host_if), tx_packets(bench.node1, c1.host_if))
    for i in range(n):
        reply, src = _ask_from(c1.ns, vip, port, sport + 1 + i)
        assert reply.split()[0] == "b11" and src == (vip, port)
    return (tx_packets(bench.node1, b11.host_if) - before[0],
            tx_packets(bench.node1, c1.host_if) - before[1])


def test_a_service_flow_between_two_local_pods_never_crosses_the_host_veths(
        bench: Bench, local_service: str) -> None:
    # bpf_redirect_peer both ways: the request after its DNAT, the reply after its
    # reverse NAT at its source (b11's veth): each enters the other pod directly
    to_backend, to_client = _sends_through_the_host_veth(bench, local_service)
    assert to_backend <= 2 and to_client <= 2


def test_pod_to_pod_on_one_node_never_crosses_the_host_veths(bench: Bench) -> None:
    to_backend, to_client = _sends_through_the_host_veth(
        bench, bench.lab.pods["b11"].ip, port=8080, sport=21000)
    assert to_backend <= 2 and to_client <= 2


def test_a_reply_to_a_client_whose_neighbour_is_unresolved_is_still_forwarded_in_bpf(
        bench: Bench, local_service: str) -> None:
    # no neighbour entry for the client: the reply is restored at its source and sent
    # through the neighbour subsystem (bpf_redirect_neigh), which resolves the client;
    # it leaves through the client's veth, and the kernel never forwards it
    c1 = bench.client
    udp_ask(c1.ns, local_service, 80)
    nsx(bench.node1, "ip", "neigh", "flush", "dev", c1.host_if)
    before = (tx_packets(bench.node1, c1.host_if), forwarded(bench.node1))
    reply, src = udp_ask(c1.ns, local_service, 80)
    assert reply.split()[0] == "b11" and src == (local_service, 80)
    assert tx_packets(bench.node1, c1.host_if) - before[0] >= 1
    assert forwarded(bench.node1) == before[1]


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
        assert _sends_through_the_host_veth(bench, local_service)[0] >= 20
    finally:
        pods.update_batch([(ifindex.to_bytes(4, "little"), saved)])
        pods.close()
    assert _sends_through_the_host_veth(bench, local_service)[0] <= 2


def test_ipv6_service_flows_between_local_pods_never_cross_the_host_veths(
        bench6: Bench6) -> None:
    host_ifs = ["rrx6c6h", "rrx6b61h", "rrx6b62h"]

    def tx() -> list[int]:
        return [tx_packets(bench6.node, i) for i in host_ifs]

    udp6(bench6.client, VIP6, 80)  # neighbours resolved
    udp6(bench6.client, VIP6, 80)
    before = tx()
    seen = set()
    for _ in range(40):  # about 20 to each backend
        reply, src = udp6(bench6.client, VIP6, 80)
        assert src == (VIP6, 80)
        seen.add(reply.split()[0])
    assert seen == {"b61", "b62"}
    sent = [after - b for after, b in zip(tx(), before, strict=True)]
    # a few neighbour probes (IPv6 ND) may leave; no datagram does
    assert all(n <= 5 for n in sent), dict(zip(host_ifs, sent, strict=True))


@contextmanager
def _route_only(bench: Bench) -> Iterator[None]:
    """Node 1's pods with the programs an agent attaches without per-packet LB (the
    socket hooks balance new flows): the ingress program alone; as before afterwards."""
    from dataclasses import replace

    from bpf.loader import Datapath

    pods = [bench.client, bench.lab.pods["b11"], bench.lab.pods["b12"]]
    dp = Datapath(replace(bench.dp1.cfg, per_packet_lb=False)).load(("pod",))
    try:
        for pod in pods:
            dp.attach_pod(pod.host_if, bench.node1)
            assert "bpf" not in nsx(bench.node1, "tc", "filter", "show", "dev", pod.host_if,
                                    "egress")
        yield
    finally:
        for pod in pods:
            bench.dp1.attach_pod(pod.host_if, bench.node1)
        dp.close()


@pytest.fixture
def route_only(bench: Bench) -> Iterator[None]:
    with _route_only(bench):
        yield


def test_without_per_packet_lb_pods_still_forward_in_bpf(bench: Bench, route_only: None,
                                                        local_service: str) -> None:
    # pod to pod: each packet enters the other pod directly
    to_backend, to_client = _sends_through_the_host_veth(
        bench, bench.lab.pods["b11"].ip, port=8080, sport=22000)
    assert to_backend <= 2 and to_client <= 2
    # across nodes: neither node's kernel forwards, either way
    node1, node2, to_client = _forwarded_over(bench, bench.lab.pods["b21"].ip, 8080,
                                              sport=23400)
    assert node1 <= 2 and node2 <= 2 and to_client <= 2
    # a service address is the socket hooks' to translate, not this program's
    with pytest.raises(OSError):
        udp_ask(bench.client.ns, local_service, 80, timeout=0.5)


def test_without_per_packet_lb_a_backends_reply_is_reverse_translated_at_its_source(
        bench: Bench, route_only: None) -> None:
    # a NodePort flow the uplink sent to b11 or b12: the reply leaves the pod with the
    # node's address and port back on it, routed by the program (not by the kernel)
    udp_ask(bench.ext, NODE1, NP_LOCAL)  # neighbours resolved
    before = forwarded(bench.node1)
    for _ in range(20):
        reply, src = udp_ask(bench.ext, NODE1, NP_LOCAL)
        assert reply.split()[0] in {"b11", "b12"} and src == (NODE1, NP_LOCAL)
    assert forwarded(bench.node1) - before <= 2


def test_flows_translated_before_per_packet_lb_is_switched_off_keep_going(
        bench: Bench) -> None:
    # the agent restarted with --per-packet-lb off: connections the pod programs balanced
    # keep their backend and their translation, to a remote backend (replies restored on
    # the uplink) and to local ones (restored where they leave the backend); a new flow is
    # left to the socket hooks (test_without_per_packet_lb_pods_still_forward_in_bpf)
    conns = [tcp_connect(bench.client.ns, ip, 80) for ip in (CIP_REMOTE, LB_LOCAL)]
    try:
        names = [read_line(s).split()[0] for s in conns]
        assert names[0] == "b21" and names[1] in {"b11", "b12"}
        with _route_only(bench):
            for i in range(4):
                if i == 2:  # no egress program is left to restore a reply the programs
                    # could not route: a client still to resolve is resolved for them
                    nsx(bench.node1, "ip", "neigh", "flush", "dev", bench.client.host_if)
                for s, name in zip(conns, names, strict=True):
                    s.sendall(f"line{i}\n".encode())
                    assert read_line(s) == f"{name} line{i}"
    finally:
        for s in conns:
            s.close()
