"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), computed in Python.

The table has m slots (m prime); each backend owns about m/n of them, and removing one
backend moves only the slots it owned (plus a small fraction). The program hashes a
flow's 5-tuple to a slot and reads the backend id stored there.

Speed: a backend's (offset, skip) pair is hashed once and cached; the fill walks each
backend's permutation incrementally (no modulo, no materialised permutation) while the
table is sparse, and once few slots are left it sorts the free slots by each backend's
preference instead of probing long runs of taken slots. Whole tables are cached by
backend set, so services that share one (a ClusterIP and its NodePorts, LB IPs) are
computed once. The result is identical to the textbook algorithm
(`maglev_table_reference`, kept for tests).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache


def _h(name: str, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, key=salt).digest(),
                          "little")


@lru_cache(maxsize=64)
def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


@lru_cache(maxsize=1 << 17)
def _params(name: str, m: int) -> tuple[int, int]:
    """(offset, skip) of one backend."""
    return _h(name, b"offset") % m, _h(name, b"skip") % (m - 1) + 1


def _rank_key(offset: int, inv_skip: int, m: int) -> Callable[[int], int]:
    """Slot -> its position in the backend's permutation."""
    return lambda c: ((c - offset) * inv_skip) % m


def _check(names: Sequence[str], m: int) -> None:
    if not is_prime(m):
        raise ValueError(f"maglev table size {m} is not prime")
    if len(set(names)) != len(names):
        raise ValueError("backend names must be unique")


@lru_cache(maxsize=8192)
def _slots(names: tuple[str, ...], m: int) -> tuple[int, ...]:
    order = sorted(range(len(names)), key=lambda i: names[i])
    n = len(order)
    if n == 1:
        return (0,) * m
    ps = [_params(names[i], m) for i in order]
    cur = [p[0] for p in ps]
    skips = [p[1] for p in ps]
    table = [-1] * m
    left = m
    late = max(m // (2 * n), n)  # switch to sorted free slots at this many (≥ one round)
    turns = range(n)
    while left > late:  # whole rounds only, so the late phase starts at backend 0
        for j in turns:
            c, s = cur[j], skips[j]
            while table[c] >= 0:
                c += s
                if c >= m:
                    c -= m
            table[c] = order[j]
            c += s
            cur[j] = c - m if c >= m else c
        left -= n
    # Every slot before a backend's cursor is taken, so its next pick is the free slot
    # it prefers most: the one with the lowest rank (c - offset) * skip⁻¹ mod m.
    free = [c for c in range(m) if table[c] < 0]
    queues = []
    for o, s in ps:
        queues.append(sorted(free, key=_rank_key(o, pow(s, -1, m), m), reverse=True))
    while True:
        for j in turns:
            q = queues[j]
            c = q.pop()
            while table[c] >= 0:
                c = q.pop()
            table[c] = order[j]
            left -= 1
            if not left:
                return tuple(table)


def maglev_slots(names: Sequence[str], m: int) -> tuple[int, ...]:
    """Slot -> index into names, cached by (names, m). Deterministic in the set of names."""
    _check(names, m)
    if not names:
        return ()
    return _slots(tuple(names), m)


def maglev_table(names: Sequence[str], m: int) -> list[int]:
    """Slot -> index into names. Deterministic in the set of names, whatever their order."""
    return list(maglev_slots(names, m))


def maglev_table_reference(names: Sequence[str], m: int) -> list[int]:
    """The textbook fill, one probe at a time (slow; the oracle for maglev_table)."""
    _check(names, m)
    if not names:
        return []
    order = sorted(range(len(names)), key=lambda i: names[i])
    offsets = [_h(names[i], b"offset") % m for i in order]
    skips = [_h(names[i], b"skip") % (m - 1) + 1 for i in order]
    nxt = [0] * len(order)
    table = [-1] * m
    filled = 0
    while True:
        for j, idx in enumerate(order):
            c = (offsets[j] + nxt[j] * skips[j]) % m
            while table[c] >= 0:
                nxt[j] += 1
                c = (offsets[j] + nxt[j] * skips[j]) % m
            table[c] = idx
            nxt[j] += 1
            filled += 1
            if filled == m:
                return table
