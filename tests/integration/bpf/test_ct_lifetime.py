"""Conntrack lifetimes, with BPF_PROG_TEST_RUN on the pod program: an entry idle for longer
than its lifetime is a miss (a UDP flow after ct_udp_lifetime, a TCP flow after its FIN
once ct_close_lifetime has passed), while one in use stays, a UDP reply entry included
while its client keeps the flow's forward entry in use. Lifetimes of a second here;
the datapath counts them in the running kernel's jiffies (CONFIG_HZ, read by the loader)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpf.loader import Datapath, kernel_hz

from .test_checksums import BE4, VIP4, _run, one_node, packet, parse

SYN, ACK, FIN = 0x02, 0x10, 0x01
CLIENT = "10.1.9.9"


@pytest.fixture(scope="module")
def dp() -> Iterator[Datapath]:
    with one_node("ctlife", ct_udp_lifetime=1, ct_close_lifetime=1, ct_tcp_lifetime=3) as d:
        yield d


def reply_source(dp: Datapath, proto: int, port: int, flags: int = ACK) -> tuple[str, int]:
    out = _run(dp.fds["rr_pod_egress"], packet(BE4, CLIENT, proto, 8080, port, b"x",
                                               flags=flags))
    s, _, sp, _, _ = parse(out)
    return s, sp


def send(dp: Datapath, proto: int, port: int, flags: int = ACK) -> tuple[str, int]:
    out = _run(dp.fds["rr_pod_ingress"], packet(CLIENT, VIP4, proto, port, 80, b"x",
                                                flags=flags))
    _, d, _, dport, _ = parse(out)
    return d, dport


def test_an_idle_udp_flow_expires_and_a_busy_one_stays(dp: Datapath) -> None:
    assert send(dp, 17, 42001) == (BE4, 8080)
    assert send(dp, 17, 42002) == (BE4, 8080)
    assert reply_source(dp, 17, 42001) == (VIP4, 80)
    for _ in range(3):  # 42002 busy: a packet every 0.6 s; 42001 idle
        time.sleep(0.6)
        assert reply_source(dp, 17, 42002) == (VIP4, 80)
    assert reply_source(dp, 17, 42001) == (BE4, 8080)  # expired: left alone
    assert send(dp, 17, 42001) == (BE4, 8080)          # a new packet makes a new flow
    assert reply_source(dp, 17, 42001) == (VIP4, 80)


def test_a_udp_flow_whose_client_keeps_sending_keeps_its_rare_replies(dp: Datapath) -> None:
    # the reply entry outlives its lifetime while the client's packets keep the forward
    # entry alive: a late reply is still the service's (one flow, as in the kernel)
    assert send(dp, 17, 42004) == (BE4, 8080)
    for _ in range(3):
        time.sleep(0.6)
        assert send(dp, 17, 42004) == (BE4, 8080)
    assert reply_source(dp, 17, 42004) == (VIP4, 80)
    time.sleep(1.6)  # now both directions idle past the lifetime: the flow is gone
    assert reply_source(dp, 17, 42004) == (BE4, 8080)


def test_a_tcp_flow_outlives_the_udp_lifetime_but_not_its_close(dp: Datapath) -> None:
    assert send(dp, 6, 42003, SYN) == (BE4, 8080)
    time.sleep(1.6)  # past the UDP and close lifetimes, within the TCP one
    assert reply_source(dp, 6, 42003) == (VIP4, 80)
    assert send(dp, 6, 42003, FIN | ACK) == (BE4, 8080)
    assert reply_source(dp, 6, 42003) == (VIP4, 80)   # closing, still translated
    time.sleep(1.6)
    assert reply_source(dp, 6, 42003) == (BE4, 8080)  # the closed flow has expired


def test_the_loader_reads_hz_from_the_kernel_config(tmp_path: Path) -> None:
    import gzip

    gz, plain = tmp_path / "config.gz", tmp_path / "config"
    gz.write_bytes(gzip.compress(b"# CONFIG_HZ_100 is not set\nCONFIG_HZ_300=y\nCONFIG_HZ=300\n"))
    plain.write_text("CONFIG_HZ=100\n")
    assert kernel_hz((tmp_path / "missing.gz", gz, plain)) == 300
    assert kernel_hz((plain,)) == 100
    assert kernel_hz((tmp_path / "missing",)) == 1000
    assert kernel_hz() in (100, 250, 300, 1000)
