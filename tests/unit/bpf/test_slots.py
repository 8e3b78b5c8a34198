"""The slot tables of a pass: what slot_tables lays out, and TableWriter's chunks, worker
threads, failures and left-out owners, against a fake and a kernel map."""

from __future__ import annotations

import os
import threading
import time
from array import array

import pytest

from bpf import slots
from bpf.maglev import maglev_id_tables, native, native_path
from bpf.mapstore import FakeMap, MapPort
from bpf.slots import BATCH, CHUNK, TableWriter, slot_tables
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
    w: TableWriter[str] = TableWriter(M, port, workers=2)
    threads: set[str] = set()
    real = slots.slot_tables

    def spy(jobs: list[slots.Job], m: int) -> bytearray:
        threads.add(threading.current_thread().name)
        return real(jobs, m)

    slots.slot_tables = spy  # type: ignore[assignment]
    try:
        for i in range(n):
            w.add(f"s{i}", 1000 + i, *job(i % 50, 2, Algorithm.MAGLEV)[:2], Algorithm.MAGLEV)
        failed, written = w.write(lambda o: int(o[1:]) % keep_every == 0)
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
    bad: TableWriter[str] = TableWriter(M, FakeMap(4, 4 * M, 1 << 12), workers=2)
    for i in range(2 * CHUNK):
        bad.add(f"s{i}", i, [1, 2], ["a:1", "a:1"], Algorithm.MAGLEV)
    with pytest.raises(ValueError):
        bad.write()


# The writer against a fake and a kernel map: a real map takes the tables of new services
# from the C fill threads during the pass, the fake gets them all from write().

def _port(kind: str, max_entries: int) -> MapPort:
    if kind == "fake":
        return FakeMap(4, 4 * M, max_entries)
    if os.geteuid() != 0:
        pytest.skip("needs root: creating a kernel BPF map")
    from bpf import libbpf
    from bpf.mapstore import PinnedMap

    return PinnedMap(libbpf.map_create(libbpf.BPF_MAP_TYPE_HASH, "rr_slots", 4, 4 * M,
                                       max_entries))


def _contents(port: MapPort) -> dict[int, bytes]:
    return {int.from_bytes(k, "little"): v for k, v in port.items()}


@pytest.mark.parametrize("kind", ["fake", "kernel"])
def test_new_and_changed_tables_land_alike_in_a_fake_and_a_kernel_map(kind: str) -> None:
    port = _port(kind, 1 << 14)
    n = BATCH + CHUNK + 3
    jobs = {i: job(i % 60, 1 + i % 3, Algorithm.RANDOM if i % 11 == 0 else Algorithm.MAGLEV)
            for i in range(n)}
    try:
        with TableWriter[str](M, port, workers=2) as w:
            for i, (ids, names, alg) in jobs.items():
                w.add(f"s{i}", 5000 + i, ids, names, alg, new=i % 3 != 0)
            failed, written = w.write(lambda o: int(o[1:]) % 7 != 0)
        kept = {i for i in jobs if i % 7 != 0}
        assert not failed and sorted(written) == sorted((f"s{i}", 5000 + i) for i in kept)
        got = _contents(port)
        assert set(got) == {5000 + i for i in kept}  # left out: never written, or deleted
        for i in kept:
            ids, names, alg = jobs[i]
            if alg is Algorithm.MAGLEV:
                assert got[5000 + i] == maglev_id_tables([(names, ids)], M, fill="python")[0]
            else:  # ids in turn, as slot_tables spreads them
                assert got[5000 + i] == (array("I", ids) * M)[:M].tobytes()
    finally:
        getattr(port, "close", lambda: None)()


def test_new_tables_reach_a_kernel_map_before_write() -> None:
    if not native():
        pytest.skip(f"needs the C fill library ({native_path()}, make native)")
    port = _port("kernel", 1 << 12)
    try:
        with TableWriter[str](M, port, workers=2) as w:
            for i in range(CHUNK):
                w.add(f"s{i}", 7000 + i, *job(i % 50, 2, Algorithm.MAGLEV)[:2],
                      Algorithm.MAGLEV, new=True)
            deadline = time.monotonic() + 5
            while len(_contents(port)) < CHUNK and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(_contents(port)) == CHUNK  # written by the fill thread
            failed, written = w.write()
        assert not failed and len(written) == CHUNK
    finally:
        getattr(port, "close", lambda: None)()


@pytest.mark.parametrize("kind", ["fake", "kernel"])
def test_a_full_map_blames_the_new_tables_that_did_not_fit(kind: str) -> None:
    port = _port(kind, CHUNK)
    try:
        with TableWriter[str](M, port, workers=2) as w:
            for i in range(CHUNK + 10):
                w.add(f"s{i}", 1000 + i, *job(i % 50, 2, Algorithm.MAGLEV)[:2],
                      Algorithm.MAGLEV, new=True)
            failed, written = w.write()
        stored = {i - 1000 for i in _contents(port)}
        assert len(stored) == CHUNK and len(failed) == 10
        assert stored.isdisjoint(int(o[1:]) for o in failed)
        assert stored | {int(o[1:]) for o in failed} == set(range(CHUNK + 10))
        assert all("map full" in why for why in failed.values())
    finally:
        getattr(port, "close", lambda: None)()


def test_without_the_c_library_every_table_is_still_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bpf import maglev

    monkeypatch.setattr(maglev, "_native", lambda: None)
    port = FakeMap(4, 4 * M, 1 << 14)
    n = 2 * BATCH + 5
    with TableWriter[str](M, port, workers=2) as w:
        for i in range(n):
            w.add(f"s{i}", i, *job(i % 50, 2, Algorithm.MAGLEV)[:2], Algorithm.MAGLEV,
                  new=i % 2 == 0)
        failed, written = w.write()
    assert not failed and len(written) == n == len(port.data)
    last = n - 1
    ids, names, _ = job(last % 50, 2, Algorithm.MAGLEV)
    assert port.data[last.to_bytes(4, "little")] == maglev_id_tables(
        [(names, ids)], M, fill="python")[0]


def test_a_small_pass_of_new_tables_into_a_kernel_map_starts_no_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_queue(*_: object, **__: object) -> None:
        raise AssertionError("a fill queue (and its thread) for a small pass")

    monkeypatch.setattr(slots, "FillQueue", no_queue)
    port = _port("kernel", 1 << 12)
    try:
        with TableWriter[str](M, port, workers=2) as w:
            for i in range(CHUNK - 1):
                w.add(f"s{i}", 3000 + i, *job(i % 50, 2, Algorithm.MAGLEV)[:2],
                      Algorithm.MAGLEV, new=True)
            failed, written = w.write()
        assert not failed and len(written) == CHUNK - 1 == len(_contents(port))
    finally:
        getattr(port, "close", lambda: None)()
