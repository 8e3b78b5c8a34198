"""The slot tables of a sync pass, filled and written in chunks on a thread per CPU.

Each service with backends has an m-slot table of backend ids: Maglev order, or a uniform
spread for random choice (a random slot only needs every backend equally often, not
consistency). A TableWriter collects them as the sync's loop produces them; write(),
called once the backends the tables point at are written, fills CHUNK tables at a time
in C (bpf/maglev.py) and writes them, each chunk on a worker: both steps run with the
GIL released, so they use every CPU. A small pass (one change) starts no thread. Chunks of
1 MB (at m = 1021) keep the buffers in cache: one 40 MB buffer cost as much to fault in as
to fill. (Filling chunks on workers while the loop still ran did not pay: the workers
waited for the GIL the loop held.)
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from bpf.maglev import maglev_flat, native
from bpf.mapstore import MapPort, write_owned
from bpf.table import Algorithm

Owner = TypeVar("Owner", bound=Hashable)
Job = tuple[Sequence[int], Sequence[str], Algorithm]  # backend ids, their names, algorithm

CHUNK = 256  # tables per fill step: 1 MB at m = 1021


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
    """The tables of one pass, by owner (a service) and table id (the map key)."""

    def __init__(self, m: int, workers: int | None = None) -> None:
        self.m = m
        self.workers = workers or os.cpu_count() or 1
        self._owners: list[Owner] = []
        self._ids: list[int] = []
        self._jobs: list[Job] = []

    def __len__(self) -> int:
        return len(self._owners)

    def add(self, owner: Owner, table_id: int, ids: Sequence[int], names: Sequence[str],
            algorithm: Algorithm) -> None:
        self._owners.append(owner)
        self._ids.append(table_id)
        self._jobs.append((ids, names, algorithm))

    def write(self, port: MapPort, keep: Callable[[Owner], bool] = lambda _: True,
              ) -> tuple[dict[Owner, str], list[tuple[Owner, int]]]:
        """Fill and write the tables of the owners keep() accepts (a service that failed
        since it was added is left out), CHUNK at a time. Returns (failed owner -> reason,
        (owner, id) written)."""
        rows = [i for i, o in enumerate(self._owners) if keep(o)]
        owners = [self._owners[i] for i in rows]
        ids = [self._ids[i] for i in rows]
        jobs = [self._jobs[i] for i in rows]
        self._owners, self._ids, self._jobs = [], [], []

        # without the C library, the numpy fill wants every table of the pass at once
        chunk = CHUNK if native() else max(len(jobs), 1)

        def step(lo: int) -> dict[Owner, str]:
            hi = lo + chunk
            return write_owned(port, owners[lo:hi], bytearray(array("I", ids[lo:hi])),
                               slot_tables(jobs[lo:hi], self.m))

        starts = range(0, len(jobs), chunk)
        failed: dict[Owner, str] = {}
        if min(self.workers, len(starts)) <= 1:
            for lo in starts:
                failed.update(step(lo))
        else:
            with ThreadPoolExecutor(min(self.workers, len(starts)),
                                    thread_name_prefix="tables") as pool:
                for part in pool.map(step, starts):
                    failed.update(part)
        return failed, list(zip(owners, ids, strict=True))
