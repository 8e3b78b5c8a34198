"""Arming the reverse path's source filter (rr_replies, see src/maps.h).

The programs set a source's bit before they make a reply entry for it, so the only reply
entries without their bit are those made by programs older than the filter: a conntrack
adopted across the upgrade that created the filter. Until the filter is armed every
packet on the reverse path asks the conntrack. arm() marks the source of every reply
entry in both conntrack maps and then arms the filter; the agent calls it once the new
programs are attached everywhere, so that no older program can make an entry after the
scan. The bits are set by a program (rr_replies_mark, run with BPF_PROG_TEST_RUN) with
the same atomic OR the datapath uses: a read-modify-write from here could undo a bit a
program set in between.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from bpf import maps as m
from bpf.mapstore import MapPort

MARK_HEADROOM = 14  # the test run wants an Ethernet header's room before the request

Marker = Callable[[int, int], None]  # (word, bits): OR bits into the word, atomically


def _word_of(bucket: int, words: dict[int, int]) -> None:
    words[bucket >> 6] = words.get(bucket >> 6, 0) | (1 << (bucket & 63))


def reply_words(ct4_keys: Iterable[bytes], ct6_keys: Iterable[bytes]) -> dict[int, int]:
    """The rr_replies words (index -> bits) of the sources of the reply entries among
    conntrack keys (rr_ct's 16-byte keys, rr_ct6's 40-byte keys)."""
    words: dict[int, int] = {}
    for k in ct4_keys:
        if k[13] == m.DIR_REPLY:  # saddr, daddr, sport, dport, proto, dir
            _word_of(m.reply_hash((int.from_bytes(k[0:4], sys.byteorder),), m.AF_INET,
                                  int.from_bytes(k[8:10], sys.byteorder), k[12]), words)
    for k in ct6_keys:
        if k[38] == m.DIR_REPLY:  # saddr[16], daddr[16], sport, dport, proto, family, dir
            addr = [int.from_bytes(k[i:i + 4], sys.byteorder) for i in range(0, 16, 4)]
            _word_of(m.reply_hash(addr, k[37], int.from_bytes(k[32:34], sys.byteorder),
                                  k[36]), words)
    return words


def armed(replies: MapPort) -> bool:
    raw = replies.lookup(m.REPLIES_ARMED.to_bytes(4, sys.byteorder))
    return raw is not None and int.from_bytes(raw, sys.byteorder) != 0


def mark_request(word: int, bits: int) -> bytes:
    """rr_replies_mark's input for one word."""
    return (bytes(MARK_HEADROOM) + word.to_bytes(4, sys.byteorder) + bytes(4)
            + bits.to_bytes(8, sys.byteorder))


def arm(replies: MapPort, ct4: MapPort, ct6: MapPort, mark: Marker) -> int | None:
    """Mark the sources of the reply entries in ct4 and ct6, then arm the filter. The
    number of words marked; None when the filter was armed already (nothing done)."""
    if armed(replies):
        return None
    words = reply_words((k for k, _ in ct4.items()), (k for k, _ in ct6.items()))
    for word, bits in sorted(words.items()):
        mark(word, bits)
    replies.update_batch([(m.REPLIES_ARMED.to_bytes(4, sys.byteorder),
                           (1).to_bytes(8, sys.byteorder))])
    return len(words)
