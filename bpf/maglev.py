"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), computed in Python.

The table has m slots (m prime); each backend owns about m/n of them, and removing one
backend moves only the slots it owned (plus a small fraction). The program hashes a
flow's 5-tuple to a slot and reads the backend id stored there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _h(name: str, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, key=salt).digest(),
                          "little")


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def maglev_table(names: Sequence[str], m: int) -> list[int]:
    """Slot -> index into names. Deterministic in the set of names, whatever their order."""
    if not is_prime(m):
        raise ValueError(f"maglev table size {m} is not prime")
    if not names:
        return []
    if len(set(names)) != len(names):
        raise ValueError("backend names must be unique")
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
