"""The slot tables of a sync pass, filled while the pass runs and written in chunks.

Each service with backends has an m-slot table of backend ids: Maglev order, or a uniform
spread for random choice (a random slot only needs every backend equally often, not
consistency). A TableWriter collects them as the sync's loop produces them.

With the C library, the tables (Maglev or uniform) are handed to a fill queue
(bpf/maglev.py FillQueue) whose consumer threads stay in C, so they are filled on the
other CPUs while the loop (which holds the GIL) still runs:
- the table of a new service (its id not in any service entry yet, so no packet can read
  it) is filled and written into a real map by the consumer at once, CHUNK at a time,
  from a scratch buffer it reuses: a 10k pass never holds 40 MB of fresh tables, whose
  page faults cost as much as the fill on a VM;
- the table of a service being changed must wait until the backends it points at are
  written: it is filled into a buffer of its own (BATCH per job), and written by write().
write(), called once the backends are written, queues the rest, helps drain the queue
and writes the buffered tables CHUNK per batched map update on a thread per CPU (the
syscalls release the GIL). A small pass (one change) starts no thread. Without the C
library (or with a fake map), everything is filled and written by write().
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from bpf.maglev import FillQueue, maglev_flat, native
from bpf.mapstore import MapPort, PinnedMap, refusal, write_owned
from bpf.table import Algorithm

Owner = TypeVar("Owner", bound=Hashable)
Job = tuple[Sequence[int], Sequence[str], Algorithm]  # backend ids, their names, algorithm
Tables = bytearray  # tables one after the other, native uint32

CHUNK = 256  # tables per map write (and per fill step after the loop): 1 MB at m = 1021
BATCH = 1024  # Maglev tables per fill job queued during the loop


def slot_tables(jobs: Sequence[Job], m: int) -> bytearray:
    """The tables of jobs (each with >= 1 backend), one after the other in one buffer of
    native uint32 (what a batched map write takes), in the order of jobs."""
    kinds = [j[2] is Algorithm.RANDOM for j in jobs]
    mg = [(names, ids) for (ids, names, _), rnd in zip(jobs, kinds, strict=True) if not rnd]
    if len(mg) == len(jobs):
        return maglev_flat(mg, m)
    size = 4 * m
    filled = maglev_flat(mg, m) if mg else bytearray()
    out = bytearray(size * len(jobs))
    i = 0
    for pos, ((ids, _, _), rnd) in enumerate(zip(jobs, kinds, strict=True)):
        if rnd:
            out[pos * size:(pos + 1) * size] = (array("I", ids) * (m // len(ids) + 1))[:m]
        else:
            out[pos * size:(pos + 1) * size] = filled[i * size:(i + 1) * size]
            i += 1
    return out


class TableWriter(Generic[Owner]):
    """The tables of one pass into port, by owner (a service) and table id (the map key).
    Use it as a context manager (or call close()): a pass that fails before write() must
    still stop the fill threads."""

    def __init__(self, m: int, port: MapPort, workers: int | None = None) -> None:
        self.m = m
        self.port = port
        self.workers = workers or os.cpu_count() or 1
        self._owners: list[Owner] = []
        self._ids: list[int] = []
        self._jobs: list[Job] = []
        # rows not queued yet, by (new: written by the fill threads, uniform: random)
        self._pending: dict[tuple[bool, bool], list[int]] = {}
        self._buffered: list[tuple[list[int], Tables]] = []  # rows -> their tables
        self._sent: list[tuple[list[int], array[int]]] = []  # rows written -> errnos
        self._queue: FillQueue | None = None
        # where the fill threads write new tables themselves (-1: write() writes all)
        self._fd = port.fd if isinstance(port, PinnedMap) and native() else -1

    def __len__(self) -> int:
        return len(self._owners)

    def __enter__(self) -> TableWriter[Owner]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Take no more jobs and wait for the fill threads. Jobs already queued still run:
        a pass cut short may leave new services' tables in the map, which nothing reads
        and the next adopting syncer deletes (bpf/sync.py)."""
        q, self._queue = self._queue, None
        if q is not None:
            q.join(help_=False)

    def add(self, owner: Owner, table_id: int, ids: Sequence[int], names: Sequence[str],
            algorithm: Algorithm, new: bool = False) -> None:
        """A table to write; new: no service entry refers to table_id yet, so the table
        may be written before the backends it names (and before write())."""
        row = len(self._owners)
        self._owners.append(owner)
        self._ids.append(table_id)
        self._jobs.append((ids, names, algorithm))
        early = new and self._fd >= 0
        kind = (early, algorithm is Algorithm.RANDOM)
        rows = self._pending.get(kind)
        if rows is None:
            rows = self._pending[kind] = []
        rows.append(row)
        if early and len(rows) >= CHUNK:
            self._send(rows, kind[1])
            self._pending[kind] = []
        elif not early and len(rows) >= BATCH and self._fills() is not None:
            self._buffer(rows, BATCH, kind[1])
            self._pending[kind] = []

    def _fills(self) -> FillQueue | None:
        if self._queue is None and native():
            self._queue = FillQueue(self.m, max(1, self.workers - 1), self._fd)
        return self._queue

    def _send(self, rows: list[int], uniform: bool) -> None:
        """Fill and write rows (all uniform or all Maglev) into the map on a consumer."""
        q = self._fills()
        assert q is not None
        jobs, ids = self._jobs, self._ids
        errs = q.push_write([(jobs[r][1], jobs[r][0]) for r in rows], [ids[r] for r in rows],
                            uniform)
        self._sent.append((rows, errs))

    def _buffer(self, rows: list[int], size: int, uniform: bool) -> None:
        """Fill rows (all uniform or all Maglev) into buffers on a consumer thread, size
        tables a job."""
        q = self._fills()
        assert q is not None
        jobs = self._jobs
        for lo in range(0, len(rows), size):
            part = rows[lo:lo + size]
            self._buffered.append((part, q.push([(jobs[r][1], jobs[r][0]) for r in part],
                                                 uniform)))

    def write(self, keep: Callable[[Owner], bool] = lambda _: True,
              ) -> tuple[dict[Owner, str], list[tuple[Owner, int]]]:
        """Fill and write the tables of the owners keep() accepts (a service that failed
        since it was added is left out: its table is deleted if it was written already).
        Returns (failed owner -> reason, (owner, id) written)."""
        owners, ids, jobs = self._owners, self._ids, self._jobs
        here: list[int] = []  # a small pass, or no C library (numpy wants one call)
        try:
            for (early, uniform), rows in self._pending.items():
                if self._queue is None:  # a small pass: no queue, no thread started
                    here += rows
                elif early:
                    self._send(rows, uniform)
                else:
                    self._buffer(rows, CHUNK, uniform)  # the rest: on every CPU below
            if self._queue is not None:
                q, self._queue = self._queue, None
                q.join()
            buffered, sent = self._buffered, self._sent
            if here:
                here.sort()
                buffered += self._fill_here([jobs[r] for r in here], here)
        finally:
            self._owners, self._ids, self._jobs = [], [], []
            self._pending, self._buffered, self._sent = {}, [], []
            self.close()

        failed: dict[Owner, str] = {}
        written: list[tuple[Owner, int]] = []
        unwanted: list[int] = []
        for rows, errs in sent:
            for r, err in zip(rows, errs, strict=True):
                if err:
                    failed[owners[r]] = refusal(err)
                elif keep(owners[r]):
                    written.append((owners[r], ids[r]))
                else:
                    unwanted.append(ids[r])
        if unwanted:
            self.port.delete_batch([i.to_bytes(4, "little") for i in unwanted])

        size = 4 * self.m
        steps: list[tuple[list[Owner], list[int], bytearray | memoryview]] = []
        for rows, buf in buffered:
            view = memoryview(buf)
            for a in range(0, len(rows), CHUNK):
                part = range(a, min(a + CHUNK, len(rows)))
                take = [i for i in part if keep(owners[rows[i]])]
                if not take:
                    continue
                if len(take) == len(part):
                    vals: bytearray | memoryview = view[a * size:part.stop * size]
                else:
                    vals = bytearray().join(view[i * size:(i + 1) * size] for i in take)
                steps.append(([owners[rows[i]] for i in take], [ids[rows[i]] for i in take],
                              vals))
                written.extend((owners[rows[i]], ids[rows[i]]) for i in take)

        def step(s: tuple[list[Owner], list[int], bytearray | memoryview]) -> dict[Owner, str]:
            return write_owned(self.port, s[0], bytearray(array("I", s[1])), s[2])

        if min(self.workers, len(steps)) <= 1:
            for s in steps:
                failed.update(step(s))
        else:
            with ThreadPoolExecutor(min(self.workers, len(steps)),
                                    thread_name_prefix="tables") as pool:
                for part_failed in pool.map(step, steps):
                    failed.update(part_failed)
        return failed, written

    def _fill_here(self, jobs: list[Job], rows: list[int]) -> list[tuple[list[int], Tables]]:
        """Fill jobs (rows) without the queue: one call without the C library, else CHUNK
        at a time on a thread per CPU."""
        chunk = CHUNK if native() else len(jobs)
        if len(jobs) <= chunk:
            return [(rows, slot_tables(jobs, self.m))]
        starts = range(0, len(jobs), chunk)

        def fill(lo: int) -> tuple[list[int], Tables]:
            return rows[lo:lo + chunk], slot_tables(jobs[lo:lo + chunk], self.m)

        with ThreadPoolExecutor(min(self.workers, len(starts)),
                                thread_name_prefix="tables") as pool:
            return list(pool.map(fill, starts))
