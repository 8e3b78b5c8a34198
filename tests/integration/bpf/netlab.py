"""Network-namespace test bench: nodes joined by a routed underlay (a ToR namespace),
pods on veths, an external client; sockets opened inside any namespace by this process.
Everything it creates is named rrx<tag>… and removed by teardown()."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.lab.netns import entered as in_netns

ECHO = Path(__file__).with_name("echo_server.py")


def sh(*args: str) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def nsx(ns: str, *args: str) -> str:
    return sh("ip", "netns", "exec", ns, *args)


def forwarded(ns: str) -> int:
    """The namespace's Ip ForwDatagrams counter (packets its kernel forwarded)."""
    lines = [ln.split() for ln in nsx(ns, "cat", "/proc/net/snmp").splitlines()
             if ln.startswith("Ip:")]
    head, vals = lines[0], lines[1]
    return int(vals[head.index("ForwDatagrams")])


def tx_packets(ns: str, ifname: str) -> int:
    return int(nsx(ns, "cat", f"/sys/class/net/{ifname}/statistics/tx_packets"))




def tcp_connect(ns: str, ip: str, port: int, timeout: float = 2.0) -> socket.socket:
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((ip, port))
    return s


def read_line(s: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(256)
        if not chunk:
            break
        buf += chunk
    return buf.decode().strip()


def tcp_ask(ns: str, ip: str, port: int, timeout: float = 2.0) -> str:
    """Connect, return the backend's greeting "<name> <peer>"."""
    s = tcp_connect(ns, ip, port, timeout)
    try:
        return read_line(s)
    finally:
        s.close()


def udp_ask(ns: str, ip: str, port: int, timeout: float = 2.0) -> tuple[str, tuple[str, int]]:
    """One datagram; returns (reply, address the reply came from)."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(b"hi", (ip, port))
        data, addr = s.recvfrom(2048)
        return data.decode(), addr
    finally:
        s.close()


@dataclass
class Pod:
    name: str
    ns: str
    host_if: str
    ip: str
    node: str


@dataclass
class Lab:
    tag: str
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    pods: dict[str, Pod] = field(default_factory=dict)

    def ns(self, short: str) -> str:
        return f"rrx{short}{self.tag}"[:15]

    def add_ns(self, short: str) -> str:
        name = self.ns(short)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        nsx(name, "ip", "link", "set", "lo", "up")
        for k in ("all", "default"):
            nsx(name, "sysctl", "-qw", f"net.ipv4.conf.{k}.rp_filter=0")
        return name

    def link(self, a: str, a_if: str, a_ip: str, b: str, b_if: str, b_ip: str) -> None:
        """A veth between namespaces a and b with /24 addresses."""
        sh("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", b_if, "netns", b)
        for ns, ifn, ip in ((a, a_if, a_ip), (b, b_if, b_ip)):
            nsx(ns, "ip", "addr", "add", ip, "dev", ifn)
            nsx(ns, "ip", "link", "set", ifn, "up")

    def add_pod(self, name: str, node_ns: str, node: str, ip: str) -> Pod:
        ns = self.add_ns(name)
        host_if = f"rrx{name}h"
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", host_if,
           "netns", node_ns)
        nsx(ns, "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
        nsx(ns, "ip", "link", "set", "eth0", "up")
        nsx(ns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        nsx(ns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        nsx(node_ns, "ip", "link", "set", host_if, "up")
        nsx(node_ns, "sysctl", "-qw", f"net.ipv4.conf.{host_if}.proxy_arp=1")
        nsx(node_ns, "sysctl", "-qw", f"net.ipv4.conf.{host_if}.rp_filter=0")
        nsx(node_ns, "ip", "route", "add", f"{ip}/32", "dev", host_if, "scope", "link")
        pod = Pod(name, ns, host_if, ip, node)
        self.pods[name] = pod
        return pod

    def serve(self, pod: Pod, port: int) -> None:
        self.serve_host(pod.ns, pod.name, port)

    def serve_host(self, ns: str, name: str, port: int) -> None:
        """Start the echo server named name on port inside ns."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(ECHO),
                              name, str(port)], stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None
        if p.stdout.readline().strip() != "listening":
            raise RuntimeError(f"server in {ns} did not start")

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()


def refused(ns: str, ip: str, port: int) -> None:
    """A connected UDP socket in ns hears that nobody listens behind ip:port."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(2.0)
        s.connect((ip, port))
        s.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            s.recv(64)
    finally:
        s.close()
