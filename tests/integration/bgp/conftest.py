"""Fixtures for speaker integration tests: a per-test FRR ToR and node namespaces.

Topology (names start with rrb + a per-run token + a per-test counter):

    node n1 (eth0 10.55.0.11, fd55::11, lo 10.56.0.11) ─┐
    node n2 (eth0 10.55.0.12, fd55::12, lo 10.56.0.12) ─┤ br0 in the ToR namespace
                                                         └ ToR 10.55.0.1, fd55::1, lo 10.56.0.1

The ToR is FRR (zebra + bgpd, AS 65000, peer-group NODES with `remote-as external`,
`bgp listen range 10.55.0.0/24` and `fd55::/64`). Tests add explicit neighbors so the
ToR connects first to a passive speaker (gobgpd waits 5-9 s before its first connect).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

import pytest

from bgp.speaker import Speaker
from bgp.types import IPV4_UNICAST, GlobalConfig, PeerSpec
from controller.lab.frr import BgpConfig, FrrRouter, Neighbor
from controller.lab.netns import Lab, Netns, run_id, veth

TOR_ASN = 65000
_counter = itertools.count()
KINDS = ["gobgp", "exabgp"]


def need_binaries(*names: str) -> None:
    for n in names:
        if shutil.which(n) is None and not n.startswith("/"):
            pytest.skip(f"{n} is not installed on this machine")


@dataclass
class Node:
    """One node namespace with its addresses and AS number."""

    ns: Netns
    idx: int
    asn: int
    addr4: str
    addr6: str
    loopback: str
    speakers: list[Speaker] = field(default_factory=list)


@dataclass
class Topo:
    lab: Lab
    tor_ns: Netns
    tor: FrrRouter
    nodes: list[Node]
    make_speaker: Callable[..., Speaker]
    kind: str

    def tor_neighbor(self, node: Node, **kw: object) -> Neighbor:
        n = Neighbor(address=str(kw.pop("address", node.addr4)), peer_group="NODES",
                     **kw)  # type: ignore[arg-type]
        self.tor.add_neighbor(n)
        return n


def peer_spec(address: str = "10.55.0.1", **kw: object) -> PeerSpec:
    base: dict[str, object] = dict(name="tor", address=ip_address(address), peer_asn=TOR_ASN,
                                   hold_time=9, keepalive=3, connect_retry=1, passive=True,
                                   families=(IPV4_UNICAST,), restart_time=120)
    base.update(kw)
    return PeerSpec(**base)  # type: ignore[arg-type]


def global_config(node: Node, *, asn: int | None = None, listen: bool = True,
                  v6: bool = False) -> GlobalConfig:
    addrs = (ip_address(node.addr4), ip_address(node.addr6)) if v6 else ()
    return GlobalConfig(asn=asn or node.asn, router_id=ip_address(node.addr4),
                        listen_port=179 if listen else -1, listen_addresses=addrs)


def new_speaker(kind: str, node: Node, lab: Lab, state: str | None = None,
                **kw: float) -> Speaker:
    if state is None:
        state = tempfile.mkdtemp(prefix=f"rrb-{kind[:2]}-")
        lab.defer(lambda: shutil.rmtree(state, ignore_errors=True))
    s: Speaker
    if kind == "gobgp":
        need_binaries("gobgpd")
        from bgp.gobgp.adapter import GobgpSpeaker

        s = GobgpSpeaker(state, netns=node.ns.name)
    else:
        from bgp.exabgp.adapter import ExabgpSpeaker

        s = ExabgpSpeaker(state, netns=node.ns.name, **kw)
    lab.defer(s.stop)
    node.speakers.append(s)
    return s


def build_topo(kind: str, n_nodes: int, *, start_tor: bool = True, tag: str = "rrb",
               bfd: bool = False) -> Topo:
    """bfd: the ToR runs bfdd, and its NODES peer-group asks for BFD."""
    need_binaries("vtysh", "/usr/lib/frr/zebra")
    prefix = f"{tag}{run_id()}{next(_counter)}"
    lab = Lab(prefix)
    try:
        tor_ns = lab.netns("t")
        tor_ns.add_bridge("br0")
        tor_ns.add_address("br0", "10.55.0.1/24")
        tor_ns.add_address("br0", "fd55::1/64")
        tor_ns.add_address("lo", "10.56.0.1/32")
        tor_ns.sysctl("net.ipv4.ip_forward", "1")
        tor_ns.sysctl("net.ipv6.conf.all.forwarding", "1")
        nodes = []
        for i in range(1, n_nodes + 1):
            ns = lab.netns(f"n{i}")
            veth(ns, "eth0", tor_ns, f"v{i}", master="br0")
            node = Node(ns=ns, idx=i, asn=65010 + i, addr4=f"10.55.0.{10 + i}",
                        addr6=f"fd55::{10 + i}", loopback=f"10.56.0.{10 + i}")
            ns.add_address("eth0", f"{node.addr4}/24")
            ns.add_address("eth0", f"{node.addr6}/64")
            ns.add_address("lo", f"{node.loopback}/32")
            ns.add_route("default", via="10.55.0.1")
            tor_ns.add_route(f"{node.loopback}/32", via=node.addr4)
            nodes.append(node)
        tor = FrrRouter(tor_ns, BgpConfig(asn=TOR_ASN, router_id="10.55.0.1",
                                          listen_ranges=("10.55.0.0/24", "fd55::/64"),
                                          bfd=bfd), bfd=bfd)
        lab.defer(tor.close)
        if start_tor:
            tor.start()
    except BaseException:
        lab.close()
        raise
    return Topo(lab=lab, tor_ns=tor_ns, tor=tor, nodes=nodes,
                make_speaker=lambda node, state=None, **kw: new_speaker(kind, node, lab, state,
                                                                         **kw),
                kind=kind)


@contextmanager
def topology(kind: str, n_nodes: int, **kw: Any) -> Iterator[Topo]:
    """build_topo's topology, torn down on the way out whatever happened."""
    t = build_topo(kind, n_nodes, **kw)
    try:
        yield t
    finally:
        t.lab.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def topo(kind: str) -> Iterator[Topo]:
    with topology(kind, 2) as t:
        yield t


@pytest.fixture
def tor_only(kind: str) -> Iterator[Topo]:
    """A topology whose node namespace holds a speaker with no reachable peer."""
    with topology(kind, 1, start_tor=False) as t:
        yield t
