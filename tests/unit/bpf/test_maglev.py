"""Maglev table: balance, determinism, minimal disruption."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpf import maglev
from bpf.maglev import (
    is_prime,
    maglev_id_tables,
    maglev_slots,
    maglev_table,
    maglev_table_reference,
)

M = 1021


def names(n: int) -> list[str]:
    return [f"10.0.{i // 250}.{i % 250}:8080" for i in range(n)]


def test_every_slot_filled_and_balanced() -> None:
    bes = names(7)
    table = maglev_table(bes, M)
    assert len(table) == M
    counts = Counter(table)
    assert set(counts) == set(range(7))
    assert max(counts.values()) - min(counts.values()) <= 1 + M // 7 // 10


def test_order_of_names_does_not_matter() -> None:
    bes = names(5)
    t1 = [bes[i] for i in maglev_table(bes, M)]
    rev = list(reversed(bes))
    t2 = [rev[i] for i in maglev_table(rev, M)]
    assert t1 == t2


def test_removing_one_backend_moves_mostly_its_own_slots() -> None:
    bes = names(10)
    before = [bes[i] for i in maglev_table(bes, M)]
    gone = bes[3]
    rest = [b for b in bes if b != gone]
    after = [rest[i] for i in maglev_table(rest, M)]
    moved_other = sum(1 for a, b in zip(before, after, strict=True) if a != gone and a != b)
    assert all(b != gone for b in after)
    assert moved_other <= M * 0.05  # the rest of the table hardly changes


def test_empty_and_errors() -> None:
    assert maglev_table([], M) == []
    with pytest.raises(ValueError):
        maglev_table(["a"], 1000)
    with pytest.raises(ValueError):
        maglev_table(["a", "a"], M)
    assert is_prime(M) and not is_prime(1) and not is_prime(1023)


@settings(max_examples=30, deadline=None)
@given(st.sets(st.integers(0, 10_000), min_size=1, max_size=40))
def test_property_all_backends_present_and_fair(ids: set[int]) -> None:
    bes = [f"b{i}" for i in sorted(ids)]
    counts = Counter(maglev_table(bes, 251))
    assert set(counts) == set(range(len(bes)))
    assert max(counts.values()) <= 251 // len(bes) + 2 + len(bes)


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 100_000), min_size=1, max_size=80),
       st.sampled_from([7, 251, 1021]))
def test_fast_fill_equals_the_textbook_algorithm(ids: set[int], m: int) -> None:
    bes = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:80" for i in sorted(ids)]
    assert maglev_table(bes, m) == maglev_table_reference(bes, m)


def test_more_backends_than_slots_and_cache_returns_equal_copies() -> None:
    bes = names(30)
    assert maglev_table(bes, 7) == maglev_table_reference(bes, 7)
    t1 = maglev_table(bes[:3], M)
    t1[0] = -5  # callers get a copy: the cached table is not shared
    assert maglev_table(bes[:3], M) == maglev_table_reference(bes[:3], M)
    assert maglev_slots(bes[:3], M) is maglev_slots(list(bes[:3]), M)


def _jobs(sizes: list[int], seed: int) -> list[tuple[list[str], list[int]]]:
    import random

    rnd = random.Random(seed)
    pool = [f"10.1.{i // 250}.{i % 250}:8080" for i in range(5000)]
    return [(rnd.sample(pool, n), [rnd.randrange(1, 1 << 32) for _ in range(n)])
            for n in sizes]


@pytest.mark.parametrize("m", [7, 251, 1021])
def test_id_tables_pure_equal_reference(m: int) -> None:
    from array import array

    jobs = _jobs([0, 1, 2, 3, 9, 40], m)
    for (names, ids), tab in zip(jobs, maglev_id_tables(jobs, m, vectorize=False),
                                 strict=True):
        want = [ids[i] for i in maglev_table_reference(names, m)] if names else []
        assert array("I", tab).tolist() == want


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(2, 70), min_size=1, max_size=12), st.sampled_from([7, 251, 1021]),
       st.integers(0, 1000), st.sampled_from([1, 3, 24]), st.sampled_from([1, 5, 48, 2000]))
def test_numpy_fill_equals_the_pure_fill(sizes: list[int], m: int, seed: int, cap: int,
                                         late: int) -> None:
    """Identical bytes, whatever the block phases (cap forces stragglers to the pure fill)."""
    pytest.importorskip("numpy")
    jobs = _jobs(sizes * 3, seed)
    old = maglev._CAP, maglev._LATE
    maglev._CAP, maglev._LATE = cap, late
    try:
        fast = maglev_id_tables(jobs, m, vectorize=True)
    finally:
        maglev._CAP, maglev._LATE = old
    assert fast == maglev_id_tables(jobs, m, vectorize=False)


def test_id_tables_check_their_input() -> None:
    with pytest.raises(ValueError):
        maglev_id_tables([(["a", "b"], [1])], M)
    with pytest.raises(ValueError):
        maglev_id_tables([(["a"], [1])], 1000)
