"""Byte-level map port: the pinned-map adapter and an in-memory fake with one contract.

Keys and values are raw bytes (ctypes structs from bpf/maps.py serialised with bytes()).
update_batch / update_batch_flat / delete_batch raise MapWriteError naming how many items
were applied, so a caller can fall back to single writes and blame the right service.
update_batch_flat takes the keys and the values each as one buffer of count entries laid
end to end (what the kernel's batch call wants), so a large batch is not copied again.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import threading
from collections.abc import Hashable, Iterator, Sequence
from typing import Protocol, TypeVar

from bpf import libbpf

Buffer = bytes | bytearray | memoryview
Owner = TypeVar("Owner", bound=Hashable)


def _flat_sizes_ok(keys: Buffer, values: Buffer, count: int, ks: int, vs: int) -> bool:
    return (count >= 0 and memoryview(keys).nbytes == count * ks
            and memoryview(values).nbytes == count * vs)


class MapWriteError(OSError):
    """A batch write stopped early; done says how many items were applied."""

    def __init__(self, err: int, msg: str, done: int) -> None:
        super().__init__(err, msg)
        self.done = done


class MapPort(Protocol):
    """What the sync needs from one map."""

    key_size: int
    value_size: int
    max_entries: int

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...
    def lookup(self, key: bytes) -> bytes | None: ...
    def update_batch(self, items: Sequence[tuple[bytes, bytes]]) -> None: ...
    def update_batch_flat(self, keys: Buffer, values: Buffer, count: int) -> None: ...
    def delete_batch(self, keys: Sequence[bytes]) -> None: ...


class FakeMap:
    """A hash map in memory with the kernel's size and capacity rules; safe to write from
    several threads at once, as a kernel map is (each item is applied atomically)."""

    def __init__(self, key_size: int, value_size: int, max_entries: int) -> None:
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.data: dict[bytes, bytes] = {}
        self.batch_calls = 0
        self._lock = threading.Lock()

    def _check(self, key: bytes, value: bytes | None = None) -> None:
        if len(key) != self.key_size or (value is not None and len(value) != self.value_size):
            raise MapWriteError(errno.EINVAL, "wrong key or value size", 0)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.data.items()))

    def lookup(self, key: bytes) -> bytes | None:
        self._check(key)
        return self.data.get(key)

    def update_batch(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self.batch_calls += 1
        for done, (k, v) in enumerate(items):
            try:
                self._check(k, v)
            except MapWriteError as e:
                raise MapWriteError(e.errno or errno.EINVAL, str(e), done) from None
            with self._lock:
                if k not in self.data and len(self.data) >= self.max_entries:
                    raise MapWriteError(errno.E2BIG, "map full", done)
                self.data[k] = v

    def update_batch_flat(self, keys: Buffer, values: Buffer, count: int) -> None:
        if not _flat_sizes_ok(keys, values, count, self.key_size, self.value_size):
            self.batch_calls += 1
            raise MapWriteError(errno.EINVAL, "wrong key or value size", 0)
        ks, vs = self.key_size, self.value_size
        kv, vv = memoryview(keys).cast("B"), memoryview(values).cast("B")
        self.update_batch([(bytes(kv[i * ks:(i + 1) * ks]), bytes(vv[i * vs:(i + 1) * vs]))
                           for i in range(count)])

    def delete_batch(self, keys: Sequence[bytes]) -> None:
        self.batch_calls += 1
        for done, k in enumerate(keys):
            with self._lock:
                if k not in self.data:
                    raise MapWriteError(errno.ENOENT, "no such key", done)
                del self.data[k]


def _ptr(buf: Buffer) -> bytes | ct.Array[ct.c_char]:
    """buf as a pointer argument for ctypes without copying it (bytes pass as they are;
    a writable buffer is wrapped in place; a read-only view is copied)."""
    if isinstance(buf, bytes):
        return buf
    view = memoryview(buf)
    if view.readonly or not view.c_contiguous:
        return view.tobytes()
    return (ct.c_char * view.nbytes).from_buffer(view)


class PinnedMap:
    """A map opened from its pin in bpffs (or from an fd), driven through libbpf."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        meta = libbpf.map_info(fd)
        self.meta = meta
        self.key_size = meta.key_size
        self.value_size = meta.value_size
        self.max_entries = meta.max_entries

    @classmethod
    def open(cls, path: str) -> PinnedMap:
        return cls(libbpf.obj_get(path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lookup(self, key: bytes) -> bytes | None:
        val = ct.create_string_buffer(self.value_size)
        ret = libbpf.lib().bpf_map_lookup_elem(self.fd, key, val)
        if ret < 0:
            if -ret == errno.ENOENT or ct.get_errno() == errno.ENOENT:
                return None
            libbpf.check(ret, "lookup")
        return val.raw

    def keys(self) -> Iterator[bytes]:
        cur: bytes | None = None
        nxt = ct.create_string_buffer(self.key_size)
        while True:
            ret = libbpf.lib().bpf_map_get_next_key(self.fd, cur, nxt)
            if ret < 0:
                return
            cur = nxt.raw
            yield cur

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value): read in batches of up to about 1 MB (BPF_MAP_LOOKUP_BATCH,
        one call per batch instead of two per entry); a map type without batch lookup
        (an LPM trie) is walked key by key."""
        batches = self._batches()
        try:
            first = next(batches)
        except StopIteration:
            return
        except OSError:  # no batch lookup for this map type
            for k in list(self.keys()):
                v = self.lookup(k)
                if v is not None:
                    yield k, v
            return
        yield from first
        for chunk in batches:
            yield from chunk

    def _batches(self) -> Iterator[list[tuple[bytes, bytes]]]:
        ks, vs = self.key_size, self.value_size
        n = max(1, min(self.max_entries, (1 << 20) // (ks + vs)))
        token_in: ct.Array[ct.c_char] | None = None
        token_out = ct.create_string_buffer(max(ks, 8))  # opaque position (a bucket)
        so = libbpf.lib()
        while True:
            keys = ct.create_string_buffer(n * ks)
            vals = ct.create_string_buffer(n * vs)
            count = ct.c_uint32(n)
            ret = so.bpf_map_lookup_batch(self.fd, token_in, token_out, keys, vals,
                                          ct.byref(count), None)
            err = (-ret if ret != -1 else ct.get_errno()) if ret < 0 else 0
            if err == errno.ENOSPC and count.value == 0 and n < self.max_entries:
                n = min(self.max_entries, n * 2)  # a bucket holds more than n entries
                continue
            if err and err != errno.ENOENT:
                raise libbpf.BpfError(err, f"lookup batch: {os.strerror(err)}")
            got = count.value
            kraw, vraw = keys.raw, vals.raw
            yield [(kraw[i * ks:(i + 1) * ks], vraw[i * vs:(i + 1) * vs]) for i in range(got)]
            if err == errno.ENOENT:  # the end
                return
            token_in = ct.create_string_buffer(token_out.raw, len(token_out))

    def update_batch(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        if not items:
            return
        self.update_batch_flat(b"".join(k for k, _ in items), b"".join(v for _, v in items),
                               len(items))

    def update_batch_flat(self, keys: Buffer, values: Buffer, count: int) -> None:
        if not _flat_sizes_ok(keys, values, count, self.key_size, self.value_size):
            raise MapWriteError(errno.EINVAL, "wrong key or value size", 0)
        if not count:
            return
        count_ = ct.c_uint32(count)
        ret = libbpf.lib().bpf_map_update_batch(self.fd, _ptr(keys), _ptr(values),
                                                ct.byref(count_), None)
        if ret < 0:
            err = -ret
            raise MapWriteError(err, f"update batch: {os.strerror(err)}", count_.value)

    def delete_batch(self, keys: Sequence[bytes]) -> None:
        if not keys:
            return
        buf = b"".join(keys)
        count = ct.c_uint32(len(keys))
        ret = libbpf.lib().bpf_map_delete_batch(self.fd, buf, ct.byref(count), None)
        if ret < 0:
            err = -ret
            raise MapWriteError(err, f"delete batch: {os.strerror(err)}", count.value)


def refusal(err: int) -> str:
    """How a map's refusal of an item (its errno) is reported."""
    why = "map full" if err == errno.E2BIG else os.strerror(err)
    return f"{why} (errno {err})"


def write_owned(port: MapPort, owners: Sequence[Owner], keys: Sequence[bytes] | bytearray,
                values: Sequence[bytes] | bytearray | memoryview) -> dict[Owner, str]:
    """Batch write of keys[i] -> values[i] (each given as a list, or as one flat buffer
    of equal-sized items: a bytearray, or a memoryview of one); on failure, blame the
    failing item's owner and carry on with the items after it."""
    failed: dict[Owner, str] = {}
    n = len(owners)
    if not n:
        return failed
    # bytearrays: a writable buffer (and a slice of it) reaches the kernel uncopied
    kflat = keys if isinstance(keys, bytearray) else bytearray().join(keys)
    vflat = values if isinstance(values, bytearray | memoryview) else bytearray().join(values)
    ks, vs = len(kflat) // n, len(vflat) // n
    kbuf, vbuf = memoryview(kflat), memoryview(vflat)
    lo = 0
    while lo < n:
        try:
            port.update_batch_flat(kbuf[lo * ks:], vbuf[lo * vs:], n - lo)
            return failed
        except MapWriteError as e:
            bad = min(lo + e.done, n - 1)
            failed[owners[bad]] = refusal(e.errno or 0)
            lo = lo + e.done + 1
    return failed
