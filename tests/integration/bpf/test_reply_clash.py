"""Two flows whose translated tuples would be one, with BPF_PROG_TEST_RUN on the pod
programs, IPv4 and IPv6: the same client port reaching two service addresses that share
a backend. The second flow gets another source port (as the kernel's NAT does on such a
clash), and the replies of each come back from its own service address to the client's
own port; a retransmitted SYN of one flow, or a new flow once the first has ended, keeps
the client's port."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from bpf.loader import Datapath
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey

from .test_checksums import BE4, BE6, VIP4, VIP6, _run, one_node, packet, parse

SYN, SYNACK, ACK, RST = 0x02, 0x12, 0x10, 0x04
CLIENT = {4: "10.1.6.6", 6: "fd00:1::66"}
VIPS = {4: (VIP4, "10.96.7.8"), 6: (VIP6, "fd00:96::8")}
BES = {4: BE4, 6: BE6}


@pytest.fixture
def dp() -> Iterator[Datapath]:
    with one_node("clash") as d:
        syncer = Syncer(d.maps())
        table = dict(syncer.programmed())
        for family in (4, 6):  # a second service address on the same backend
            table[ServiceKey(ip_address(VIPS[family][1]), 80, Proto.TCP)] = Service(
                (Backend(ip_address(BES[family]), 8080),))
        assert not syncer.sync(table).errors
        yield d


def _out(dp: Datapath, family: int, vip: str, sport: int, flags: int = SYN
         ) -> tuple[str, int, str, int]:
    """A client packet to vip: (source, source port, destination, port) it leaves with."""
    s, d, sp, dp_, _ = parse(_run(dp.fds["rr_pod_ingress"],
                                  packet(CLIENT[family], vip, 6, sport, 80, b"", flags=flags)))
    return s, sp, d, dp_


def _back(dp: Datapath, family: int, dport: int, flags: int = SYNACK) -> tuple[str, int, int]:
    """The backend's packet to the client's port dport: (source, source port, client port)
    it reaches the client with."""
    s, _, sp, dp_, _ = parse(_run(dp.fds["rr_pod_egress"],
                                  packet(BES[family], CLIENT[family], 6, 8080, dport, b"",
                                         flags=flags)))
    return s, sp, dp_


@pytest.mark.parametrize("family", [4, 6])
def test_the_second_flow_gets_another_port_and_replies_find_their_own(
        dp: Datapath, family: int) -> None:
    vip1, vip2 = VIPS[family]
    c, be = CLIENT[family], BES[family]
    assert _out(dp, family, vip1, 46001) == (c, 46001, be, 8080)
    s, port2, d, dport = _out(dp, family, vip2, 46001)
    assert (s, d, dport) == (c, be, 8080) and port2 != 46001
    assert _back(dp, family, 46001) == (vip1, 80, 46001)
    assert _back(dp, family, port2) == (vip2, 80, 46001)  # restored to the client's port
    # later packets of each flow keep their own translation
    assert _out(dp, family, vip2, 46001, ACK) == (c, port2, be, 8080)
    assert _out(dp, family, vip1, 46001, ACK) == (c, 46001, be, 8080)
    assert _out(dp, family, vip1, 46001, SYN) == (c, 46001, be, 8080)  # a retransmission


@pytest.mark.parametrize("family", [4, 6])
def test_once_the_first_flow_ends_its_tuple_is_free_again(dp: Datapath, family: int) -> None:
    vip1, vip2 = VIPS[family]
    c, be = CLIENT[family], BES[family]
    assert _out(dp, family, vip1, 46002) == (c, 46002, be, 8080)
    assert _out(dp, family, vip1, 46002, RST) == (c, 46002, be, 8080)  # ends it: both gone
    assert _out(dp, family, vip2, 46002) == (c, 46002, be, 8080)
    assert _back(dp, family, 46002) == (vip2, 80, 46002)
