"""NodePort and LoadBalancer IPs from an external namespace through the uplink program."""

from __future__ import annotations

import pytest

from .conftest import EXT, LB_LOCAL, NODE1, NODE2, NP_CLUSTER, NP_LOCAL, PORT, Bench
from .netlab import tcp_ask, udp_ask


def test_nodeport_local_preserves_client_address(bench: Bench) -> None:
    replies = [tcp_ask(bench.ext, NODE1, NP_LOCAL) for _ in range(20)]
    assert {r.split()[0] for r in replies} == {"b11", "b12"}
    assert all(r.split()[1].startswith(EXT + ":") for r in replies)


def test_loadbalancer_ip_local_only_reaches_local_backends(bench: Bench) -> None:
    # b21 (node2) is a backend of this service but not local to node1: Local skips it
    replies = [tcp_ask(bench.ext, LB_LOCAL, 80) for _ in range(20)]
    assert {r.split()[0] for r in replies} <= {"b11", "b12"}
    assert all(r.split()[1].startswith(EXT + ":") for r in replies)


def test_nodeport_local_refused_on_node_without_local_endpoint(bench: Bench) -> None:
    # a host process listens on the node port of node2: only the datapath stops it
    bench.lab.serve_host(bench.node2, "node2-host", NP_LOCAL)
    bench.lab.serve_host(bench.node2, "node2-host", NP_LOCAL + 1)
    assert tcp_ask(bench.ext, NODE2, NP_LOCAL + 1, timeout=1).startswith("node2-host")
    with pytest.raises(OSError):
        tcp_ask(bench.ext, NODE2, NP_LOCAL, timeout=1)


def test_nodeport_cluster_reaches_other_node_with_snat(bench: Bench) -> None:
    for _ in range(5):
        name, peer = tcp_ask(bench.ext, NODE1, NP_CLUSTER).split()
        assert name == "b21"
        assert peer.startswith(NODE1 + ":")  # replies must come back through node1


def test_nodeport_cluster_long_connection_and_udp_local(bench: Bench) -> None:
    from .netlab import read_line, tcp_connect

    s = tcp_connect(bench.ext, NODE1, NP_CLUSTER)
    try:
        assert read_line(s).startswith("b21 ")
        for i in range(20):
            s.sendall(f"line {i}\n".encode())
            assert read_line(s) == f"b21 line {i}"
    finally:
        s.close()
    assert PORT == 8080
    reply, src = udp_ask(bench.ext, NODE1, NP_LOCAL)
    assert src == (NODE1, NP_LOCAL) and reply.split()[0] in {"b11", "b12"}


def test_loadbalancer_source_ranges_admit_only_their_clients(bench: Bench) -> None:
    """loadBalancerSourceRanges on the LB IP: the external client and the client pod are
    admitted only while a range holds them; no usable range admits nobody; the
    NodePorts and ClusterIPs of the node are not affected."""
    from dataclasses import replace
    from ipaddress import ip_network

    from .conftest import CIP, apply, key

    lb = key(LB_LOCAL, 80)
    base = bench.table1[lb]
    pod = bench.client

    def with_ranges(*nets: str | None) -> None:
        ranges = None if nets == (None,) else tuple(sorted(ip_network(n) for n in nets if n))
        apply(bench.sync1, {**bench.table1, lb: replace(base, source_ranges=ranges)})

    try:
        with_ranges(f"{EXT}/32")
        assert tcp_ask(bench.ext, LB_LOCAL, 80).split()[0] in {"b11", "b12"}
        with pytest.raises(OSError):  # the pod is outside the range: dropped
            tcp_ask(pod.ns, LB_LOCAL, 80, timeout=1)
        with_ranges("192.0.2.0/24", f"{pod.ip}/32")
        assert tcp_ask(pod.ns, LB_LOCAL, 80).split()[0] in {"b11", "b12"}
        with pytest.raises(OSError):
            tcp_ask(bench.ext, LB_LOCAL, 80, timeout=1)
        assert tcp_ask(bench.ext, NODE1, NP_LOCAL).split()[0] in {"b11", "b12"}  # NodePort
        assert tcp_ask(pod.ns, CIP, 80).split()[0] in {"b11", "b12", "b21"}  # ClusterIP
        with_ranges()  # ranges given, none usable: nobody
        with pytest.raises(OSError):
            tcp_ask(pod.ns, LB_LOCAL, 80, timeout=1)
        with_ranges(None)  # no ranges: everybody
        assert tcp_ask(bench.ext, LB_LOCAL, 80).split()[0] in {"b11", "b12"}
    finally:
        apply(bench.sync1, bench.table1)
