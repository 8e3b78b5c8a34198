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
    for (names, ids), tab in zip(jobs, maglev_id_tables(jobs, m, fill="python"),
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
        fast = maglev_id_tables(jobs, m, fill="numpy")
    finally:
        maglev._CAP, maglev._LATE = old
    assert fast == maglev_id_tables(jobs, m, fill="python")


def test_id_tables_check_their_input() -> None:
    with pytest.raises(ValueError):
        maglev_id_tables([(["a", "b"], [1])], M)
    with pytest.raises(ValueError):
        maglev_id_tables([(["a"], [1])], 1000)


needs_native = pytest.mark.skipif(not maglev.native(), reason="libmaglev.so not built "
                                  "(make native)")


@needs_native
@pytest.mark.parametrize("m", [7, 251, 1021, 65537])
def test_native_fill_equals_the_reference(m: int) -> None:
    from array import array

    sizes = [1, 2, 2, 3, 9, 40, 80] if m > 7 else [1, 2, 3, 5, 9, 30]
    jobs = _jobs(sizes, m)
    for (names, ids), tab in zip(jobs, maglev_id_tables(jobs, m, fill="native"),
                                 strict=True):
        want = [ids[i] for i in maglev_table_reference(names, m)]
        assert array("I", tab).tolist() == want


@needs_native
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 70), min_size=1, max_size=12), st.sampled_from([7, 251, 1021]),
       st.integers(0, 1000))
def test_native_fill_equals_the_pure_fill(sizes: list[int], m: int, seed: int) -> None:
    jobs = _jobs(sizes * 3, seed)
    assert maglev_id_tables(jobs, m, fill="native") == maglev_id_tables(jobs, m, fill="python")


@needs_native
def test_native_fill_refuses_bad_parameters() -> None:
    from array import array

    fn = maglev._native()
    assert fn is not None
    out = array("I", [0] * 4 * 8)
    one = array("I", [1])
    for m, count, off, skip in ((8, 1, 0, 1), (7, 0, 0, 1), (7, 1, 7, 1), (7, 1, 0, 0),
                                (7, 1, 0, 7)):
        counts, offs, skips = array("I", [count]), array("I", [off]), array("I", [skip])
        ret = fn(1, m, counts.buffer_info()[0], offs.buffer_info()[0],
                 skips.buffer_info()[0], one.buffer_info()[0], out.buffer_info()[0])
        assert ret < 0 or m == 8  # m = 8 with skip 1 still visits every slot
    assert fn(0, 7, None, None, None, None, None) == 0


def test_fallback_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C library when it loads, else numpy, else the pure fill; same bytes each way."""
    jobs = _jobs([2, 3] * 40, 5)
    want = maglev_id_tables(jobs, M, fill="python")
    used: list[str] = []
    real_native, real_many, real_slots = maglev._fill_native, maglev._fill_many, maglev._slots

    def spy(name: str, fn: object) -> object:
        def call(*a: object) -> object:
            used.append(name)
            return fn(*a)  # type: ignore[operator]
        return call

    monkeypatch.setattr(maglev, "_fill_native", spy("native", real_native))
    monkeypatch.setattr(maglev, "_fill_many", spy("numpy", real_many))
    monkeypatch.setattr(maglev, "_slots", spy("python", real_slots))
    if maglev.native():
        assert maglev_id_tables(jobs, M) == want
        assert used == ["native"]
    monkeypatch.setattr(maglev, "_native", lambda: None)  # the library did not load
    used.clear()
    if maglev.np is not None:
        assert maglev_id_tables(jobs, M) == want
        assert "numpy" in used and "native" not in used
        monkeypatch.setattr(maglev, "np", None)
        used.clear()
    assert maglev_id_tables(jobs, M) == want
    assert set(used) == {"python"}
    with pytest.raises(RuntimeError):
        maglev_id_tables(jobs, M, fill="native")


def test_library_path_and_a_missing_library(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: object) -> None:
    from pathlib import Path

    monkeypatch.delenv(maglev.LIB_ENV, raising=False)
    assert maglev.native_path().name == "libmaglev.so"
    assert maglev.native_path().parent.name == ".gen"
    missing = Path(str(tmp_path)) / "none.so"
    monkeypatch.setenv(maglev.LIB_ENV, str(missing))
    assert maglev.native_path() == missing
    maglev._lib.cache_clear()
    try:
        assert not maglev.native()
        broken = Path(str(tmp_path)) / "broken.so"
        broken.write_bytes(b"not an ELF file")
        monkeypatch.setenv(maglev.LIB_ENV, str(broken))
        maglev._lib.cache_clear()
        assert maglev._native() is None
    finally:
        monkeypatch.delenv(maglev.LIB_ENV)
        maglev._lib.cache_clear()


@needs_native
def test_native_fill_split_over_threads_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs([2, 5, 2, 3, 17, 2, 4] * 3, 11)
    want = maglev_id_tables(jobs, 251, fill="python")
    monkeypatch.setattr(maglev, "_PAR_MIN", 1)
    monkeypatch.setattr(maglev.os, "cpu_count", lambda: 4)
    assert maglev_id_tables(jobs, 251, fill="native") == want


def test_backend_hash_is_fnv1a_with_a_murmur_finish() -> None:
    """The documented function, spelled out once more (a change here renumbers every
    table on every node, which must be deliberate)."""
    def ref(data: bytes) -> int:
        h = 0xCBF29CE484222325
        for b in data:
            h = ((h ^ b) * 0x100000001B3) % 2**64
        for mul in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
            h = ((h ^ (h >> 33)) * mul) % 2**64
        return h ^ (h >> 33)

    for name in ("10.0.0.1:80", "[fd00::1]:443", ""):
        for salt in (b"offset", b"skip"):
            assert maglev._h(name, salt) == ref(salt + name.encode())
    # pinned values: every node must compute the same tables, release after release
    assert maglev._h("10.0.0.1:80", b"offset") == 0x55F41726661B94A0
    assert maglev._h("10.0.0.1:80", b"skip") == 0x31205B9A2DBB8A8C


@needs_native
def test_native_hash_equals_the_python_hash() -> None:
    for name in ("10.0.0.1:80", "[fd00::1]:443", "", "x" * 300, "\u00e9t\u00e9:1"):
        for salt in (b"offset", b"skip"):
            assert maglev.native_hash(name, salt) == maglev._h(name, salt)


@needs_native
def test_native_fill_orders_names_like_python() -> None:
    """Turn order is name order; the library sorts bytes, Python sorts code points."""
    names = ["b:1", "a:1", "\u00e9:1", "a:10", "A:1", "z\u0100:2"]
    jobs = [(names, list(range(1, len(names) + 1)))]
    assert bytes(maglev.maglev_flat(jobs, 251)) == maglev_id_tables(jobs, 251, fill="python")[0]


@needs_native
def test_native_fill_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError):
        maglev.maglev_flat([(["a:1", "b:1", "a:1"], [1, 2, 3])], 251)


def test_flat_tables_are_the_tables_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs([1, 2, 3, 9], 3)
    want = b"".join(maglev_id_tables(jobs, 251, fill="python"))
    if maglev.native():
        assert bytes(maglev.maglev_flat(jobs, 251)) == want
    monkeypatch.setattr(maglev, "_native", lambda: None)
    assert bytes(maglev.maglev_flat(jobs, 251)) == want
    with pytest.raises(ValueError):
        maglev.maglev_flat([([], [])], 251)
