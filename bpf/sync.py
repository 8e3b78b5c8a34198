"""Program the desired service table into the maps, writing only the difference.

A Syncer adopts whatever is in the (pinned) maps, keeps a shadow of it, and on each
pass writes new/changed entries with batched updates and removes stale ones with
batched deletes, in an order the running programs never trip over: backends, then
Maglev tables (bpf/slots.py), then services; deletes in the reverse order. A batch
that stops at an item (map full, wrong family) has that item blamed on its service and
goes on with the rest (mapstore.write_owned), so the others are still programmed.
read_table() reads the maps back into table form. A LoadBalancer IP entry with source
ranges has its prefixes in rr_src_ranges (keyed by its svc_id) written before the entry
that flags them, and the prefixes it no longer has deleted after it.

Before a new service entry is written, its address is marked in rr_vips (its IPv4 /24 or
IPv6 /64 bucket: the filter that lets a packet to no service address go after one array
read); once after adopting the maps, every programmed service's is, and the filter is
armed.

A pass costs in proportion to what changed: the syncer remembers the desired Service it
last programmed per key and the services using each backend, so an unchanged entry is
one dict lookup and its Maglev table is never recomputed.
"""

from __future__ import annotations

import gc
import itertools
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bpf import maps as m
from bpf.mapstore import MapPort, MapWriteError, write_owned
from bpf.slots import TableWriter
from bpf.table import (
    Algorithm,
    Backend,
    BackendState,
    Service,
    ServiceKey,
    ServiceTable,
    validate,
)
from bpf.table import Proto as P


@dataclass
class SyncMaps:
    """The maps the sync writes (the conntrack and affinity maps belong to the programs)."""

    svc: MapPort
    backend: MapPort
    maglev: MapPort
    maglev_m: int = m.DEFAULT_MAGLEV_M
    vips: MapPort | None = None  # rr_vips, the service address filter (None: not kept)
    ranges: MapPort | None = None  # rr_src_ranges (None: source ranges refused)


@dataclass(frozen=True)
class SyncResult:
    programmed: frozenset[ServiceKey]
    errors: Mapping[ServiceKey, str]
    writes: int = 0
    deletes: int = 0


@dataclass(slots=True)
class _Programmed:
    svc_id: int
    service: Service


@dataclass
class _State:
    services: dict[ServiceKey, _Programmed] = field(default_factory=dict)
    backend_ids: dict[str, int] = field(default_factory=dict)
    backend_values: dict[int, bytes] = field(default_factory=dict)
    maglev_ids: set[int] = field(default_factory=set)
    backend_objs: dict[str, Backend] = field(default_factory=dict)  # name -> as programmed
    users: dict[str, set[ServiceKey]] = field(default_factory=dict)  # name -> services
    inputs: dict[ServiceKey, Service] = field(default_factory=dict)  # last desired, per key
    next_svc_id: int = 1
    next_backend_id: int = 1
    vips: dict[int, int] = field(default_factory=dict)  # rr_vips words as written
    vips_armed: bool = False
    # adopted entries nothing can reach (a pass cut short): deleted by the next pass
    stray_tables: set[int] = field(default_factory=set)
    stray_backends: set[int] = field(default_factory=set)
    ranges: dict[int, frozenset[bytes]] = field(default_factory=dict)  # svc_id -> keys
    stray_ranges: set[bytes] = field(default_factory=set)


_TERMINATING = BackendState.TERMINATING  # (an enum class lookup costs a dict walk)


def _backend_value(b: Backend) -> bytes:
    flags = (m.BE_LOCAL if b.local else 0) | (
        m.BE_TERMINATING if b.state is _TERMINATING else 0)
    return m.backend_value_bytes(b.ip, b.port, flags)


def _decode_backend(raw: bytes) -> Backend:
    v = m.BackendValue.from_buffer_copy(raw)
    state = BackendState.TERMINATING if v.flags & m.BE_TERMINATING else BackendState.READY
    return Backend(m.ip_of(v.addr, v.family), m.host_port(v.port), bool(v.flags & m.BE_LOCAL),
                   state)


def _svc_flags(s: Service) -> int:
    return ((m.SVC_LOCAL_ONLY if s.local_only else 0) | (m.SVC_EXTERNAL if s.external else 0)
            | (m.SVC_NODEPORT if s.nodeport else 0)
            | (m.SVC_RANDOM if s.algorithm is Algorithm.RANDOM else 0)
            | (m.SVC_SRC_RANGES if s.source_ranges is not None else 0))


def _range_keys(sid: int, s: Service) -> frozenset[bytes]:
    return frozenset(m.src_key_bytes(sid, n) for n in s.source_ranges or ())


def _decode_key(raw: bytes) -> ServiceKey:
    k = m.SvcKey.from_buffer_copy(raw)
    return ServiceKey(m.ip_of(k.vip, k.family), m.host_port(k.port), P(k.proto))


def _key_bytes(k: ServiceKey) -> bytes:
    return m.svc_key_bytes_of(*k)  # a ServiceKey is (version, address, port, proto)


def _u32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def _read(maps: SyncMaps) -> tuple[_State, dict[ServiceKey, Service]]:
    """The state of the maps. A pass cut short (the agent killed mid-sync) can leave
    Maglev tables no service entry names and backends no such table holds: nothing can
    reach them, they are not adopted, and the next pass deletes them (stray_*)."""
    st = _State()
    backends: dict[int, Backend] = {}
    raw: dict[int, bytes] = {}
    for kb, vb in maps.backend.items():
        bid = int.from_bytes(kb, "little")
        backends[bid] = _decode_backend(vb)
        raw[bid] = vb
        st.next_backend_id = max(st.next_backend_id, bid + 1)
    tables: dict[int, frozenset[int]] = {}
    for kb, vb in maps.maglev.items():
        sid = int.from_bytes(kb, "little")
        tables[sid] = frozenset(array("I", vb))
        st.maglev_ids.add(sid)
        st.next_svc_id = max(st.next_svc_id, sid + 1)
    range_keys: dict[int, list[bytes]] = {}  # svc_id -> its rr_src_ranges keys
    if maps.ranges is not None:
        for kb, _ in maps.ranges.items():
            range_keys.setdefault(int.from_bytes(kb[4:8], "little"), []).append(kb)
    table: dict[ServiceKey, Service] = {}
    used: set[int] = set()  # backend ids a service's table holds
    for kb, vb in maps.svc.items():
        key = _decode_key(kb)
        v = m.SvcValue.from_buffer_copy(vb)
        ids = tables.get(v.svc_id, frozenset()) if v.backend_count else frozenset()
        used.update(ids)
        found = (backends[i] for i in ids if i in backends)
        bes = tuple(sorted(found, key=Backend.sort_key))
        svc = Service(
            backends=bes, local_only=bool(v.flags & m.SVC_LOCAL_ONLY),
            external=bool(v.flags & m.SVC_EXTERNAL), nodeport=bool(v.flags & m.SVC_NODEPORT),
            affinity_timeout=v.affinity_timeout,
            algorithm=Algorithm.RANDOM if v.flags & m.SVC_RANDOM else Algorithm.MAGLEV,
            source_ranges=tuple(sorted(m.src_of_key(r, key[0])[1]
                                       for r in range_keys.get(v.svc_id, ())))
            if v.flags & m.SVC_SRC_RANGES else None)
        if v.flags & m.SVC_SRC_RANGES:
            st.ranges[v.svc_id] = frozenset(range_keys.get(v.svc_id, ()))
        table[key] = svc
        st.services[key] = _Programmed(v.svc_id, svc)
        for b in bes:
            st.users.setdefault(b.name, set()).add(key)
        st.next_svc_id = max(st.next_svc_id, v.svc_id + 1)
    st.stray_tables = st.maglev_ids - {p.svc_id for p in st.services.values()}
    st.stray_ranges = {kb for sid, kbs in range_keys.items() if sid not in st.ranges
                       for kb in kbs}
    for bid, b in backends.items():
        if bid in used:
            st.backend_ids[b.name] = bid
            st.backend_objs[b.name] = b
            st.backend_values[bid] = raw[bid]
        else:
            st.stray_backends.add(bid)
    return st, table


def read_table(maps: SyncMaps) -> dict[ServiceKey, Service]:
    """The services as programmed in the maps (eligible backends only)."""
    return _read(maps)[1]


def _clashes(st: _State, need: Mapping[str, Backend], b: Backend, name: str,
             leaving: set[ServiceKey]) -> bool:
    """Does b (named name) differ from the same endpoint as another (staying) service
    has it?"""
    other = need.get(name)
    if other is not None:
        return other is not b and other != b
    known = st.backend_objs.get(name)
    if known is None or known is b or known == b:
        return False
    return bool(st.users.get(name, set()) - leaving)


def _release(st: _State, k: ServiceKey, svc: Service) -> set[str]:
    """Drop k as a user of svc's backends; returns the names nobody uses any more."""
    out: set[str] = set()
    for b in svc.backends:
        u = st.users.get(b.name)
        if u is not None:
            u.discard(k)
            if not u:
                out.add(b.name)
    return out


def _delete(port: MapPort, keys: Iterable[bytes]) -> int:
    todo = list(keys)
    n = 0
    while todo:
        try:
            port.delete_batch(todo)
            return n + len(todo)
        except MapWriteError as e:  # ENOENT: already gone (someone else cleaned up)
            n += e.done
            todo = todo[e.done + 1:]
    return n


class Syncer:
    """Keeps the service maps equal to a desired table, writing only the difference."""

    def __init__(self, maps: SyncMaps) -> None:
        self.maps = maps
        self._st: _State | None = None

    def adopt(self) -> dict[ServiceKey, Service]:
        """(Re)read the maps; returns what is programmed now."""
        self._st, table = _read(self.maps)
        return table

    def sync(self, desired: ServiceTable) -> SyncResult:
        """Make the maps hold desired. Work is proportional to what changed: an entry
        whose desired Service equals the one last programmed is not looked at again.

        The cyclic garbage collector is paused for the pass: a full pass allocates some
        hundred thousand small objects, none of them in cycles, and the collections they
        would trigger (each scanning every live object, the tables included) cost as much
        as the pass's own work."""
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            with TableWriter[ServiceKey](self.maps.maglev_m, self.maps.maglev) as tables:
                return self._sync(desired, tables)
        finally:
            if paused:
                gc.enable()

    def _sync(self, desired: ServiceTable, tables: TableWriter[ServiceKey]) -> SyncResult:
        if self._st is None:
            self.adopt()
        st = self._st
        assert st is not None
        errors: dict[ServiceKey, str] = {}
        changed: dict[ServiceKey, Service] = {}  # key -> programmed form, to be written
        present = 0  # desired keys that are programmed now (inputs only holds such keys)
        for k, s in desired.items():
            prev = st.inputs.get(k)
            if prev is not None and (prev is s or prev == s):
                present += 1
                continue
            cur = st.services.get(k)
            present += cur is not None
            why = validate(k, s)
            if why is None and s.source_ranges is not None and self.maps.ranges is None:
                why = f"{k}: source ranges given, but this datapath keeps no rr_src_ranges"
            if why:
                errors[k] = why
                continue
            # its programmed form; the entry itself when that changes nothing but the name
            # (which equality ignores): no copy per service
            p = s if s.eligible() is s.backends else s.programmed()
            if cur is not None and cur.service == p:
                st.inputs[k] = s
                continue
            changed[k] = p
        writes = deletes = 0

        # a clash: one address:port with two different local/state flags
        stale = {k for k in errors if k in st.services}  # programmed, not to stay so
        if present < len(st.services):  # some programmed keys are no longer desired
            stale |= {k for k in st.services if k not in desired}
        leaving = stale.union(changed)
        # One pass over the changed services: clash check, backend ids, and what to write
        # for them (backends, then Maglev tables, then services).
        need: dict[str, Backend] = {}
        users: dict[str, list[ServiceKey]] = {}
        known_objs = st.backend_objs
        backend_ids = st.backend_ids
        sv_owners: list[ServiceKey] = []  # the service writes: owner, key, value
        sv_keys: list[bytes] = []
        sv_vals: list[bytes] = []
        staged: dict[ServiceKey, _Programmed] = {}
        rg_want: dict[ServiceKey, tuple[int, frozenset[bytes]]] = {}  # svc_id, its prefixes
        rg_add: list[tuple[ServiceKey, bytes]] = []  # prefixes to add, before the entry
        for k, s in list(changed.items()):
            bes = s.backends
            names = [b.name for b in bes]
            clash = None
            for n, b in zip(names, bes, strict=True):
                if (n in need or n in known_objs) and _clashes(st, need, b, n, leaving):
                    clash = n
                    break
            if clash is not None:
                errors[k] = (f"{k}: backend {clash} conflicts with another service's"
                             " local/state flags for the same endpoint")
                del changed[k]
                continue
            ids: list[int] = []
            for n, b in zip(names, bes, strict=True):
                u = users.get(n)
                if u is None:
                    users[n] = [k]
                    need[n] = b
                    bid = backend_ids.get(n)
                    if bid is None:
                        bid = backend_ids[n] = st.next_backend_id
                        st.next_backend_id += 1
                else:
                    u.append(k)
                    bid = backend_ids[n]
                ids.append(bid)
            cur = st.services.get(k)
            if cur is None:
                sid = st.next_svc_id
                st.next_svc_id += 1
            else:
                sid = cur.svc_id
            if names:
                tables.add(k, sid, ids, names, s.algorithm, new=cur is None)
            if s.source_ranges is not None or sid in st.ranges:
                want = _range_keys(sid, s)
                have = st.ranges.get(sid, frozenset())
                rg_want[k] = (sid, want)
                rg_add.extend((k, kb) for kb in sorted(want - have))
            sv_owners.append(k)
            sv_keys.append(_key_bytes(k))
            sv_vals.append(m.svc_value_bytes(sid, len(bes), _svc_flags(s), s.affinity_timeout))
            staged[k] = _Programmed(sid, s)

        # 1. backends
        be_names: list[str] = []  # the backend writes: owner, key, value
        be_keys = array("I")
        be_vals: list[bytes] = []
        for name, b in need.items():
            bid = backend_ids[name]
            val = _backend_value(b)
            if st.backend_values.get(bid) != val:
                be_names.append(name)
                be_keys.append(bid)
                be_vals.append(val)
        be_failed = write_owned(self.maps.backend, be_names, bytearray(be_keys), be_vals)
        writes += len(be_names)
        for name, val in zip(be_names, be_vals, strict=True):
            if name not in be_failed:
                st.backend_values[backend_ids[name]] = val
                st.backend_objs[name] = need[name]
        orphans: set[str] = set()  # backends written for services that then failed
        for name, why in be_failed.items():
            for k in users[name]:
                errors[k] = f"{k}: backend {name}: {why}"
                dropped = changed.pop(k, None)
                if dropped is not None:
                    orphans.update(b.name for b in dropped.backends)
            if not st.users.get(name):
                del backend_ids[name]
        if be_failed:  # leave out the services that lost a backend
            kept_sv = [i for i, k in enumerate(sv_owners) if k in changed]
            sv_owners = [sv_owners[i] for i in kept_sv]
            sv_keys = [sv_keys[i] for i in kept_sv]
            sv_vals = [sv_vals[i] for i in kept_sv]
            staged = {k: p for k, p in staged.items() if k in changed}

        # 2. Maglev tables and 3. services
        mg_failed, mg_written = tables.write(changed.__contains__)
        for k, why in mg_failed.items():
            errors[k] = f"{k}: maglev table: {why}"
        st.maglev_ids.update(i for k, i in mg_written if k not in mg_failed)
        if mg_failed:
            keep = [i for i, k in enumerate(sv_owners) if k not in mg_failed]
            sv_owners = [sv_owners[i] for i in keep]
            sv_keys = [sv_keys[i] for i in keep]
            sv_vals = [sv_vals[i] for i in keep]
        # 2b. source ranges: a prefix is added before the entry that refers to it
        rg_add = [(k, kb) for k, kb in rg_add if k in changed and k not in mg_failed]
        rg_failed: dict[ServiceKey, str] = {}
        if rg_add and self.maps.ranges is not None:
            rg_failed = write_owned(self.maps.ranges, [k for k, _ in rg_add],
                                    [kb for _, kb in rg_add], [bytes(4)] * len(rg_add))
            writes += len(rg_add)
        for k, why in rg_failed.items():
            errors[k] = f"{k}: source ranges: {why}"
        if rg_failed:
            keep = [i for i, k in enumerate(sv_owners) if k not in rg_failed]
            sv_owners = [sv_owners[i] for i in keep]
            sv_keys = [sv_keys[i] for i in keep]
            sv_vals = [sv_vals[i] for i in keep]
        self._mark_vips(st, sv_owners)  # before a packet can meet the new entries
        sv_failed = write_owned(self.maps.svc, sv_owners, sv_keys, sv_vals)
        writes += len(mg_written) + len(sv_owners)
        for k, why in sv_failed.items():
            errors[k] = f"{k}: service: {why}"
        sv_failed.update(rg_failed)  # not written either: the old entry stays as it was
        dead_tables: set[int] = set()
        dead_ranges: set[bytes] = set()  # prefixes nothing refers to any more
        for k in sv_failed:  # prefixes added for an entry that was not written
            if k in rg_want:
                sid, want = rg_want[k]
                dead_ranges |= want - st.ranges.get(sid, frozenset())
        for k in mg_failed.keys() | sv_failed.keys():
            orphans.update(b.name for b in staged[k].service.backends)
            if k in sv_failed and k not in st.services:  # a new table nobody points at
                dead_tables.add(staged[k].svc_id)
        st_users = st.users
        for k, done in staged.items():
            if k in mg_failed or k in sv_failed:
                continue
            old = st.services.get(k)
            if old is not None:
                orphans |= _release(st, k, old.service)
            if k in rg_want:  # the entry now names its new prefixes only
                sid, want = rg_want[k]
                dead_ranges |= st.ranges.get(sid, frozenset()) - want
                if want or done.service.source_ranges is not None:
                    st.ranges[sid] = want
                else:
                    st.ranges.pop(sid, None)
            st.services[k] = done
            st.inputs[k] = desired[k]
            for b in done.service.backends:
                us = st_users.get(b.name)
                if us is None:
                    st_users[b.name] = {k}
                else:
                    us.add(k)
            if not done.service.backends and done.svc_id in st.maglev_ids:
                dead_tables.add(done.svc_id)

        # 4. deletes: services gone or now invalid, then unused tables and backends
        kept = mg_failed.keys() | sv_failed.keys()  # a failed update keeps the old entry
        stale.update(errors)  # services that failed in this pass, too
        gone = [k for k in stale if k in st.services and k not in changed
                and (k not in desired or k in errors) and k not in kept]
        gone.sort(key=ServiceKey.sort_key)
        deletes += _delete(self.maps.svc, [_key_bytes(k) for k in gone])
        for k in gone:
            was = st.services.pop(k)
            st.inputs.pop(k, None)
            orphans |= _release(st, k, was.service)
            dead_ranges |= st.ranges.pop(was.svc_id, frozenset())
            if was.svc_id in st.maglev_ids:
                dead_tables.add(was.svc_id)
        dead_ranges |= st.stray_ranges
        st.stray_ranges = set()
        if dead_ranges and self.maps.ranges is not None:
            deletes += _delete(self.maps.ranges, sorted(dead_ranges))
        dead_tables |= st.stray_tables
        st.stray_tables = set()
        deletes += _delete(self.maps.maglev, [_u32(i) for i in sorted(dead_tables)])
        st.maglev_ids -= dead_tables
        dead = {n: st.backend_ids[n] for n in orphans
                if n in st.backend_ids and not st.users.get(n)}
        stray, st.stray_backends = st.stray_backends, set()
        deletes += _delete(self.maps.backend, [_u32(i) for i in sorted(stray | set(dead.values()))])
        for n, i in dead.items():
            del st.backend_ids[n]
            st.backend_values.pop(i, None)
            st.backend_objs.pop(n, None)
            st.users.pop(n, None)

        # every desired key is programmed now unless it failed (see the first loop)
        programmed = frozenset(desired).difference(errors)
        return SyncResult(programmed, errors, writes, deletes)

    def _mark_vips(self, st: _State, keys: Iterable[ServiceKey]) -> None:
        """Set the rr_vips bits of keys' addresses (and, once after adopting the maps, of
        every service programmed, then arm the filter). Bits are never cleared: conntrack
        entries of a removed service still need theirs."""
        port = self.maps.vips
        if port is None:
            return
        want: dict[int, int] = {}
        for k in keys if st.vips_armed else itertools.chain(keys, st.services):
            word, bit = m.vip_bit(k[0], k[1])
            want[word] = want.get(word, 0) | bit
        writes: list[tuple[bytes, bytes]] = []
        done: dict[int, int] = {}
        for word, bits in want.items():
            have = st.vips.get(word)
            if have is None:
                raw = port.lookup(_u32(word))
                have = int.from_bytes(raw, "little") if raw else 0
            if have | bits != have:
                writes.append((_u32(word), (have | bits).to_bytes(8, "little")))
            done[word] = have | bits
        if not st.vips_armed:
            writes.append((_u32(m.VIPS_ARMED), (1).to_bytes(8, "little")))
        if writes:
            port.update_batch(writes)  # in order: the bits, then the armed entry
        st.vips.update(done)
        st.vips_armed = True

    def programmed(self) -> dict[ServiceKey, Service]:
        """What this syncer last wrote or adopted (its shadow of the maps), by key."""
        if self._st is None:
            self.adopt()
        assert self._st is not None
        return {k: p.service for k, p in self._st.services.items()}

    def confirmed(self, keys: Iterable[ServiceKey]) -> frozenset[ServiceKey]:
        """Readiness gate: which of keys are present in the maps right now."""
        return frozenset(k for k in keys if self.maps.svc.lookup(_key_bytes(k)) is not None)
