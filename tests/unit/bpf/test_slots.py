"""The slot tables of a pass: what slot_tables lays out, and TableWriter's chunks, worker
threads, failures and left-out owners."""

from __future__ import annotations

import threading
from array import array

import pytest

from bpf import slots
from bpf.maglev import maglev_id_tables
from bpf.mapstore import FakeMap
from bpf.slots import CHUNK, TableWriter, slot_tables
from bpf.table import Algorithm

M = 251


def job(i: int, n: int, alg: Algorithm) -> slots.Job:
    names = [f"10.0.{i}.{j}:80" for j in range(n)]
    return (list(range(100 * i + 1, 100 * i + 1 + n)), names, alg)


def test_mixed_algorithms_keep_the_order_of_the_jobs() -> None:
    jobs = [job(i, 1 + i % 4, Algorithm.RANDOM if i % 3 == 0 else Algorithm.MAGLEV)
            for i in range(12)]
    out = slot_tables(jobs, M)
    assert len(out) == 4 * M * len(jobs)
    for i, (ids, names, alg) in enumerate(jobs):
        tab = array("I", out[4 * M * i:4 * M * (i + 1)]).tolist()
        if alg is Algorithm.MAGLEV:
            assert bytes(out[4 * M * i:4 * M * (i + 1)]) == maglev_id_tables(
                [(names, ids)], M, fill="python")[0]
        else:  # uniform: every backend equally often (within one)
            counts = [tab.count(b) for b in ids]
            assert set(tab) == set(ids) and max(counts) - min(counts) <= 1


def _writer_run(n: int, keep_every: int = 1, max_entries: int = 1 << 16
                ) -> tuple[FakeMap, dict[str, str], list[tuple[str, int]], set[str]]:
    port = FakeMap(4, 4 * M, max_entries)
    w: TableWriter[str] = TableWriter(M, workers=2)
    threads: set[str] = set()
    real = slots.slot_tables

    def spy(jobs: list[slots.Job], m: int) -> bytearray:
        threads.add(threading.current_thread().name)
        return real(jobs, m)

    slots.slot_tables = spy  # type: ignore[assignment]
    try:
        for i in range(n):
            w.add(f"s{i}", 1000 + i, *job(i % 50, 2, Algorithm.MAGLEV)[:2], Algorithm.MAGLEV)
        failed, written = w.write(port, lambda o: int(o[1:]) % keep_every == 0)
    finally:
        slots.slot_tables = real  # type: ignore[assignment]
    return port, failed, written, threads


def test_a_small_pass_starts_no_thread() -> None:
    port, failed, written, threads = _writer_run(CHUNK - 1)
    assert threads == {threading.current_thread().name}
    assert not failed and len(written) == CHUNK - 1 == len(port.data)


def test_chunks_fill_on_workers_and_every_table_is_written_once() -> None:
    n = 3 * CHUNK + 7
    port, failed, written, threads = _writer_run(n)
    assert any(t.startswith("tables") for t in threads)  # the chunks: on the workers
    assert not failed and sorted(i for _, i in written) == list(range(1000, 1000 + n))
    ids, names, _ = job(5, 2, Algorithm.MAGLEV)
    want = maglev_id_tables([(names, ids)], M, fill="python")[0]
    assert port.data[(1005).to_bytes(4, "little")] == want


def test_owners_left_out_are_not_written() -> None:
    port, failed, written, _ = _writer_run(2 * CHUNK, keep_every=3)
    assert {o for o, _ in written} == {f"s{i}" for i in range(0, 2 * CHUNK, 3)}
    assert len(port.data) == len(written) and not failed


def test_a_full_map_blames_the_owners_that_did_not_fit() -> None:
    port, failed, written, _ = _writer_run(CHUNK + 10, max_entries=CHUNK)
    assert len(port.data) == CHUNK and len(failed) == 10  # (the chunks race for room)
    stored = {int.from_bytes(k, "little") - 1000 for k in port.data}
    assert stored.isdisjoint(int(o[1:]) for o in failed)
    assert stored | {int(o[1:]) for o in failed} == set(range(CHUNK + 10))
    assert all("map full" in why for why in failed.values())


def test_a_bad_job_surfaces_from_its_worker() -> None:
    bad: TableWriter[str] = TableWriter(M, workers=2)
    for i in range(2 * CHUNK):
        bad.add(f"s{i}", i, [1, 2], ["a:1", "a:1"], Algorithm.MAGLEV)
    with pytest.raises(ValueError):
        bad.write(FakeMap(4, 4 * M, 1 << 12))
