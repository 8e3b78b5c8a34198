"""ICMP errors about translated flows reach the client's socket, as the kernel's NAT
makes them: the embedded packet's destination (and the error's source, when the backend
itself answered) get the service address back on the client's veth. Checked with a
connected UDP socket, which only accepts an error whose embedded packet names its peer:
a backend without a listener (port unreachable: ECONNREFUSED) and a path MTU smaller
than the client's (fragmentation needed: EMSGSIZE on the next send, and the socket's
path MTU learnt), IPv4 and IPv6; a TCP transfer through such a path completes; and an
outside client of a SNAT'd NodePort hears of a refused port too, on either family."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address as A
from ipaddress import IPv6Address

import pytest

from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey
from controller.lab.netns import entered as in_netns

from .conftest import CIP_REMOTE, NODE1, Bench, key, with_entries, with_service
from .netlab import nsx, read_line, refused, tcp_connect, udp_ask
from .test_ipv6 import udp6
from .v6lab import NODE1_UP, PODS, Bench6
from .v6lab import VIP as VIP6

VIP_CLOSED = "10.96.0.40"  # UDP 81 -> b11:9999, where nothing listens
IP_MTU = 14
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2


@pytest.fixture
def closed_port(bench: Bench) -> Iterator[str]:
    with with_service(bench, key(VIP_CLOSED, 81, Proto.UDP), Service(
            (Backend(A(bench.lab.pods["b11"].ip), 9999, local=True),), name="default/closed")):
        yield VIP_CLOSED


@pytest.fixture
def narrow_path(bench: Bench) -> Iterator[int]:
    """Node 1's route to b21 (the backend of CIP_REMOTE) with an MTU of 1300, locked: the
    kernel's FIB lookup for BPF reads a route's MTU only then (its own forwarding
    always does)."""
    b21 = bench.lab.pods["b21"].ip
    nsx(bench.node1, "ip", "route", "add", f"{b21}/32", "via", "10.250.1.1", "dev",
        bench.uplink1, "mtu", "lock", "1300")
    try:
        yield 1300
    finally:
        nsx(bench.node1, "ip", "route", "del", f"{b21}/32")
        nsx(bench.client.ns, "ip", "route", "flush", "cache")


def test_a_refused_port_behind_a_service_is_reported_to_the_client(
        bench: Bench, closed_port: str) -> None:
    refused(bench.client.ns, closed_port, 81)


def test_fragmentation_needed_behind_a_service_reaches_the_client(
        bench: Bench, narrow_path: int) -> None:
    # node 1 would forward it itself (host routing) but for the route's MTU: the kernel
    # refuses it and answers
    udp_ask(bench.client.ns, CIP_REMOTE, 80)  # neighbours resolved
    with in_netns(bench.client.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        s.connect((CIP_REMOTE, 80))
        s.send(bytes(1400))  # fits the client's 1500, not node 1's route
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # the error comes back
            if s.getsockopt(socket.IPPROTO_IP, IP_MTU) == narrow_path:
                break
            time.sleep(0.02)
        assert s.getsockopt(socket.IPPROTO_IP, IP_MTU) == narrow_path
        with pytest.raises(OSError) as e:
            s.send(bytes(1400))
        assert e.value.errno == errno.EMSGSIZE
    finally:
        s.close()


def test_tcp_through_a_narrower_path_behind_a_service_completes(
        bench: Bench, narrow_path: int) -> None:
    # path MTU discovery: without the translated errors the client's segments (GSO
    # packets, judged by their segments' size) would be dropped at node 1 for as long as
    # it retries
    udp_ask(bench.client.ns, CIP_REMOTE, 80)  # neighbours resolved
    s = tcp_connect(bench.client.ns, CIP_REMOTE, 80, timeout=5.0)
    try:
        assert read_line(s).split()[0] == "b21"
        line = "x" * 60000
        s.sendall(line.encode() + b"\n")
        assert read_line(s) == f"b21 {line}"
    finally:
        s.close()


IPV6_MTU_DISCOVER, IPV6_MTU, IPV6_PMTUDISC_DO = 23, 24, 2


@pytest.fixture
def narrow_path6(bench6: Bench6) -> Iterator[int]:
    """Node 1's routes to the ClusterIP's two (local) backends with an MTU of 1300,
    locked (see narrow_path)."""
    routes = [(PODS[name][1], host_if) for name, host_if in (("b61", "rrx6b61h"),
                                                             ("b62", "rrx6b62h"))]
    for ip, dev in routes:
        nsx(bench6.node, "ip", "-6", "route", "replace", f"{ip}/128", "dev", dev, "mtu", "lock",
            "1300")
    try:
        yield 1300
    finally:
        for ip, dev in routes:
            nsx(bench6.node, "ip", "-6", "route", "replace", f"{ip}/128", "dev", dev)
        nsx(bench6.client, "ip", "-6", "route", "flush", "cache")


def test_ipv6_packet_too_big_behind_a_service_reaches_the_client(
        bench6: Bench6, narrow_path6: int) -> None:
    udp6(bench6.client, VIP6, 80)  # neighbours resolved
    udp6(bench6.client, VIP6, 80)
    with in_netns(bench6.client):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        s.connect((VIP6, 80))
        s.send(bytes(1400))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU) == narrow_path6:
                break
            time.sleep(0.02)
        assert s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU) == narrow_path6
    finally:
        s.close()


NP_CLOSED = 30099  # UDP NodePort on node 1, Cluster policy -> b21:9999 (SNAT'd)


@pytest.fixture
def closed_nodeport(bench: Bench) -> Iterator[int]:
    with with_service(bench, key(NODE1, NP_CLOSED, Proto.UDP), Service(
            (Backend(A(bench.lab.pods["b21"].ip), 9999),), external=True, nodeport=True,
            name="default/np-closed")):
        yield NP_CLOSED


def test_a_refused_port_behind_a_snatd_nodeport_is_reported_to_the_outside_client(
        bench: Bench, closed_nodeport: int) -> None:
    # the backend's error comes back to node 1's address (the flow's SNAT source): the
    # uplink gives it the client's and the service's addresses and sends it on
    refused(bench.ext, NODE1, closed_nodeport)


NP6_CLOSED = 30098  # UDP NodePort on node 1's IPv6 address, Cluster -> b63:9999 (SNAT'd)


@pytest.fixture
def closed_nodeport6(bench6: Bench6) -> Iterator[int]:
    with with_entries(Syncer(bench6.dp.maps()), {
            ServiceKey(IPv6Address(NODE1_UP), NP6_CLOSED, Proto.UDP): Service(
                (Backend(IPv6Address(PODS["b63"][1]), 9999),), external=True, nodeport=True,
                name="default/np6-closed")}):
        yield NP6_CLOSED


def test_ipv6_refused_port_behind_a_snatd_nodeport_is_reported_to_the_outside_client(
        bench6: Bench6, closed_nodeport6: int) -> None:
    refused(bench6.ext, NODE1_UP, closed_nodeport6)
