"""The sock_diag UdpSocketPort passes the same contract as the fake, on sockets in a
namespace whose only link to it is a process of a cgroup made for the test; a socket
connected to the same peer in a namespace of no process of the cgroup stays open."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.desired.sockets import Peer
from controller.kernel.udpsockets import SockDiagUdpSockets
from controller.lab.netns import entered
from tests.unit.kernel.udpsockets_contract import (
    P1,
    check_closes_exactly_the_sockets_of_the_peers,
)

CGROUP2 = Path("/sys/fs/cgroup/unified")
TAG = str(os.getpid() % 100000)


def _netns(name: str) -> None:
    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", name, *args], check=True)

    subprocess.run(["ip", "netns", "add", name], check=True)
    ip("link", "add", "d0", "type", "veth", "peer", "name", "d1")
    for dev in ("lo", "d0", "d1"):
        ip("link", "set", dev, "up")
    ip("addr", "add", "10.77.0.1/24", "dev", "d0")
    ip("addr", "add", "fd77::1/64", "dev", "d0", "nodad")


@dataclass
class RealHarness:
    port: SockDiagUdpSockets
    ns: str
    socks: list[socket.socket] = field(default_factory=list)
    seen: dict[int, bool] = field(default_factory=dict)

    def connect(self, peer: Peer, dual_stack: bool = False) -> object:
        addr, port = peer
        with entered(self.ns):
            if addr.version == 4 and not dual_stack:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.connect((str(addr), port))
            else:
                s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.connect((f"::ffff:{addr}" if addr.version == 4 else str(addr), port))
        s.setblocking(False)
        self.socks.append(s)
        return s

    def aborted(self, sock: object) -> bool:
        assert isinstance(sock, socket.socket)
        if sock.fileno() not in self.seen:  # the error is reported once: remember it
            try:
                sock.recv(64)
                self.seen[sock.fileno()] = False
            except BlockingIOError:
                return False
            except ConnectionAbortedError:
                self.seen[sock.fileno()] = True
        return self.seen[sock.fileno()]


@pytest.fixture
def harness() -> Iterator[RealHarness]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, cgroups, SOCK_DESTROY)")
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip(f"needs a cgroup v2 mount at {CGROUP2}")
    ns, other = f"rru{TAG}", f"rruo{TAG}"
    cg = CGROUP2 / f"rru{TAG}"
    proc: subprocess.Popen[bytes] | None = None
    h: RealHarness | None = None
    try:
        _netns(ns)
        _netns(other)
        cg.mkdir()
        proc = subprocess.Popen(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec ip netns '
                                 f'exec {ns} sleep 120'])
        want = os.stat(f"/run/netns/{ns}").st_ino
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the process reached the namespace
            try:
                if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == want:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        h = RealHarness(SockDiagUdpSockets(cg), ns)
        yield h
    finally:
        if h is not None:
            for s in h.socks:
                s.close()
        if proc is not None:
            proc.kill()
            proc.wait(timeout=5)
        if cg.exists():
            cg.rmdir()
        for n in (ns, other):
            subprocess.run(["ip", "netns", "del", n], check=False, capture_output=True)


def test_contract(harness: RealHarness) -> None:
    assert len(harness.port.namespaces()) == 1
    check_closes_exactly_the_sockets_of_the_peers(harness)


def test_namespaces_of_no_process_of_the_cgroup_are_left_alone(harness: RealHarness) -> None:
    outside = RealHarness(harness.port, f"rruo{TAG}")
    try:
        theirs = outside.connect(P1)
        ours = harness.connect(P1)
        assert harness.port.close_connected(frozenset({P1})) == 1
        assert harness.aborted(ours) and not outside.aborted(theirs)
    finally:
        for s in outside.socks:
            s.close()
