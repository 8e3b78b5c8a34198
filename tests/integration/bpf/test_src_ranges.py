"""Source ranges (loadBalancerSourceRanges) in the real pod program with
BPF_PROG_TEST_RUN, IPv4 and IPv6: a new flow from inside a range is translated, one from
outside is dropped, an entry with no usable range drops every new flow, a flow
established before the ranges changed keeps going, and longest-prefix matching is per
service entry (another entry's ranges admit nobody here)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_address, ip_network

import pytest

from bpf.libbpf import prog_test_run
from bpf.loader import Datapath
from bpf.sync import Syncer
from bpf.table import Proto, ServiceKey

from .test_checksums import BE4, BE6, VIP4, VIP6, one_node, packet, parse

TC_ACT_OK, TC_ACT_SHOT = 0, 2
SYN, ACK = 0x02, 0x10
ADDRS = {4: (VIP4, BE4), 6: (VIP6, BE6)}
INSIDE = {4: ("10.1.5.5", "10.1.0.0/16"), 6: ("fd00:1::55", "fd00:1::/64")}
OUTSIDE = {4: "10.2.5.5", 6: "fd00:2::55"}


@pytest.fixture
def dp() -> Iterator[Datapath]:
    with one_node("srcr") as d:
        yield d


def _send(dp: Datapath, family: int, src: str, sport: int, flags: int = SYN
          ) -> tuple[int, str | None]:
    ret, _, out = prog_test_run(dp.fds["rr_pod_ingress"],
                                packet(src, ADDRS[family][0], 6, sport, 80, b"", flags=flags))
    return ret, parse(out)[1] if ret == TC_ACT_OK else None


def _ranges(dp: Datapath, family: int, proto: Proto, *nets: str) -> None:
    syncer = Syncer(dp.maps())
    table = dict(syncer.programmed())
    k = ServiceKey(ip_address(ADDRS[family][0]), 80, proto)
    table[k] = replace(table[k], source_ranges=tuple(sorted(ip_network(n) for n in nets)))
    assert not syncer.sync(table).errors


@pytest.mark.parametrize("family", [4, 6])
def test_only_clients_inside_a_range_get_a_backend(dp: Datapath, family: int) -> None:
    inside, net = INSIDE[family]
    be = ADDRS[family][1]
    assert _send(dp, family, OUTSIDE[family], 45001) == (TC_ACT_OK, be)  # no ranges yet
    _ranges(dp, family, Proto.TCP, net)
    assert _send(dp, family, inside, 45002) == (TC_ACT_OK, be)
    assert _send(dp, family, OUTSIDE[family], 45003) == (TC_ACT_SHOT, None)
    # established before the ranges: keeps its backend (as kube-proxy's conntrack does)
    assert _send(dp, family, OUTSIDE[family], 45001, ACK) == (TC_ACT_OK, be)
    # the UDP entry of the same address has no ranges: not affected
    ret, _, out = prog_test_run(dp.fds["rr_pod_ingress"],
                                packet(OUTSIDE[family], ADDRS[family][0], 17, 45004, 80, b"x"))
    assert ret == TC_ACT_OK and parse(out)[1] == be
    # another entry's prefixes (the UDP one's) admit nobody to this one
    _ranges(dp, family, Proto.UDP, f"{OUTSIDE[family]}/{32 if family == 4 else 128}")
    assert _send(dp, family, OUTSIDE[family], 45006) == (TC_ACT_SHOT, None)
    _ranges(dp, family, Proto.TCP)  # given, none usable: nobody
    assert _send(dp, family, inside, 45005) == (TC_ACT_SHOT, None)
