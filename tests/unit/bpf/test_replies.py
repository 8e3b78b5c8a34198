"""bpf/replies.py against fake maps: which conntrack keys mark a word (reply entries of
both key formats, never forward ones), and arming marks each word once, then arms, and
does nothing on an armed filter."""

from __future__ import annotations

import ctypes
import sys
from ipaddress import ip_address

from bpf import maps as m
from bpf import replies
from bpf.mapstore import FakeMap


def _ct4_key(src: str, sport: int, dst: str, dport: int, direction: int) -> bytes:
    k = m.Ct4Key(int.from_bytes(ip_address(src).packed, sys.byteorder),
                  int.from_bytes(ip_address(dst).packed, sys.byteorder),
                  m.port_of(sport), m.port_of(dport), 6, direction, 0)
    return bytes(k)


def _ct6_key(src: str, sport: int, dst: str, dport: int, direction: int) -> bytes:
    return bytes(m.CtKey(m.addr_of(ip_address(src)), m.addr_of(ip_address(dst)),
                         m.port_of(sport), m.port_of(dport), 6, m.AF_INET6, direction, 0))


def _bucket(src: str, sport: int) -> int:
    raw = ip_address(src).packed
    words = [int.from_bytes(raw[i:i + 4], sys.byteorder) for i in range(0, len(raw), 4)]
    return m.reply_hash(words + [0] * (4 - len(words)),
                        m.AF_INET if len(raw) == 4 else m.AF_INET6,
                        int.from_bytes(m.port_of(sport).to_bytes(2, sys.byteorder),
                                       sys.byteorder), 6)


def test_only_reply_entries_mark_their_source() -> None:
    k4 = [_ct4_key("10.9.0.1", 8080, "10.1.0.1", 40000, m.DIR_REPLY),
          _ct4_key("10.1.0.1", 40000, "10.96.0.1", 80, m.DIR_FORWARD)]
    k6 = [_ct6_key("fd00::9", 8443, "fd00::1", 40001, m.DIR_REPLY),
          _ct6_key("fd00::1", 40001, "fd00:96::1", 443, m.DIR_FORWARD)]
    words = replies.reply_words(k4, k6)
    want: dict[int, int] = {}
    for b in (_bucket("10.9.0.1", 8080), _bucket("fd00::9", 8443)):
        want[b >> 6] = want.get(b >> 6, 0) | 1 << (b & 63)
    assert words == want
    assert _bucket("10.1.0.1", 40000) != _bucket("10.9.0.1", 8080)


def test_the_hash_tells_families_ports_and_protocols_apart() -> None:
    four = m.reply_hash([0x0100000A, 0, 0, 0], m.AF_INET, 0x901F, 6)
    assert four != m.reply_hash([0x0100000A, 0, 0, 0], m.AF_INET, 0x911F, 6)
    assert four != m.reply_hash([0x0100000A, 0, 0, 0], m.AF_INET, 0x901F, 17)
    assert four != m.reply_hash([0x0100000A, 1, 0, 0], m.AF_INET6, 0x901F, 6)
    assert m.reply_hash([0x0100000A, 7, 7, 7], m.AF_INET, 0x901F, 6) == four  # IPv4: w[0]
    assert 0 <= four < 1 << m.REPLY_BITS


def _maps() -> tuple[FakeMap, FakeMap, FakeMap]:
    return (FakeMap(4, 8, m.REPLIES_ARMED + 1),
            FakeMap(ctypes.sizeof(m.Ct4Key), ctypes.sizeof(m.Ct4Value), 64),
            FakeMap(ctypes.sizeof(m.CtKey), ctypes.sizeof(m.Ct6Value), 64))


def test_arming_marks_every_word_once_then_arms() -> None:
    rep, ct4, ct6 = _maps()
    ct4.update_batch([(_ct4_key("10.9.0.1", 8080, "10.1.0.1", 40000, m.DIR_REPLY),
                       bytes(ct4.value_size)),
                      (_ct4_key("10.9.0.1", 8080, "10.1.0.2", 40000, m.DIR_REPLY),
                       bytes(ct4.value_size))])
    ct6.update_batch([(_ct6_key("fd00::9", 8443, "fd00::1", 40001, m.DIR_REPLY),
                       bytes(ct6.value_size))])
    calls: list[tuple[int, int]] = []
    assert replies.arm(rep, ct4, ct6, lambda w, b: calls.append((w, b))) == len(calls)
    assert sorted(calls) == sorted(replies.reply_words(
        (k for k, _ in ct4.items()), (k for k, _ in ct6.items())).items())
    assert len({w for w, _ in calls}) == len(calls)  # one call per word
    assert replies.armed(rep)
    calls.clear()
    assert replies.arm(rep, ct4, ct6, lambda w, b: calls.append((w, b))) is None
    assert not calls


def test_an_empty_conntrack_arms_at_once() -> None:
    rep, ct4, ct6 = _maps()
    assert not replies.armed(rep)
    assert replies.arm(rep, ct4, ct6, lambda w, b: None) == 0
    assert replies.armed(rep)


def test_a_mark_request_is_headroom_word_and_bits() -> None:
    req = replies.mark_request(5, 1 << 63)
    assert len(req) == replies.MARK_HEADROOM + 16
    assert req[replies.MARK_HEADROOM:replies.MARK_HEADROOM + 4] == (5).to_bytes(4, sys.byteorder)
    assert req[-8:] == (1 << 63).to_bytes(8, sys.byteorder)
