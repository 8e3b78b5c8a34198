"""The reverse path's source filter (rr_replies) with BPF_PROG_TEST_RUN on the pod
programs, IPv4 and IPv6: a new flow sets its backend's bit before its reply entry is made,
so its reply is translated with the filter armed; a reply entry whose source has no bit
(made by a program older than the filter) is skipped once the filter is armed and found
while it is not; arming marks the sources of the reply entries already in the conntrack;
and the marking program ORs bits in, keeping the ones a program set. The bits are
computed in Python (bpf/maps.py reply_hash): the programs honouring them show that both
compute the same."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from bpf import maps as m
from bpf import replies
from bpf.libbpf import prog_test_run
from bpf.loader import Datapath
from bpf.mapstore import PinnedMap

from .test_checksums import BE4, BE6, VIP4, VIP6, _run, one_node, packet, parse

SYN, SYNACK = 0x02, 0x12
CLIENT = {4: "10.1.8.8", 6: "fd00:1::88"}
ADDRS = {4: (VIP4, BE4), 6: (VIP6, BE6)}


@pytest.fixture
def dp() -> Iterator[Datapath]:
    with one_node("replyf") as d:
        yield d


def _u32(i: int) -> bytes:
    return i.to_bytes(4, sys.byteorder)


def _word(f: PinnedMap, i: int) -> int:
    raw = f.lookup(_u32(i))
    assert raw is not None  # an array: every index exists
    return int.from_bytes(raw, sys.byteorder)


def _put(f: PinnedMap, i: int, v: int) -> None:
    f.update_batch([(_u32(i), v.to_bytes(8, sys.byteorder))])


def _bucket(addr: str, port: int) -> tuple[int, int]:
    """(word, bit mask) of a TCP source addr:port."""
    raw = ip_address(addr).packed
    words = [int.from_bytes(raw[i:i + 4], sys.byteorder) for i in range(0, len(raw), 4)]
    h = m.reply_hash(words + [0] * (4 - len(words)), m.AF_INET if len(raw) == 4 else m.AF_INET6,
                     int.from_bytes(port.to_bytes(2, "big"), sys.byteorder), 6)
    return h >> 6, 1 << (h & 63)


@pytest.fixture
def filt(dp: Datapath) -> Iterator[PinnedMap]:
    f = PinnedMap.open(str(dp.cfg.pin_dir / "rr_replies"))
    try:
        yield f
    finally:
        f.close()


def _open(dp: Datapath, family: int, sport: int) -> None:
    """A client's SYN to the service: the flow's entries are made."""
    vip, be = ADDRS[family]
    _, d, _, dport, _ = parse(_run(dp.fds["rr_pod_ingress"],
                                   packet(CLIENT[family], vip, 6, sport, 80, b"", flags=SYN)))
    assert (d, dport) == (be, 8080)


def _reply(dp: Datapath, family: int, sport: int) -> tuple[str, int]:
    """The backend's SYN-ACK into the client's pod: (source, source port) it leaves with."""
    s, _, sp, _, _ = parse(_run(dp.fds["rr_pod_egress"],
                                packet(ADDRS[family][1], CLIENT[family], 6, 8080, sport, b"",
                                       flags=SYNACK)))
    return s, sp


@pytest.mark.parametrize("family", [4, 6])
def test_a_new_flow_marks_its_backend_and_its_reply_is_translated(
        dp: Datapath, filt: PinnedMap, family: int) -> None:
    vip, be = ADDRS[family]
    word, bit = _bucket(be, 8080)
    assert _word(filt, m.REPLIES_ARMED) == 1
    _put(filt, word, 0)
    _open(dp, family, 43001)
    assert _word(filt, word) == bit  # set by the program, where Python computes it
    assert _reply(dp, family, 43001) == (vip, 80)


@pytest.mark.parametrize("family", [4, 6])
def test_an_armed_filter_skips_sources_without_their_bit(dp: Datapath, filt: PinnedMap,
                                                         family: int) -> None:
    vip, be = ADDRS[family]
    word, bit = _bucket(be, 8080)
    _open(dp, family, 43002)
    _put(filt, word, _word(filt, word) & ~bit)  # as if an older program made the entry
    assert _reply(dp, family, 43002) == (be, 8080)  # no conntrack lookup: untranslated
    _put(filt, m.REPLIES_ARMED, 0)  # unarmed: every reply asks the conntrack
    assert _reply(dp, family, 43002) == (vip, 80)


def test_arming_marks_the_reply_entries_already_in_the_conntrack(dp: Datapath,
                                                                 filt: PinnedMap) -> None:
    buckets = [_bucket(BE4, 8080), _bucket(BE6, 8080)]
    for family in (4, 6):
        _open(dp, family, 43003)
    for word, _ in buckets:
        _put(filt, word, 0)
    _put(filt, m.REPLIES_ARMED, 0)  # a filter an upgrade created next to an adopted conntrack
    assert dp.arm_replies() == len({w for w, _ in buckets})
    assert all(_word(filt, w) & b for w, b in buckets)
    assert _word(filt, m.REPLIES_ARMED) == 1
    for family in (4, 6):
        assert _reply(dp, family, 43003) == (ADDRS[family][0], 80)
    assert dp.arm_replies() is None  # armed: nothing to do


def test_the_marking_program_ors_bits_in(dp: Datapath, filt: PinnedMap) -> None:
    fd = dp.fds["rr_replies_mark"]
    _put(filt, 7, 0b1001)  # a program's bits
    ret, _, _ = prog_test_run(fd, replies.mark_request(7, 0b0110))
    assert ret == 0
    assert _word(filt, 7) == 0b1111
    ret, _, _ = prog_test_run(fd, replies.mark_request(m.REPLIES_ARMED, 1))
    assert ret == 1  # the armed entry is no word of bits
    assert _word(filt, m.REPLIES_ARMED) == 1
    _put(filt, 7, 0)
