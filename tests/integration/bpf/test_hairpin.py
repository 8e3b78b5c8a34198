"""A pod that reaches itself through a service (hairpin): the per-packet path sends the
connection back into the pod with the service loopback address as its source (a packet
from the pod's own address would be refused by its kernel as a martian), and restores the
reply, which the pod sends to that address, where it leaves the pod. IPv4 and IPv6, TCP
and UDP, with forwarding in BPF and by the kernel; other clients of the same service are
untouched; an ICMP error the pod sends about such a flow is translated like its reply.
With the socket hooks, connect() and sendmsg() give the pod its own address,
and the flow never leaves it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address as A
from ipaddress import IPv6Address

import pytest

from bpf.loader import Datapath
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey

from .conftest import NODE1, TAG, Bench, key, with_entries, with_service
from .netlab import nsx, read_line, refused, tcp_connect, tx_packets, udp_ask
from .test_ipv6 import tcp6, udp6
from .test_sock import _attached, _check, _run_in
from .v6lab import PODS, Bench6

VIP_SELF = "10.96.0.40"  # b11 and b12 (TCP), b11 alone (UDP)
VIP_SOLO = "10.96.0.41"  # b11 alone
VIP6_SELF = "fd00:96::40"  # b61 alone
LOOPBACK4, LOOPBACK6 = "169.254.42.1", "100::42:1"  # DatapathConfig's defaults


@pytest.fixture
def self_service(bench: Bench) -> Iterator[str]:
    b11, b12 = bench.lab.pods["b11"], bench.lab.pods["b12"]
    both = (Backend(A(b11.ip), 8080, local=True), Backend(A(b12.ip), 8080, local=True))
    with with_entries(bench.sync1, {
            key(VIP_SELF, 80): Service(both, name="default/self"),
            key(VIP_SELF, 80, Proto.UDP): Service(both[:1], name="default/self")},
            bench.table1):
        yield VIP_SELF


def _greetings(ns: str, ip: str, port: int, n: int) -> list[tuple[str, str]]:
    """(backend, the client address it saw) for n TCP connections from ns to ip:port, each
    also echoing a line (data both ways after the handshake)."""
    seen = []
    for _ in range(n):
        s = tcp_connect(ns, ip, port)
        try:
            name, peer = read_line(s).split()
            s.sendall(b"ping\n")
            assert read_line(s) == f"{name} ping"
        finally:
            s.close()
        seen.append((name, peer.rsplit(":", 1)[0]))
    return seen


def _hairpin_and_through(bench: Bench, vip: str) -> None:
    b11 = bench.lab.pods["b11"]
    seen = _greetings(b11.ns, vip, 80, 16)
    # b11 reached itself (from the loopback address) and b12 (from b11's own address)
    assert {name for name, _ in seen} == {"b11", "b12"}, seen
    for name, peer in seen:
        assert peer == (LOOPBACK4 if name == "b11" else b11.ip), seen
    reply, src = udp_ask(b11.ns, vip, 80)
    assert reply.split()[0] == "b11" and reply.split()[1].startswith(f"{LOOPBACK4}:")
    assert src == (vip, 80)
    # another client of the service is not translated at its source
    assert {peer for _, peer in _greetings(bench.client.ns, vip, 80, 6)} == {bench.client.ip}


def test_a_pod_reaches_itself_through_its_service(bench: Bench, self_service: str) -> None:
    _hairpin_and_through(bench, self_service)


def _rp_filter(ns: str, devs: list[str], value: str) -> None:
    for dev in ["all", *devs]:
        nsx(ns, "sysctl", "-qw", f"net.ipv4.conf.{dev}.rp_filter={value}")


def test_hairpin_with_the_kernel_forwarding_and_a_strict_rp_filter(
        bench: Bench, self_service: str) -> None:
    # the hairpin packets go straight back into the pod, never through the node's
    # forwarding: a strict reverse path filter there (the loopback and the service
    # addresses route elsewhere) does not see them
    kernel = Datapath(replace(bench.dp1.cfg, host_routing=False)).load(("pod",))
    pods = [bench.lab.pods["b11"], bench.lab.pods["b12"], bench.client]
    devs = [pod.host_if for pod in pods]
    try:
        for pod in pods:
            kernel.attach_pod(pod.host_if, bench.node1)
        _rp_filter(bench.node1, devs, "1")
        _hairpin_and_through(bench, self_service)
    finally:
        _rp_filter(bench.node1, devs, "0")
        for pod in pods:
            bench.dp1.attach_pod(pod.host_if, bench.node1)
        kernel.close()


def test_a_pod_reaches_itself_through_its_own_nodeport(bench: Bench) -> None:
    # from a pod to its node's address: the NodePort entry, translated on the pod's veth
    b11 = bench.lab.pods["b11"]
    np = key(NODE1, 30111)
    with with_service(bench, np, Service((Backend(A(b11.ip), 8080, local=True),),
                                         external=True, nodeport=True, name="default/np-self")):
        assert _greetings(b11.ns, NODE1, 30111, 3) == [("b11", LOOPBACK4)] * 3


def test_a_pod_hears_that_it_refused_its_own_port_through_its_service(bench: Bench) -> None:
    # its kernel's port unreachable goes to the loopback address, about a packet from it:
    # both are restored where it leaves the pod, and the error goes back in
    b11 = bench.lab.pods["b11"]
    with with_service(bench, key(VIP_SOLO, 81, Proto.UDP),
                      Service((Backend(A(b11.ip), 9999, local=True),), name="default/shut")):
        sent = tx_packets(bench.node1, bench.uplink1)
        refused(b11.ns, VIP_SOLO, 81)
        # never out to the network (whose routes might bring it back, translated on the
        # uplink on the way): the pod's veth sent it straight back in
        assert tx_packets(bench.node1, bench.uplink1) == sent


@pytest.fixture
def solo_service(bench: Bench) -> Iterator[str]:
    """A service whose only backend is b11, TCP and UDP."""
    b11 = (Backend(A(bench.lab.pods["b11"].ip), 8080, local=True),)
    with with_entries(bench.sync1, {key(VIP_SOLO, 80, proto): Service(b11, name="default/solo")
                                    for proto in (Proto.TCP, Proto.UDP)}, bench.table1):
        yield VIP_SOLO


def test_with_socket_lb_a_pod_reaches_itself_in_its_own_namespace(
        bench: Bench, solo_service: str) -> None:
    # connect() and sendmsg() give the pod's own address: the flow never leaves the pod
    with _attached(bench.dp1, f"rrxh{TAG}") as cg:
        r = _run_in(cg, bench.lab.pods["b11"].ns, solo_service)
    _check(r, solo_service, {"b11"})
    assert json.loads(r.stdout)["greeting"].split()[1].startswith(
        f"{bench.lab.pods['b11'].ip}:")


@pytest.fixture
def self_service6(bench6: Bench6) -> Iterator[str]:
    b61 = IPv6Address(PODS["b61"][1])
    extra = {ServiceKey(IPv6Address(VIP6_SELF), 80, proto):
             Service((Backend(b61, 8080, local=True),), name="default/self6")
             for proto in (Proto.TCP, Proto.UDP)}
    extra[ServiceKey(IPv6Address(VIP6_SELF), 81, Proto.UDP)] = Service(
        (Backend(b61, 9999, local=True),), name="default/shut6")
    with with_entries(Syncer(bench6.dp.maps()), extra):
        yield VIP6_SELF


def test_ipv6_a_pod_reaches_itself_through_its_service(bench6: Bench6,
                                                       self_service6: str) -> None:
    ns = bench6.pod_ns["b61"]
    greeting, peer = tcp6(ns, self_service6, 80)
    name, seen = greeting.split()
    assert name == "b61" and seen.rsplit(":", 1)[0] == LOOPBACK6
    assert peer == (self_service6, 80)
    reply, src = udp6(ns, self_service6, 80)
    assert reply.split()[0] == "b61" and reply.split()[1].rsplit(":", 1)[0] == LOOPBACK6
    assert src == (self_service6, 80)
    refused(ns, self_service6, 81)  # b61:9999, where nobody listens
