"""Pinned maps against the maps the program declares: find and drop the stale pins.

bcc adopts a pinned map by path without looking at it, so after an upgrade that changed
a map (type, key or value size, max_entries, flags) the old map would be kept: the new
definition never takes effect, and a different value size makes the verifier refuse the
program. `stale_pins` compares each pin a compiled module adopted with the definition
bcc parsed from the C for that module (libbcc's table descriptors, i.e. exactly what bcc
creates when the pin is missing); `remove_stale` unlinks the pins that differ, with one
`event=pin_recreated` log line each, so the next compile creates them fresh. Pins that
match are left alone: their contents survive a restart.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from bpf import libbpf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapShape:
    """What has to agree between a pinned map and its declaration."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int

    def diff(self, want: MapShape) -> str:
        """'' when equal, else 'field:pinned->declared,...'."""
        return ",".join(f"{f.name}:{getattr(self, f.name)}->{getattr(want, f.name)}"
                        for f in fields(self) if getattr(self, f.name) != getattr(want, f.name))


@dataclass(frozen=True)
class StalePin:
    name: str
    path: Path
    reason: str


@cache
def _bcc() -> ct.CDLL:
    so = ct.CDLL("libbcc.so.0", use_errno=True)
    so.bpf_num_tables.argtypes = [ct.c_void_p]
    so.bpf_num_tables.restype = ct.c_size_t
    so.bpf_table_name.argtypes = [ct.c_void_p, ct.c_size_t]
    so.bpf_table_name.restype = ct.c_char_p
    so.bpf_table_fd_id.argtypes = [ct.c_void_p, ct.c_size_t]
    so.bpf_table_fd_id.restype = ct.c_int
    so.bpf_table_type_id.argtypes = [ct.c_void_p, ct.c_size_t]
    so.bpf_table_type_id.restype = ct.c_int
    so.bpf_table_max_entries_id.argtypes = [ct.c_void_p, ct.c_size_t]
    so.bpf_table_max_entries_id.restype = ct.c_size_t
    so.bpf_table_flags_id.argtypes = [ct.c_void_p, ct.c_size_t]
    so.bpf_table_flags_id.restype = ct.c_int
    for name in ("bpf_table_key_size_id", "bpf_table_leaf_size_id"):
        getattr(so, name).argtypes = [ct.c_void_p, ct.c_size_t]
        getattr(so, name).restype = ct.c_size_t
    return so


@dataclass(frozen=True)
class DeclaredMap:
    name: str
    shape: MapShape
    map_id: int  # of the map the module holds (an adopted pin or a fresh map)


def declared_maps(module: Any) -> list[DeclaredMap]:
    """The maps a compiled bcc module (BPF object) declares, as its C defines them."""
    so = _bcc()
    mod = ct.c_void_p(module.module)
    out = []
    for i in range(so.bpf_num_tables(mod)):
        name = (so.bpf_table_name(mod, i) or b"").decode()
        shape = MapShape(so.bpf_table_type_id(mod, i), so.bpf_table_key_size_id(mod, i),
                         so.bpf_table_leaf_size_id(mod, i),
                         so.bpf_table_max_entries_id(mod, i), so.bpf_table_flags_id(mod, i))
        fd = so.bpf_table_fd_id(mod, i)
        map_id = libbpf.map_info(fd).id if fd >= 0 else -1
        out.append(DeclaredMap(name, shape, map_id))
    return out


def pinned_shape(path: Path) -> tuple[MapShape, int] | None:
    """(shape, map id) of the map pinned at path; None when nothing (or no map) is there."""
    try:
        fd = libbpf.obj_get(str(path))
    except OSError:
        return None
    try:
        meta = libbpf.map_info(fd)
    except OSError:
        return None  # a pinned program, not a map
    finally:
        os.close(fd)
    return MapShape(meta.type, meta.key_size, meta.value_size, meta.max_entries,
                    meta.flags), meta.id


def stale_pins(module: Any, pin_dir: Path) -> list[StalePin]:
    """The pins in pin_dir the module adopted whose map differs from its declaration.

    A pin counts as adopted when it holds the very map the module holds under the same
    name (same map id): unpinned maps and foreign files are never touched."""
    out = []
    for d in declared_maps(module):
        path = pin_dir / d.name
        got = pinned_shape(path)
        if got is None or got[1] != d.map_id:
            continue
        reason = got[0].diff(d.shape)
        if reason:
            out.append(StalePin(d.name, path, reason))
    return out


def remove_stale(stale: Iterable[StalePin]) -> None:
    """Unlink stale pins (the maps die with their last user) and log each one."""
    for s in stale:
        with suppress(FileNotFoundError):  # another loader got there first
            s.path.unlink()
        log.warning("event=pin_recreated map=%s path=%s reason=%s", s.name, s.path, s.reason)
