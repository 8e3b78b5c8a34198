"""Thin ctypes binding to libbpf's syscalls: open pinned maps and programs, batch ops,
map info, cgroup attach and detach.

Used by the pinned-map adapter (no compile needed to read or write the maps), by the
agent's datapath once a child process has compiled it (bpf/compile.py), and by the tests
and benchmarks (map creation, BPF_PROG_TEST_RUN).
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from dataclasses import dataclass
from functools import cache


class BpfError(OSError):
    """A bpf() syscall failed; errno tells why (E2BIG: map full, ENOENT: missing)."""


@cache
def lib() -> ct.CDLL:
    so = ct.CDLL("libbpf.so.1", use_errno=True)
    so.bpf_obj_get.argtypes = [ct.c_char_p]
    so.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
    for name in ("bpf_map_update_elem",):
        getattr(so, name).argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64]
    so.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    so.bpf_map_delete_elem.argtypes = [ct.c_int, ct.c_void_p]
    so.bpf_map_get_next_key.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    so.bpf_map_update_batch.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p,
                                        ct.POINTER(ct.c_uint32), ct.c_void_p]
    so.bpf_map_delete_batch.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32),
                                        ct.c_void_p]
    so.bpf_map_lookup_batch.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_void_p,
                                        ct.c_void_p, ct.POINTER(ct.c_uint32), ct.c_void_p]
    so.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
    so.bpf_map_create.argtypes = [ct.c_int, ct.c_char_p, ct.c_uint32, ct.c_uint32,
                                  ct.c_uint32, ct.c_void_p]
    so.bpf_prog_test_run_opts.argtypes = [ct.c_int, ct.c_void_p]
    so.bpf_prog_attach.argtypes = [ct.c_int, ct.c_int, ct.c_int, ct.c_uint]
    so.bpf_prog_detach2.argtypes = [ct.c_int, ct.c_int, ct.c_int]
    return so


def check(ret: int, what: str) -> int:
    if ret < 0:
        err = -ret if ret != -1 else ct.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return ret


class MapInfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16)]


@dataclass(frozen=True)
class MapMeta:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def map_info(fd: int) -> MapMeta:
    info = MapInfo()
    size = ct.c_uint32(ct.sizeof(info))
    check(lib().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size)), "map info")
    return MapMeta(info.type, info.id, info.key_size, info.value_size, info.max_entries,
                   info.map_flags, info.name.decode())


def obj_get(path: str) -> int:
    return check(lib().bpf_obj_get(path.encode()), f"open {path}")


def obj_pin(fd: int, path: str) -> None:
    check(lib().bpf_obj_pin(fd, path.encode()), f"pin {path}")


def map_update(fd: int, key: bytes, value: bytes) -> None:
    """One element (for maps without batch operations, as LPM tries)."""
    check(lib().bpf_map_update_elem(fd, key, value, 0), "map update")


def map_delete(fd: int, key: bytes) -> bool:
    """Delete one element; False when it was not there."""
    ret = lib().bpf_map_delete_elem(fd, key)
    if ret < 0 and (-ret == errno.ENOENT or ct.get_errno() == errno.ENOENT):
        return False
    check(ret, "map delete")
    return True


def percpu_lookup(fd: int, key: bytes, value_size: int) -> list[bytes]:
    """A per-CPU map's value on every possible CPU."""
    ncpu = lib().libbpf_num_possible_cpus()
    slot = (value_size + 7) // 8 * 8
    buf = ct.create_string_buffer(slot * max(ncpu, 1))
    check(lib().bpf_map_lookup_elem(fd, key, buf), "map lookup")
    return [buf.raw[i * slot:i * slot + value_size] for i in range(ncpu)]


def prog_attach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    """Attach a program to a cgroup (target_fd), replacing one of ours there (no flags:
    the cgroup holds one program per attach type, as bcc's attach_func did)."""
    check(lib().bpf_prog_attach(prog_fd, target_fd, attach_type, 0), "attach")


def prog_detach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    check(lib().bpf_prog_detach2(prog_fd, target_fd, attach_type), "detach")


BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_LRU_HASH = 9


def map_create(map_type: int, name: str, key_size: int, value_size: int,
               max_entries: int) -> int:
    return check(lib().bpf_map_create(map_type, name.encode(), key_size, value_size,
                                      max_entries, None), f"create map {name}")


class _TestRunOpts(ct.Structure):
    _fields_ = [("sz", ct.c_size_t), ("data_in", ct.c_void_p), ("data_out", ct.c_void_p),
                ("data_size_in", ct.c_uint32), ("data_size_out", ct.c_uint32),
                ("ctx_in", ct.c_void_p), ("ctx_out", ct.c_void_p),
                ("ctx_size_in", ct.c_uint32), ("ctx_size_out", ct.c_uint32),
                ("retval", ct.c_uint32), ("repeat", ct.c_int), ("duration", ct.c_uint32),
                ("flags", ct.c_uint32), ("cpu", ct.c_uint32), ("batch_size", ct.c_uint32)]


def prog_test_run(prog_fd: int, packet: bytes, repeat: int = 1) -> tuple[int, int, bytes]:
    """Run a program on one packet (BPF_PROG_TEST_RUN): (retval, ns per run, packet out)."""
    buf_in = ct.create_string_buffer(packet, len(packet))
    buf_out = ct.create_string_buffer(len(packet) + 256)
    opts = _TestRunOpts(sz=ct.sizeof(_TestRunOpts), data_in=ct.addressof(buf_in),
                        data_out=ct.addressof(buf_out), data_size_in=len(packet),
                        data_size_out=len(buf_out), repeat=repeat)
    check(lib().bpf_prog_test_run_opts(prog_fd, ct.byref(opts)), "prog test run")
    return opts.retval, opts.duration, buf_out.raw[: opts.data_size_out]
