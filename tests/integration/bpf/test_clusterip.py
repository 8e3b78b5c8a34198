"""ClusterIP through the pod-veth program: same node and second node, TCP and UDP,
spread, removed backend, session affinity."""

from __future__ import annotations

import socket

import pytest

from .conftest import CIP, CIP_AFF, CIP_MUT, CIP_REMOTE, Bench, apply, key
from .netlab import read_line, tcp_ask, tcp_connect, udp_ask


def names(replies: list[str]) -> list[str]:
    return [r.split()[0] for r in replies]


def test_tcp_spreads_over_backends_on_both_nodes(bench: Bench) -> None:
    replies = [tcp_ask(bench.client.ns, CIP, 80) for _ in range(40)]
    assert set(names(replies)) == {"b11", "b12", "b21"}
    # no SNAT east-west: the backend sees the client pod's own address
    assert all(r.split()[1].startswith(bench.client.ip + ":") for r in replies)


def test_udp_spreads_and_replies_come_from_the_vip(bench: Bench) -> None:
    seen = set()
    for _ in range(40):
        reply, src = udp_ask(bench.client.ns, CIP, 80)
        assert src == (CIP, 80)
        seen.add(reply.split()[0])
    assert seen == {"b11", "b12", "b21"}


def test_backend_on_second_node_tcp_and_udp(bench: Bench) -> None:
    assert tcp_ask(bench.client.ns, CIP_REMOTE, 80).split()[0] == "b21"
    reply, src = udp_ask(bench.client.ns, CIP_REMOTE, 80)
    assert reply.split()[0] == "b21" and src == (CIP_REMOTE, 80)


def test_session_affinity_keeps_one_backend(bench: Bench) -> None:
    got = set(names([tcp_ask(bench.client.ns, CIP_AFF, 80) for _ in range(15)]))
    assert len(got) == 1


def test_removed_backend_gets_no_new_connections_but_established_one_continues(
        bench: Bench) -> None:
    conns: dict[str, socket.socket] = {}
    try:
        for _ in range(60):
            s = tcp_connect(bench.client.ns, CIP_MUT, 80)
            name = read_line(s).split()[0]
            if name in conns:
                s.close()
            else:
                conns[name] = s
            if len(conns) == 3:
                break
        assert set(conns) == {"b11", "b12", "b21"}
        victim = "b12"
        k = key(CIP_MUT, 80)
        svc = bench.table1[k]
        shrunk = dict(bench.table1)
        shrunk[k] = type(svc)(tuple(b for b in svc.backends
                                    if str(b.ip) != bench.lab.pods[victim].ip), name=svc.name)
        apply(bench.sync1, shrunk)
        after = set(names([tcp_ask(bench.client.ns, CIP_MUT, 80) for _ in range(30)]))
        assert victim not in after and after == {"b11", "b21"}
        conns[victim].sendall(b"still there\n")
        assert read_line(conns[victim]) == f"{victim} still there"
    finally:
        for s in conns.values():
            s.close()
        apply(bench.sync1, bench.table1)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_service_removed_from_table_is_no_longer_translated(bench: Bench, proto: str) -> None:
    vip = "10.96.0.99"
    from bpf.table import Proto, Service

    p = Proto.TCP if proto == "tcp" else Proto.UDP
    table = dict(bench.table1)
    table[key(vip, 80, p)] = Service(bench.backends("b11"))
    apply(bench.sync1, table)
    try:
        if p is Proto.TCP:
            assert tcp_ask(bench.client.ns, vip, 80).split()[0] == "b11"
        else:
            assert udp_ask(bench.client.ns, vip, 80)[0].split()[0] == "b11"
    finally:
        apply(bench.sync1, bench.table1)
    with pytest.raises(OSError):
        if p is Proto.TCP:
            tcp_ask(bench.client.ns, vip, 80, timeout=0.5)
        else:
            udp_ask(bench.client.ns, vip, 80, timeout=0.5)
