"""How TCP flows end in the datapath's conntrack, with BPF_PROG_TEST_RUN on the pod
program: a RST drops the flow's entries, a FIN marks them closing, and a SYN or SYN-ACK on
a finished flow's tuple belongs to a new connection. The case that made this necessary: a
client port used once through a service and then for a direct connection to the backend
had that connection's SYN-ACK "restored" to the service address by the old reply entry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bpf.loader import Datapath

from .test_checksums import BE4, BE6, VIP4, VIP6, _run, one_node, packet, parse

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
CLIENT = {4: "10.1.7.7", 6: "fd00:1::77"}
ADDRS = {4: (VIP4, BE4), 6: (VIP6, BE6)}


@pytest.fixture(scope="module")
def dp() -> Iterator[Datapath]:
    with one_node("tcpend") as d:
        yield d


class Flow:
    """One client port talking to the service (forward: pod ingress) and hearing back
    (reply: pod egress)."""

    def __init__(self, dp: Datapath, family: int, port: int) -> None:
        self.fwd, self.rev = dp.fds["rr_pod_ingress"], dp.fds["rr_pod_egress"]
        self.c = CLIENT[family]
        self.vip, self.be = ADDRS[family]
        self.port = port

    def send(self, flags: int, to_vip: bool = True) -> tuple[str, int]:
        """Client -> service (or straight to the backend); where it went."""
        dst, dport = (self.vip, 80) if to_vip else (self.be, 8080)
        _, d, _, dp_, _ = parse(_run(self.fwd, packet(self.c, dst, 6, self.port, dport, b"",
                                                      flags=flags)))
        return d, dp_

    def reply(self, flags: int) -> tuple[str, int]:
        """Backend -> client; the source the client sees."""
        s, _, sp, _, _ = parse(_run(self.rev, packet(self.be, self.c, 6, 8080, self.port, b"",
                                                     flags=flags)))
        return s, sp


@pytest.mark.parametrize("family", [4, 6])
def test_rst_ends_the_flow_and_a_direct_connection_on_that_port_is_left_alone(
        dp: Datapath, family: int) -> None:
    f = Flow(dp, family, 41001)
    assert f.send(SYN) == (f.be, 8080)
    assert f.reply(SYN | ACK) == (f.vip, 80)
    assert f.send(ACK) == (f.be, 8080)
    assert f.send(RST | ACK) == (f.be, 8080)  # the RST itself is still translated
    # the same port, now straight to the backend: its SYN-ACK must keep the backend's address
    assert f.send(SYN, to_vip=False) == (f.be, 8080)
    assert f.reply(SYN | ACK) == (f.be, 8080)
    assert f.reply(ACK) == (f.be, 8080)


@pytest.mark.parametrize("family", [4, 6])
def test_a_reply_rst_ends_the_flow_too(dp: Datapath, family: int) -> None:
    f = Flow(dp, family, 41002)
    assert f.send(SYN) == (f.be, 8080)
    assert f.reply(RST | ACK) == (f.vip, 80)
    assert f.reply(SYN | ACK) == (f.be, 8080)  # nothing left to restore


@pytest.mark.parametrize("family", [4, 6])
def test_fin_keeps_translating_the_closing_flow_until_a_new_connection_comes(
        dp: Datapath, family: int) -> None:
    f = Flow(dp, family, 41003)
    assert f.send(SYN) == (f.be, 8080)
    assert f.reply(SYN | ACK) == (f.vip, 80)
    assert f.send(FIN | ACK) == (f.be, 8080)
    assert f.reply(ACK) == (f.vip, 80)        # the half-closed flow still works
    assert f.reply(FIN | ACK) == (f.vip, 80)
    assert f.send(ACK) == (f.be, 8080)
    # a SYN-ACK on the finished tuple is a new connection's: not translated, entries gone
    assert f.reply(SYN | ACK) == (f.be, 8080)
    assert f.reply(ACK) == (f.be, 8080)


@pytest.mark.parametrize("family", [4, 6])
def test_a_syn_reusing_a_closed_flows_port_gets_a_fresh_flow(dp: Datapath, family: int) -> None:
    f = Flow(dp, family, 41004)
    assert f.send(SYN) == (f.be, 8080)
    assert f.send(FIN | ACK) == (f.be, 8080)
    assert f.send(SYN) == (f.be, 8080)        # through the service again, as a new flow
    assert f.reply(SYN | ACK) == (f.vip, 80)  # and its reply entry is fresh (not closing)
    assert f.send(ACK) == (f.be, 8080)
    assert f.reply(ACK) == (f.vip, 80)
