"""Maglev consistent hashing (Eisenbud et al., NSDI 2016): the tables the programs read.

The table has m slots (m prime); each backend owns about m/n of them, and removing one
backend moves only the slots it owned (plus a small fraction). The program hashes a
flow's 5-tuple to a slot and reads the backend id stored there. A backend's offset and
skip come from a 64-bit hash of its name (FNV-1a with a murmur3 finish, _h), the same on
every node and in every fill below.

Speed: many tables are filled in one call to a small C library (bpf/maglev_fill.c, built
into .gen/libmaglev.so by `make native`, loaded with ctypes), which orders and hashes the
names itself. Without it, numpy fills many tables in lockstep, and without numpy the
pure-Python fill below does.

The pure fill: a backend's (offset, skip) pair is hashed once and cached; the fill walks each
backend's permutation incrementally (no modulo, no materialised permutation) while the
table is sparse, and once few slots are left it sorts the free slots by each backend's
preference instead of probing long runs of taken slots. Whole tables are cached by
backend set, so services that share one (a ClusterIP and its NodePorts, LB IPs) are
computed once. The result is identical to the textbook algorithm
(`maglev_table_reference`, kept for tests).
"""

from __future__ import annotations

import ctypes as ct
import os
import threading
from array import array
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

try:  # optional: fills many tables at once; the pure-Python fill gives the same tables
    import numpy as np
except ImportError:  # pragma: no cover - exercised where numpy is not installed
    np = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from numpy.typing import NDArray

    Ints = NDArray[Any]


_MASK = (1 << 64) - 1


def _h(name: str, salt: bytes) -> int:
    """64-bit FNV-1a of salt + name, finished with the murmur3 fmix64 mixer: the same
    function as maglev_hash in bpf/maglev_fill.c (the C fill hashes names itself)."""
    h = 0xCBF29CE484222325
    for b in salt + name.encode():
        h = ((h ^ b) * 0x100000001B3) & _MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


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


# --- many tables at once (numpy) -------------------------------------------------------
#
# The same fill, run in lockstep over a block of tables with the same number of backends:
# turn t is backend t % n's pick in every table of the block, so one array operation does
# that pick for all of them. A pick whose cursor slot is taken probes on, for the few
# tables that need it. The last LATE picks use ranks, like _slots: each backend takes the
# free slot it prefers most (argmin of its rank over the remaining free slots).

VEC_MIN_TABLES = 32   # fewer tables of one size: the pure fill is as fast
VEC_MAX_BACKENDS = 64  # more backends per table: the pure fill is as fast
_CELLS = 1 << 20       # bounds a block's rank array: n x tables x late
_LATE = 160            # the last this many picks go by rank
_CAP = 24              # a table still probing after this many steps is left to the pure fill


def vectorized() -> bool:
    """Is the numpy fill available?"""
    return np is not None


def _fill_block(off: Ints, skip: Ints, m: int) -> tuple[Ints, Ints]:
    """off, skip: (n, b) per backend (in name order) and table. Returns (grid, done):
    grid (b, m) maps slot -> backend position in name order for the tables in done; the
    others (rare stragglers whose probes ran long) are to be filled by _slots."""
    n, b = off.shape
    cur = off.copy()
    grid = np.full((b, m), -1, dtype=np.int32)
    tab = grid.reshape(-1)
    alive = np.arange(b, dtype=np.intp)
    base = alive * m
    late = min(_LATE, m)
    for t in range(m - late):
        j = t % n
        c = cur[j]  # a view: updating c moves the cursors
        busy = tab[base + c] >= 0
        if busy.any():
            idx = busy.nonzero()[0]
            cs, ks, bs = c[idx], skip[j, idx], base[idx]
            for _ in range(_CAP):
                cs += ks
                cs[cs >= m] -= m
                busy = tab[bs + cs] >= 0
                if not busy.any():
                    c[idx] = cs
                    break
                done = ~busy
                c[idx[done]] = cs[done]
                idx, cs, ks, bs = idx[busy], cs[busy], ks[busy], bs[busy]
            else:  # stragglers: drop them from the block
                keep = np.ones(len(alive), dtype=bool)
                keep[idx] = False
                cur, skip, off = cur[:, keep], skip[:, keep], off[:, keep]
                alive, base = alive[keep], base[keep]
                c = cur[j]
        tab[base + c] = j
        c += skip[j]
        c[c >= m] -= m
    # Late phase: every slot before a cursor is taken, so a backend's next pick is the
    # free slot of lowest rank (c - offset) * skip^-1 mod m.
    sub = grid[alive]
    free = (sub < 0).nonzero()[1].reshape(len(alive), late)  # each row has `late` left
    inv = _inverse_mod(skip, m)
    rank = (((free[None, :, :] - off[:, :, None]) * inv[:, :, None]) % m).astype(np.int32)
    rows = np.arange(len(alive), dtype=np.intp)
    for t in range(m - late, m):
        j = t % n
        pick = rank[j].argmin(axis=1)
        sub[rows, free[rows, pick]] = j
        rank[:, rows, pick] = m  # taken: no longer anyone's choice
    grid[alive] = sub
    return grid, alive


def _inverse_mod(a: Ints, m: int) -> Ints:
    """a^-1 mod m for prime m (a^(m-2), by squaring)."""
    out = np.ones_like(a)
    sq = a % m
    e = m - 2
    while e:
        if e & 1:
            out = out * sq % m
        sq = sq * sq % m
        e >>= 1
    return out


def _fill_many(tables: Sequence[tuple[str, ...]], m: int) -> list[Ints | tuple[int, ...]]:
    """Slot -> backend position in name order, for distinct tables of one size n >= 2
    (a numpy row, or the pure fill's tuple for a straggler)."""
    out: list[Ints | tuple[int, ...]] = []
    n = len(tables[0])
    block = max(1, _CELLS // (n * min(_LATE, m)))
    for lo in range(0, len(tables), block):
        part = tables[lo:lo + block]
        params = [_params(name, m) for names in part for name in sorted(names)]
        arr = np.array(params, dtype=np.int64).reshape(len(part), n, 2)
        grid, done = _fill_block(arr[:, :, 0].T.copy(), arr[:, :, 1].T.copy(), m)
        rows: list[Ints | tuple[int, ...]] = list(grid)
        ok = np.zeros(len(part), dtype=bool)
        ok[done] = True
        for i in (~ok).nonzero()[0].tolist():
            names = part[i]
            order = sorted(range(n), key=names.__getitem__)
            pos = {k: p for p, k in enumerate(order)}
            rows[i] = tuple(pos[k] for k in _slots(names, m))
        out.extend(rows)
    return out


# --- many tables at once (C) -----------------------------------------------------------

LIB_ENV = "RACKROUTE_LIBMAGLEV"  # overrides where the library is looked for
Fill = Literal["native", "numpy", "python"]
_U32P = ct.POINTER(ct.c_uint32)


def native_path() -> Path:
    """Where `make native` puts the fill library (the repo's git-ignored .gen/)."""
    env = os.environ.get(LIB_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".gen" / "libmaglev.so"


@cache
def _lib() -> Any | None:
    """The C library, or None when it is not built (or will not load)."""
    path = native_path()
    if not path.is_file():
        return None
    try:
        lib = ct.CDLL(str(path))
        fill, named, hsh = lib.maglev_fill, lib.maglev_fill_names, lib.maglev_hash
        qnew, qpush, qrun = lib.maglev_queue_new, lib.maglev_queue_push, lib.maglev_queue_run
        qclose, qfree = lib.maglev_queue_close, lib.maglev_queue_free
    except (OSError, AttributeError):  # not built, or built from an older source
        return None
    qnew.argtypes, qnew.restype = [ct.c_uint32, ct.c_int], ct.c_void_p
    qpush.argtypes = [ct.c_void_p, ct.c_uint32, ct.c_void_p, ct.c_char_p, ct.c_size_t,
                      ct.c_void_p, ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_void_p]
    qpush.restype = ct.c_int
    qrun.argtypes, qrun.restype = [ct.c_void_p], ct.c_int
    qclose.argtypes, qclose.restype = [ct.c_void_p], None
    qfree.argtypes, qfree.restype = [ct.c_void_p], None
    fill.argtypes = [ct.c_uint32, ct.c_uint32, ct.c_void_p, ct.c_void_p, ct.c_void_p,
                     ct.c_void_p, ct.c_void_p]
    fill.restype = ct.c_int
    named.argtypes = [ct.c_uint32, ct.c_uint32, ct.c_void_p, ct.c_char_p, ct.c_size_t,
                      ct.c_void_p, ct.c_void_p]
    named.restype = ct.c_int
    hsh.argtypes = [ct.c_char_p, ct.c_size_t, ct.c_char_p, ct.c_size_t]
    hsh.restype = ct.c_uint64
    return lib


def _native() -> Any | None:
    """maglev_fill from the C library, or None when it is not built (or will not load)."""
    lib = _lib()
    return None if lib is None else lib.maglev_fill


def native() -> bool:
    """Is the C fill available?"""
    return _native() is not None


def native_hash(name: str, salt: bytes) -> int:
    """The C library's maglev_hash (what _h mirrors); RuntimeError when not built."""
    lib = _lib()
    if lib is None:
        raise RuntimeError(f"the Maglev fill library is not built ({native_path()})")
    raw = name.encode()
    return int(lib.maglev_hash(salt, len(salt), raw, len(raw)))


def _addr(a: array[int]) -> int:
    return a.buffer_info()[0]


_PAR_MIN = 2048  # tables per thread, at least (a thread's start costs ~0.1 ms)


def _pack(jobs: Sequence[tuple[Sequence[str], Sequence[int]]], names: bool = True,
          ) -> tuple[array[int], bytes, array[int]]:
    """maglev_fill_names' arguments for jobs: counts, the names blob (empty unless
    names), the ids."""
    counts, ids = array("I", [len(n) for n, _ in jobs]), array("I")
    for _, i in jobs:
        ids.extend(i)
    blob = "".join(["\n".join(n) + "\n" for n, _ in jobs]).encode() if names else b""
    return counts, blob, ids


class FillQueue:
    """Maglev fills by the C library on background threads, started while the caller is
    still producing tables: push() hands over a batch and returns its (not yet filled)
    buffer; join() stops taking batches, helps drain the queue on the calling thread and
    returns once every buffer is filled. The consumers stay in C between batches, so they
    never wait for the GIL the producer holds (a Python worker per batch did).

    With map_fd (an open Maglev map: u32 key, m x u32 value), push_write() queues a batch
    that the consumer fills into a scratch buffer of its own and writes into that map at
    once: a large pass then never holds all its tables (40 MB at 10k) in fresh memory,
    whose page faults cost as much as the fill on a VM.
    """

    def __init__(self, m: int, workers: int = 1, map_fd: int = -1) -> None:
        lib = _lib()
        if lib is None:
            raise RuntimeError(f"the Maglev fill library is not built ({native_path()})")
        if not is_prime(m):
            raise ValueError(f"maglev table size {m} is not prime")
        self.m = m
        self._lib = lib
        self._q = lib.maglev_queue_new(m, map_fd)
        if not self._q:
            raise MemoryError("maglev_queue_new")
        self._keep: list[object] = []  # every buffer a job points at, until join()
        self._err = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._run, name="maglev-fill", daemon=True)
                         for _ in range(max(1, workers))]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        rc = self._lib.maglev_queue_run(self._q)  # the GIL is released for the call
        if rc:
            self._err = rc

    def push(self, jobs: Sequence[tuple[Sequence[str], Sequence[int]]],
             uniform: bool = False) -> bytearray:
        """Queue the tables of jobs (names, ids; each >= 1 backend); the buffer returned
        holds them, one after the other, once join() has returned. uniform: each table
        holds its ids in turn (a random choice's spread; the names are not used)."""
        out = bytearray(4 * self.m * len(jobs))
        if jobs:
            buf = (ct.c_char * len(out)).from_buffer(out)
            self._push(jobs, uniform, ct.addressof(buf), None, None)
            self._keep.append(buf)
        return out

    def push_write(self, jobs: Sequence[tuple[Sequence[str], Sequence[int]]],
                   keys: Sequence[int], uniform: bool = False) -> array[int]:
        """Queue the tables of jobs to be written into the map under keys (one each);
        returns their errnos (0: written), final once join() has returned."""
        if len(keys) != len(jobs):
            raise ValueError("one key per table")
        errs = array("i", bytes(4 * len(jobs)))
        if jobs:
            karr = array("I", keys)
            self._push(jobs, uniform, None, karr, errs)
            self._keep.append(karr)
        return errs

    def _push(self, jobs: Sequence[tuple[Sequence[str], Sequence[int]]], uniform: bool,
              out: int | None, keys: array[int] | None, errs: array[int] | None) -> None:
        if self._closed:
            raise RuntimeError("push after join")
        if any(not names or len(names) != len(ids) for names, ids in jobs):
            raise ValueError("a table needs >= 1 backend and one id per name")
        counts, blob, ids = _pack(jobs, names=not uniform)
        self._keep += [counts, blob, ids, errs]
        rc = self._lib.maglev_queue_push(
            self._q, len(counts), _addr(counts), blob, len(blob), _addr(ids), int(uniform),
            out, None if keys is None else _addr(keys), None if errs is None else _addr(errs))
        if rc:
            raise (MemoryError if rc == -2 else ValueError)(f"maglev_queue_push ({rc})")

    def join(self, help_: bool = True) -> None:
        """Take no more batches, wait until the queued ones are filled (filling on this
        thread too unless help_ is false) and free the queue; ValueError if a fill
        failed (bad names). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._lib.maglev_queue_close(self._q)
        if help_:
            self._run()
        for t in self._threads:
            t.join()
        self._lib.maglev_queue_free(self._q)
        self._q = None
        self._keep.clear()  # releases the buffers' exports
        if self._err:
            raise ValueError(f"maglev_fill failed ({self._err}): bad table size or names")


def _fill_native(jobs: Sequence[tuple[Sequence[str], Sequence[int]]], m: int) -> bytearray:
    """The id tables of jobs (each with >= 1 backend), one after the other, as one flat
    native uint32 buffer filled by the C library from the names (it orders and hashes
    them itself; one call per CPU, in threads: ctypes releases the GIL during a call)."""
    if _native() is None:
        raise RuntimeError(f"the Maglev fill library is not built ({native_path()})")
    lib = _lib()
    assert lib is not None
    out = bytearray(4 * m * len(jobs))
    if not jobs:
        return out
    if not is_prime(m):  # duplicate names are refused by the library
        raise ValueError(f"maglev table size {m} is not prime")
    if any(len(ids) != len(names) for names, ids in jobs):
        raise ValueError("one id per backend name")
    parts = max(1, min(os.cpu_count() or 1, len(jobs) // _PAR_MIN))
    cuts = [len(jobs) * p // parts for p in range(parts + 1)]
    args = []
    for p in range(parts):
        args.append(_pack(jobs[cuts[p]:cuts[p + 1]]))
    buf = (ct.c_char * len(out)).from_buffer(out)
    base = ct.addressof(buf)
    rets = [0] * parts

    def run(p: int) -> None:
        counts, blob, ids = args[p]
        rets[p] = lib.maglev_fill_names(len(counts), m, _addr(counts), blob, len(blob),
                                        _addr(ids), base + 4 * m * cuts[p])

    if parts == 1:
        run(0)
    else:
        threads = [threading.Thread(target=run, args=(p,)) for p in range(1, parts)]
        for t in threads:
            t.start()
        run(0)
        for t in threads:
            t.join()
    del buf  # releases the export of out
    bad = next((r for r in rets if r), 0)
    if bad:
        raise ValueError(f"maglev_fill failed ({bad}): bad table size or names")
    return out


def maglev_flat(jobs: Sequence[tuple[Sequence[str], Sequence[int]]], m: int) -> bytearray:
    """The tables of maglev_id_tables(jobs, m), one after the other in one buffer (what a
    batched map write takes); every job needs >= 1 backend. The C library writes it
    directly; without it, the tables of the other fills are joined."""
    if any(not names for names, _ in jobs):
        raise ValueError("a Maglev table needs at least one backend")
    if _native() is not None:
        return _fill_native(jobs, m)
    return bytearray().join(maglev_id_tables(jobs, m))


def maglev_id_tables(jobs: Sequence[tuple[Sequence[str], Sequence[int]]], m: int,
                     fill: Fill | None = None) -> list[bytes]:
    """For each (backend names, their ids): the m-slot table of ids as native uint32
    bytes, the same as mapping maglev_slots(names, m) through ids. fill=None picks the
    fastest there is: the C library when built, else numpy when installed and it pays
    off, else the pure-Python fill; naming one forces it (RuntimeError if missing)."""
    out: list[bytes | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for i, (names, ids) in enumerate(jobs):
        _check(names, m)
        if len(ids) != len(names):
            raise ValueError("one id per backend name")
        n = len(names)
        if n == 0:
            out[i] = b""
        elif n == 1:
            out[i] = array("I", ids).tobytes() * m
        else:
            groups.setdefault(n, []).append(i)
    if fill == "native" or (fill is None and groups and native()):
        todo = [i for members in groups.values() for i in members]
        flat = memoryview(_fill_native([jobs[i] for i in todo], m))
        size = 4 * m
        for j, i in enumerate(todo):  # the one copy: a map value per table
            out[i] = flat[j * size:(j + 1) * size].tobytes()
        groups = {}
    for n, members in groups.items():
        fast = fill == "numpy" or (fill is None and np is not None
                                   and len(members) >= VEC_MIN_TABLES
                                   and n <= VEC_MAX_BACKENDS)
        if not fast:
            for i in members:
                names, ids = jobs[i]
                out[i] = array("I", map(ids.__getitem__, _slots(tuple(names), m))).tobytes()
            continue
        if np is None:
            raise RuntimeError("numpy is not installed")
        keys = [tuple(jobs[i][0]) for i in members]
        slots = _fill_many(keys, m)
        for i, key, row in zip(members, keys, slots, strict=True):
            ids = jobs[i][1]
            order = sorted(range(n), key=key.__getitem__)
            by_pos = np.array([ids[k] for k in order], dtype=np.uint32)
            out[i] = by_pos[np.asarray(row, dtype=np.intp)].tobytes()
    return [b if b is not None else b"" for b in out]
