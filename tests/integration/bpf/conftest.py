"""Session benches for the datapath: two nodes, a ToR, pods and an external client in
network namespaces, the real programs compiled once per node and attached, services
synced from a table; `bench` is IPv4, `bench6` the same shape on IPv6 (tests/…/v6lab.py).
Torn down (namespaces, pins, processes) even when tests fail."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from ipaddress import IPv4Address as A
from pathlib import Path

import pytest

from bpf.loader import Datapath, DatapathConfig
from bpf.sync import Syncer
from bpf.table import Backend, Service, ServiceKey, ServiceTable
from bpf.table import Proto as P

from . import v6lab
from .netlab import Lab, Pod, nsx

TAG = str(os.getpid())[-5:]
PIN_ROOT = Path(f"/sys/fs/bpf/rackroute-test-{os.getpid()}")
PIN_ROOT6 = Path(f"/sys/fs/bpf/rackroute-test6-{os.getpid()}")
NODE1, NODE2, EXT = "10.250.1.2", "10.250.2.2", "10.250.3.2"
CIP, CIP_AFF, CIP_REMOTE, CIP_MUT = "10.96.0.10", "10.96.0.11", "10.96.0.12", "10.96.0.13"
LB_LOCAL = "10.96.100.10"
NP_LOCAL, NP_CLUSTER = 30080, 30090
PORT = 8080


@dataclass
class Bench:
    lab: Lab
    dp1: Datapath
    dp2: Datapath
    sync1: Syncer
    sync2: Syncer
    table1: dict[ServiceKey, Service]
    table2: dict[ServiceKey, Service]
    client: Pod
    ext: str
    node1: str
    node2: str
    uplink1: str
    uplink2: str

    def backends(self, *names: str, node: str = "n1") -> tuple[Backend, ...]:
        return tuple(Backend(A(self.lab.pods[n].ip), PORT, local=self.lab.pods[n].node == node)
                     for n in names)


def key(vip: str, port: int, proto: P = P.TCP) -> ServiceKey:
    return ServiceKey(A(vip), port, proto)


def node1_table(b: Bench) -> dict[ServiceKey, Service]:
    all3 = b.backends("b11", "b12", "b21")
    return {
        key(CIP, 80): Service(all3, name="default/web"),
        key(CIP, 80, P.UDP): Service(all3, name="default/web"),
        key(CIP_AFF, 80): Service(all3, affinity_timeout=300, name="default/sticky"),
        key(CIP_REMOTE, 80): Service(b.backends("b21"), name="default/remote"),
        key(CIP_REMOTE, 80, P.UDP): Service(b.backends("b21"), name="default/remote"),
        key(CIP_MUT, 80): Service(all3, name="default/mut"),
        key(NODE1, NP_LOCAL): Service(b.backends("b11", "b12"), local_only=True, external=True,
                                      nodeport=True, name="default/np-local"),
        key(NODE1, NP_LOCAL, P.UDP): Service(b.backends("b11", "b12"), local_only=True,
                                             external=True, nodeport=True,
                                             name="default/np-local"),
        key(NODE1, NP_CLUSTER): Service(b.backends("b21"), external=True, nodeport=True,
                                        name="default/np-cluster"),
        key(LB_LOCAL, 80): Service(all3, local_only=True, external=True, name="default/lb"),
    }


def node2_table(b: Bench) -> dict[ServiceKey, Service]:
    return {
        key(NODE2, NP_LOCAL): Service(b.backends("b11", "b12", node="n2"), local_only=True,
                                      external=True, nodeport=True, name="default/np-local"),
    }


def apply(syncer: Syncer, table: ServiceTable) -> None:
    res = syncer.sync(table)
    assert not res.errors, res.errors
    assert res.programmed == frozenset(table)


@contextmanager
def with_entries(syncer: Syncer, extra: ServiceTable,
                 base: ServiceTable | None = None) -> Iterator[None]:
    """syncer's table (base, or what it has programmed) with extra's entries too for the
    body, and as it was after it."""
    table = dict(syncer.programmed() if base is None else base)
    try:
        apply(syncer, {**table, **extra})
        yield
    finally:
        apply(syncer, table)


def with_service(b: Bench, k: ServiceKey, s: Service) -> AbstractContextManager[None]:
    """Node 1's table with one more entry for the body, and as it was after it."""
    return with_entries(b.sync1, {k: s}, b.table1)


def without_backend(b: Bench, ip: str) -> None:
    """Node 1's table with the backend at ip gone from every entry."""
    apply(b.sync1, {k: replace(s, backends=tuple(x for x in s.backends if str(x.ip) != ip))
                    for k, s in b.table1.items()})


@pytest.fixture(scope="session")
def bench() -> Iterator[Bench]:
    lab = Lab(TAG)
    dps: list[Datapath] = []
    try:
        tor = lab.add_ns("T")
        n1 = lab.add_ns("N1")
        n2 = lab.add_ns("N2")
        ext = lab.add_ns("E")
        lab.link(tor, "tor1", "10.250.1.1/24", n1, "uplink", f"{NODE1}/24")
        lab.link(tor, "tor2", "10.250.2.1/24", n2, "uplink", f"{NODE2}/24")
        lab.link(tor, "tor3", "10.250.3.1/24", ext, "eth0", f"{EXT}/24")
        for ns in (tor, n1, n2):
            nsx(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nsx(n1, "ip", "route", "add", "default", "via", "10.250.1.1")
        nsx(n2, "ip", "route", "add", "default", "via", "10.250.2.1")
        nsx(ext, "ip", "route", "add", "default", "via", "10.250.3.1")
        nsx(tor, "ip", "route", "add", "10.201.1.0/24", "via", NODE1)
        nsx(tor, "ip", "route", "add", "10.201.2.0/24", "via", NODE2)
        nsx(tor, "ip", "route", "add", f"{LB_LOCAL}/32", "via", NODE1)
        client = lab.add_pod("c1", n1, "n1", "10.201.1.10")
        for name, node_ns, node, ip in (("b11", n1, "n1", "10.201.1.11"),
                                        ("b12", n1, "n1", "10.201.1.12"),
                                        ("b21", n2, "n2", "10.201.2.21")):
            lab.serve(lab.add_pod(name, node_ns, node, ip), PORT)
        dp1 = Datapath(DatapathConfig("node1", pin_root=PIN_ROOT)).load(("pod", "uplink"))
        dps.append(dp1)
        dp2 = Datapath(DatapathConfig("node2", pin_root=PIN_ROOT)).load(("pod", "uplink"))
        dps.append(dp2)
        for pod in lab.pods.values():
            if pod.node == "n1":
                dp1.attach_pod(pod.host_if, n1)
            else:
                dp2.attach_pod(pod.host_if, n2)
        dp1.attach_uplink("uplink", A(NODE1), n1)
        dp2.attach_uplink("uplink", A(NODE2), n2)
        dp1.arm_replies()
        dp2.arm_replies()
        b = Bench(lab, dp1, dp2, Syncer(dp1.maps()), Syncer(dp2.maps()), {}, {}, client,
                  ext, n1, n2, "uplink", "uplink")
        b.table1 = node1_table(b)
        b.table2 = node2_table(b)
        apply(b.sync1, b.table1)
        apply(b.sync2, b.table2)
        yield b
    finally:
        for dp in dps:
            dp.close()
        lab.teardown()
        shutil.rmtree(PIN_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def bench6() -> Iterator[v6lab.Bench6]:
    with v6lab.build(TAG, PIN_ROOT6) as b:
        yield b
