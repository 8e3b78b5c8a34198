"""The service /24 filter (rr_vip4) with BPF_PROG_TEST_RUN on the pod program: a packet
whose destination's /24 holds no service address leaves before any conntrack or service
lookup once the filter is armed; an unarmed filter (a map an upgrade created) sends every
packet down the full path; a new service's /24 is marked before its entry is written; a
removed service's bit stays, so its established flows keep their backend; and a new
syncer on maps whose filter was lost marks every programmed service and arms it."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from bpf import maps as m
from bpf.loader import Datapath
from bpf.mapstore import PinnedMap
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey

from .test_checksums import BE4, VIP4, _run, one_node, packet, parse

SYN, ACK = 0x02, 0x10
CLIENT = "10.1.9.9"


@pytest.fixture
def dp() -> Iterator[Datapath]:
    with one_node("vipf") as d:
        yield d


def _filter(dp: Datapath) -> PinnedMap:
    return PinnedMap.open(str(dp.cfg.pin_dir / "rr_vip4"))


def _word(f: PinnedMap, i: int) -> int:
    raw = f.lookup(i.to_bytes(4, "little"))
    assert raw is not None  # an array: every index exists
    return int.from_bytes(raw, "little")


def _put(f: PinnedMap, i: int, v: int) -> None:
    f.update_batch([(i.to_bytes(4, "little"), v.to_bytes(8, "little"))])


def _send(dp: Datapath, dst: str, sport: int, flags: int) -> tuple[str, int]:
    _, d, _, dport, _ = parse(_run(dp.fds["rr_pod_ingress"],
                                   packet(CLIENT, dst, 6, sport, 80, b"", flags=flags)))
    return d, dport


def test_the_sync_marks_service_24s_and_arms_the_filter(dp: Datapath) -> None:
    f = _filter(dp)
    try:
        word, bit = m.vip4_bit(int(ip_address(VIP4)))
        assert _word(f, word) == bit  # only 10.96.7.0/24 in its word
        assert _word(f, m.VIP4_ARMED) == 1
        other, _ = m.vip4_bit(int(ip_address("10.200.0.1")))
        assert other != word and _word(f, other) == 0
    finally:
        f.close()


def test_an_armed_filter_lets_unmarked_24s_go_before_conntrack(dp: Datapath) -> None:
    assert _send(dp, VIP4, 42001, SYN) == (BE4, 8080)  # a flow through the service
    f = _filter(dp)
    word, bit = m.vip4_bit(int(ip_address(VIP4)))
    try:
        _put(f, word, 0)  # as if 10.96.7.0/24 held no service: the flow's entry is skipped
        assert _send(dp, VIP4, 42001, ACK) == (VIP4, 80)
        _put(f, m.VIP4_ARMED, 0)  # unarmed: the full path finds the flow again
        assert _send(dp, VIP4, 42001, ACK) == (BE4, 8080)
    finally:
        _put(f, word, bit)
        _put(f, m.VIP4_ARMED, 1)
        f.close()
    assert _send(dp, VIP4, 42001, ACK) == (BE4, 8080)


def test_a_new_service_in_a_new_24_is_served_at_once(dp: Datapath) -> None:
    vip = "10.97.3.3"
    key = ServiceKey(ip_address(vip), 80, Proto.TCP)
    syncer = Syncer(dp.maps())
    table = dict(syncer.programmed())
    assert _send(dp, vip, 42002, SYN) == (vip, 80)  # nothing there yet
    table[key] = Service((Backend(ip_address(BE4), 8080),))
    assert not syncer.sync(table).errors
    assert _send(dp, vip, 42003, SYN) == (BE4, 8080)


def test_a_removed_services_flows_keep_their_backend(dp: Datapath) -> None:
    key = ServiceKey(ip_address(VIP4), 80, Proto.TCP)
    assert _send(dp, VIP4, 42004, SYN) == (BE4, 8080)
    syncer = Syncer(dp.maps())
    table = {k: s for k, s in syncer.programmed().items() if k != key}
    assert not syncer.sync(table).errors
    f = _filter(dp)
    try:
        word, bit = m.vip4_bit(int(ip_address(VIP4)))
        assert _word(f, word) & bit  # the bit stays
    finally:
        f.close()
    assert _send(dp, VIP4, 42004, ACK) == (BE4, 8080)  # established: still translated
    assert _send(dp, VIP4, 42005, SYN) == (VIP4, 80)  # new: no service any more


def test_a_new_syncer_rebuilds_a_lost_filter(dp: Datapath) -> None:
    f = _filter(dp)
    word, bit = m.vip4_bit(int(ip_address(VIP4)))
    try:
        _put(f, word, 0)
        _put(f, m.VIP4_ARMED, 0)  # a filter map created fresh by an upgrade
        syncer = Syncer(dp.maps())
        assert not syncer.sync(syncer.adopt()).errors  # nothing changed but the filter
        assert _word(f, word) == bit and _word(f, m.VIP4_ARMED) == 1
    finally:
        f.close()
    assert _send(dp, VIP4, 42006, SYN) == (BE4, 8080)
