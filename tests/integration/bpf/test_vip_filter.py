"""The service address filter (rr_vips) with BPF_PROG_TEST_RUN on the pod program, for
IPv4 (/24s) and IPv6 (/64 buckets): a packet whose destination holds no service address
leaves before any conntrack or service lookup once the filter is armed; an unarmed filter
(a map an upgrade created) sends every packet down the full path; a new service's bit is
set before its entry is written; a removed service's bit stays, so its established flows
keep their backend; and a new syncer on maps whose filter was lost marks every programmed
service and arms it. The bits are computed in Python (bpf/maps.py): the program honouring
them shows that both compute the same."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from bpf import maps as m
from bpf.loader import Datapath
from bpf.mapstore import PinnedMap
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey

from .test_checksums import BE4, BE6, VIP4, VIP6, _run, one_node, packet, parse

SYN, ACK = 0x02, 0x10
CLIENT = {4: "10.1.9.9", 6: "fd00:1::99"}
ADDRS = {4: (VIP4, BE4), 6: (VIP6, BE6)}
ELSEWHERE = {4: ("10.200.0.1", "10.97.3.3"), 6: ("fd00:200::1", "fd00:97:3::3")}


@pytest.fixture
def dp() -> Iterator[Datapath]:
    with one_node("vipf") as d:
        yield d


def _filter(dp: Datapath) -> PinnedMap:
    return PinnedMap.open(str(dp.cfg.pin_dir / "rr_vips"))


def _word(f: PinnedMap, i: int) -> int:
    raw = f.lookup(i.to_bytes(4, "little"))
    assert raw is not None  # an array: every index exists
    return int.from_bytes(raw, "little")


def _put(f: PinnedMap, i: int, v: int) -> None:
    f.update_batch([(i.to_bytes(4, "little"), v.to_bytes(8, "little"))])


def _bit(addr: str) -> tuple[int, int]:
    ip = ip_address(addr)
    return m.vip_bit(ip.version, int(ip))


def _send(dp: Datapath, family: int, dst: str, sport: int, flags: int) -> tuple[str, int]:
    _, d, _, dport, _ = parse(_run(dp.fds["rr_pod_ingress"],
                                   packet(CLIENT[family], dst, 6, sport, 80, b"",
                                          flags=flags)))
    return d, dport


@pytest.mark.parametrize("family", [4, 6])
def test_the_sync_marks_service_addresses_and_arms_the_filter(dp: Datapath,
                                                             family: int) -> None:
    f = _filter(dp)
    try:
        word, bit = _bit(ADDRS[family][0])
        assert _word(f, word) & bit
        assert _word(f, m.VIPS_ARMED) == 1
        other, obit = _bit(ELSEWHERE[family][0])
        assert not _word(f, other) & obit
    finally:
        f.close()


@pytest.mark.parametrize("family", [4, 6])
def test_an_armed_filter_lets_other_addresses_go_before_conntrack(dp: Datapath,
                                                                  family: int) -> None:
    vip, be = ADDRS[family]
    assert _send(dp, family, vip, 42001, SYN) == (be, 8080)  # a flow through the service
    f = _filter(dp)
    word, bit = _bit(vip)
    keep = _word(f, word)
    try:
        _put(f, word, keep & ~bit)  # as if no service were there: the flow's entry is skipped
        assert _send(dp, family, vip, 42001, ACK) == (vip, 80)
        _put(f, m.VIPS_ARMED, 0)  # unarmed: the full path finds the flow again
        assert _send(dp, family, vip, 42001, ACK) == (be, 8080)
    finally:
        _put(f, word, keep)
        _put(f, m.VIPS_ARMED, 1)
        f.close()
    assert _send(dp, family, vip, 42001, ACK) == (be, 8080)


@pytest.mark.parametrize("family", [4, 6])
def test_a_new_service_elsewhere_is_served_at_once(dp: Datapath, family: int) -> None:
    vip, be = ELSEWHERE[family][1], ADDRS[family][1]
    key = ServiceKey(ip_address(vip), 80, Proto.TCP)
    syncer = Syncer(dp.maps())
    table = dict(syncer.programmed())
    assert _send(dp, family, vip, 42002, SYN) == (vip, 80)  # nothing there yet
    table[key] = Service((Backend(ip_address(be), 8080),))
    assert not syncer.sync(table).errors
    assert _send(dp, family, vip, 42003, SYN) == (be, 8080)


@pytest.mark.parametrize("family", [4, 6])
def test_a_removed_services_flows_keep_their_backend(dp: Datapath, family: int) -> None:
    vip, be = ADDRS[family]
    key = ServiceKey(ip_address(vip), 80, Proto.TCP)
    assert _send(dp, family, vip, 42004, SYN) == (be, 8080)
    syncer = Syncer(dp.maps())
    table = {k: s for k, s in syncer.programmed().items() if k != key}
    assert not syncer.sync(table).errors
    f = _filter(dp)
    try:
        word, bit = _bit(vip)
        assert _word(f, word) & bit  # the bit stays
    finally:
        f.close()
    assert _send(dp, family, vip, 42004, ACK) == (be, 8080)  # established: translated
    assert _send(dp, family, vip, 42005, SYN) == (vip, 80)  # new: no service any more


def test_a_new_syncer_rebuilds_a_lost_filter(dp: Datapath) -> None:
    f = _filter(dp)
    marked = [_bit(VIP4), _bit(VIP6)]
    try:
        for word, _ in marked:
            _put(f, word, 0)
        _put(f, m.VIPS_ARMED, 0)  # a filter map created fresh by an upgrade
        syncer = Syncer(dp.maps())
        assert not syncer.sync(syncer.adopt()).errors  # nothing changed but the filter
        assert all(_word(f, word) & bit for word, bit in marked)
        assert _word(f, m.VIPS_ARMED) == 1
    finally:
        f.close()
    for family in (4, 6):
        vip, be = ADDRS[family]
        assert _send(dp, family, vip, 42006, SYN) == (be, 8080)
