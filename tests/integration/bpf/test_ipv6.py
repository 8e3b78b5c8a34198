"""IPv6 service load balancing: a client pod reaches a ClusterIP on fd… addresses over
TCP and UDP through the pod-veth program (the backend names itself, the reply comes
from the VIP), and an external client reaches a Local-policy LoadBalancer IP through
the uplink program with its own address preserved. One node and its own namespaces
(rrx6…), programs and pins; all removed even when a step fails."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from bpf.loader import Datapath, DatapathConfig
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey

from .netlab import ECHO, Lab, in_netns, nsx, read_line, sh

PIN_ROOT = Path(f"/sys/fs/bpf/rackroute-test6-{os.getpid()}")
TAG = str(os.getpid())[-5:]
VIP = "fd00:96::10"
LB_VIP = "fd00:96:100::10"
NODE_UP, EXT_UP = "fd00:250::1", "fd00:250::2"
PODS = {"c6": "fd00:201::10", "b61": "fd00:201::11", "b62": "fd00:201::12"}
PORT = 8080


@dataclass
class Bench6:
    lab: Lab
    node: str
    ext: str
    client: str
    backends: dict[str, str]  # name -> address


def _ns(lab: Lab, short: str) -> str:
    name = f"rrx6{short}{lab.tag}"[:15]
    sh("ip", "netns", "add", name)
    lab.namespaces.append(name)
    nsx(name, "ip", "link", "set", "lo", "up")
    return name


def _addr(ns: str, ifname: str, cidr: str) -> None:
    nsx(ns, "ip", "-6", "addr", "add", cidr, "dev", ifname, "nodad")


def _pod(lab: Lab, node: str, name: str, ip: str) -> tuple[str, str]:
    ns = _ns(lab, name)
    host_if = f"rrx6{name}h"
    sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", host_if,
       "netns", node)
    _addr(ns, "eth0", f"{ip}/128")
    nsx(ns, "ip", "link", "set", "eth0", "up")
    nsx(node, "ip", "link", "set", host_if, "up")
    _addr(node, host_if, "fe80::1/64")
    nsx(ns, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    nsx(node, "ip", "-6", "route", "add", f"{ip}/128", "dev", host_if)
    return ns, host_if


def _serve6(lab: Lab, ns: str, name: str) -> None:
    """The echo server on IPv6 inside ns, stopped by lab.teardown()."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(ECHO), name,
                          str(PORT), "6"], stdout=subprocess.PIPE, text=True)
    lab.procs.append(p)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "listening":
        raise RuntimeError(f"server in {ns} did not start")


@pytest.fixture(scope="module")
def bench6() -> Iterator[Bench6]:
    lab = Lab(TAG)
    dp: Datapath | None = None
    try:
        node = _ns(lab, "N")
        ext = _ns(lab, "E")
        nsx(node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        sh("ip", "link", "add", "uplink", "netns", node, "type", "veth", "peer", "eth0",
           "netns", ext)
        _addr(node, "uplink", f"{NODE_UP}/64")
        _addr(ext, "eth0", f"{EXT_UP}/64")
        nsx(node, "ip", "link", "set", "uplink", "up")
        nsx(ext, "ip", "link", "set", "eth0", "up")
        nsx(ext, "ip", "-6", "route", "add", "fd00:96:100::/64", "via", NODE_UP)
        host_ifs = {}
        names = {}
        for name, ip in PODS.items():
            names[name], host_ifs[name] = _pod(lab, node, name, ip)
        for name in ("b61", "b62"):
            _serve6(lab, names[name], name)
        dp = Datapath(DatapathConfig("v6", pin_root=PIN_ROOT)).load(("pod", "uplink"))
        for host_if in host_ifs.values():
            dp.attach_pod(host_if, node)
        dp.attach_uplink("uplink", IPv4Address("10.250.9.1"), node)
        bes = tuple(Backend(IPv6Address(PODS[n]), PORT, local=True) for n in ("b61", "b62"))
        table = {ServiceKey(IPv6Address(VIP), 80, Proto.TCP): Service(bes, name="v6/web"),
                 ServiceKey(IPv6Address(VIP), 80, Proto.UDP): Service(bes, name="v6/web"),
                 ServiceKey(IPv6Address(LB_VIP), 80, Proto.TCP):
                     Service(bes, local_only=True, external=True, name="v6/lb"),
                 ServiceKey(IPv6Address(LB_VIP), 80, Proto.UDP):
                     Service(bes, local_only=True, external=True, name="v6/lb")}
        res = Syncer(dp.maps()).sync(table)
        assert not res.errors, res.errors
        assert res.programmed == frozenset(table)
        yield Bench6(lab, node, ext, names["c6"], {n: PODS[n] for n in ("b61", "b62")})
    finally:
        if dp is not None:
            dp.close()
        lab.teardown()
        shutil.rmtree(PIN_ROOT, ignore_errors=True)


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
        assert client.rsplit(":", 1)[0] == PODS["c6"]  # no SNAT east-west
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
        assert client.rsplit(":", 1)[0] == PODS["c6"]
        seen.add(name)
    assert seen == set(bench6.backends)


def test_not_a_service_is_left_alone(bench6: Bench6) -> None:
    greeting, peer = tcp6(bench6.client, PODS["b61"], PORT)
    assert greeting.split()[0] == "b61" and peer == (PODS["b61"], PORT)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ipv6_loadbalancer_local_through_the_uplink_keeps_the_client(bench6: Bench6,
                                                                     proto: str) -> None:
    ask = tcp6 if proto == "tcp" else udp6
    reply, src = ask(bench6.ext, LB_VIP, 80)
    name, client = reply.split()
    assert name in bench6.backends
    assert client.rsplit(":", 1)[0] == EXT_UP  # Local: the client address is preserved
    assert src == (LB_VIP, 80)
