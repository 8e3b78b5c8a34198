"""Byte-level map port: the pinned-map adapter and an in-memory fake with one contract.

Keys and values are raw bytes (ctypes structs from bpf/maps.py serialised with bytes()).
update_batch / delete_batch raise MapWriteError naming how many items were applied, so
a caller can fall back to single writes and blame the right service.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from collections.abc import Iterator, Sequence
from typing import Protocol

from bpf import libbpf


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
    def delete_batch(self, keys: Sequence[bytes]) -> None: ...


class FakeMap:
    """A hash map in memory with the kernel's size and capacity rules."""

    def __init__(self, key_size: int, value_size: int, max_entries: int) -> None:
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.data: dict[bytes, bytes] = {}
        self.batch_calls = 0

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
            if k not in self.data and len(self.data) >= self.max_entries:
                raise MapWriteError(errno.E2BIG, "map full", done)
            self.data[k] = v

    def delete_batch(self, keys: Sequence[bytes]) -> None:
        self.batch_calls += 1
        for done, k in enumerate(keys):
            if k not in self.data:
                raise MapWriteError(errno.ENOENT, "no such key", done)
            del self.data[k]


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
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def update_batch(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        if not items:
            return
        keys = b"".join(k for k, _ in items)
        vals = b"".join(v for _, v in items)
        if len(keys) != len(items) * self.key_size or len(vals) != len(items) * self.value_size:
            raise MapWriteError(errno.EINVAL, "wrong key or value size", 0)
        count = ct.c_uint32(len(items))
        ret = libbpf.lib().bpf_map_update_batch(self.fd, keys, vals, ct.byref(count), None)
        if ret < 0:
            err = -ret
            raise MapWriteError(err, f"update batch: {os.strerror(err)}", count.value)

    def delete_batch(self, keys: Sequence[bytes]) -> None:
        if not keys:
            return
        buf = b"".join(keys)
        count = ct.c_uint32(len(keys))
        ret = libbpf.lib().bpf_map_delete_batch(self.fd, buf, ct.byref(count), None)
        if ret < 0:
            err = -ret
            raise MapWriteError(err, f"delete batch: {os.strerror(err)}", count.value)
