"""The policy maps (bpf/src/policy.c) made equal to a compiled plan
(controller/desired/policy.py), writing only what differs.

Each pod under policy has an endpoint id, the same for all its addresses and kept for as
long as it stays under policy (read back from rr_pol_eps, so a restarted agent keeps the
ids the programs already use); a new pod takes the lowest free one. An endpoint's rr_pol
entries are written before its rr_pol_eps entries, so a pod newly under policy is never
isolated without them, and deleted after, so a pod leaving policy is never looked up in
entries already gone. `pol_entries` is pure: what the maps should hold.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bgp.types import IPAddress
from bpf import maps as m
from bpf.mapstore import MapPort, PinnedMap
from controller.desired.policy import EndpointPolicy, PolicyEntry, PortRange

INGRESS, EGRESS = 0x1, 0x2  # RR_POL_INGRESS, RR_POL_EGRESS


def family_of(a: IPAddress | ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    return m.AF_INET if a.version == 4 else m.AF_INET6


def ep_key(addr: IPAddress) -> bytes:
    return bytes(m.PolEpKey(m.addr_of(addr), family_of(addr)))


def ep_value(ep_id: int, ep: EndpointPolicy) -> bytes:
    flags = (INGRESS if ep.ingress is not None else 0) | (EGRESS if ep.egress is not None else 0)
    return bytes(m.PolEp(ep_id, flags))


def entry_key(ep_id: int, direction: int, e: PolicyEntry) -> bytes:
    net = e.prefix
    return bytes(m.PolKey(64 + net.prefixlen, ep_id, direction, family_of(net), 0,
                          m.addr_of(net.network_address)))


def entry_value(e: PolicyEntry) -> bytes:
    v = m.PolValue()
    if len(e.ranges) > m.POL_RANGES:
        raise ValueError(f"{e.prefix}: {len(e.ranges)} port ranges, at most {m.POL_RANGES}")
    v.count = len(e.ranges)
    for i, r in enumerate(e.ranges):
        v.r[i] = m.PolRange(r.proto, 0, r.lo, r.hi)
    return bytes(v)


def pol_entries(ids: Mapping[str, int], endpoints: Mapping[str, EndpointPolicy],
                labels: dict[bytes, str] | None = None
                ) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """(rr_pol_eps, rr_pol) contents for endpoints, with ids (pod key -> id); labels, when
    given, gets what each key is for (the pod, and the address or the entry), for
    messages."""
    eps: dict[bytes, bytes] = {}
    entries: dict[bytes, bytes] = {}
    for key, ep in endpoints.items():
        ep_id = ids[key]
        for addr in ep.ips:
            k = ep_key(addr)
            eps[k] = ep_value(ep_id, ep)
            if labels is not None:
                labels[k] = f"pod {key} address {addr}"
        for direction, es in ((INGRESS, ep.ingress), (EGRESS, ep.egress)):
            for e in es or ():
                k = entry_key(ep_id, direction, e)
                entries[k] = entry_value(e)
                if labels is not None:
                    labels[k] = (f"pod {key} {'ingress' if direction == INGRESS else 'egress'}"
                                 f" entry {e.prefix}")
    return eps, entries


VERDICTS = ("passed", "dropped", "new")  # rr_pol_stats' indices (RR_POL_PASSED, ...)


def read_stats(pin_dir: Path) -> dict[str, int]:
    """The policy programs' packet counters, summed over CPUs: passed (a flow let pass
    before, or its reply), dropped, new (a flow a decision let pass). OSError when the
    map is not pinned."""
    from bpf.libbpf import percpu_lookup
    from bpf.mapstore import PinnedMap

    pm = PinnedMap.open(str(pin_dir / "rr_pol_stats"))
    try:
        return {v: sum(int.from_bytes(c, sys.byteorder)
                       for c in percpu_lookup(pm.fd, i.to_bytes(4, sys.byteorder), 8))
                for i, v in enumerate(VERDICTS)}
    finally:
        pm.close()


@dataclass(frozen=True)
class ProgrammedEndpoint:
    """What the maps hold for one endpoint id: its addresses, the directions it is
    isolated in, and per isolated direction its (peer prefix, port ranges) entries."""

    ep_id: int
    addresses: tuple[IPAddress, ...]
    ingress: tuple[PolicyEntry, ...] | None
    egress: tuple[PolicyEntry, ...] | None


def read_programmed(eps: MapPort, rules: MapPort) -> list[ProgrammedEndpoint]:
    """The endpoints and entries the maps hold, decoded (by endpoint id); an entry of an id
    no address has is listed under that id with no address (a half-written sync)."""
    addrs: dict[int, list[IPAddress]] = {}
    flags: dict[int, int] = {}
    for k, v in eps.items():
        ep = m.PolEp.from_buffer_copy(v)
        addrs.setdefault(ep.id, []).append(_addr_of_key(k))
        flags[ep.id] = ep.flags
    entries: dict[tuple[int, int], list[PolicyEntry]] = {}
    for k, v in rules.items():
        key, val = m.PolKey.from_buffer_copy(k), m.PolValue.from_buffer_copy(v)
        peer = m.ip_of(key.peer, key.family)
        net = ipaddress.ip_network((peer, key.prefixlen - 64))
        ranges = tuple(PortRange(r.proto, r.lo, r.hi) for r in list(val.r)[:val.count])
        entries.setdefault((key.ep, key.dir), []).append(PolicyEntry(net, ranges))
        flags.setdefault(key.ep, 0)
    out = []
    for ep_id in sorted(flags):
        def of(direction: int, ep_id: int = ep_id) -> tuple[PolicyEntry, ...] | None:
            got = entries.get((ep_id, direction), [])
            if not flags[ep_id] & direction and (ep_id in addrs or not got):
                return None
            return tuple(sorted(got, key=lambda e: (e.prefix.version, e.prefix)))
        out.append(ProgrammedEndpoint(ep_id, tuple(sorted(addrs.get(ep_id, []),
                                                          key=lambda a: (a.version, a))),
                                      of(INGRESS), of(EGRESS)))
    return out


def read_drops(pin_dir: Path, ids: Iterable[int] | None = None) -> dict[int, int]:
    """Packets refused per endpoint id, summed over CPUs (rr_pol_drops), for ids (None:
    those rr_pol_eps holds); OSError when the maps are not pinned."""
    from bpf.libbpf import percpu_lookup

    if ids is None:
        eps = PinnedMap.open(str(pin_dir / "rr_pol_eps"))
        try:
            ids = {m.PolEp.from_buffer_copy(v).id for _, v in eps.items()}
        finally:
            eps.close()
    pm = PinnedMap.open(str(pin_dir / "rr_pol_drops"))
    try:
        return {i: sum(int.from_bytes(v, sys.byteorder)
                       for v in percpu_lookup(pm.fd, i.to_bytes(4, sys.byteorder), 8))
                for i in sorted(ids) if i < pm.max_entries}
    finally:
        pm.close()


def _zero_percpu(pm: PinnedMap, indices: Iterable[int]) -> None:
    """Zero the u64 slots of a per-CPU array at indices (on every CPU)."""
    from bpf.libbpf import lib, map_update

    zeros = bytes(8 * max(lib().libbpf_num_possible_cpus(), 1))
    for i in indices:
        if i < pm.max_entries:
            with contextlib.suppress(OSError):
                map_update(pm.fd, i.to_bytes(4, sys.byteorder), zeros)


def _addr_of_key(raw: bytes) -> IPAddress:
    k = m.PolEpKey.from_buffer_copy(raw)
    return m.ip_of(k.addr, k.family)


class PolicyMaps:
    """The maps behind their ports (PinnedMap, or FakeMap in tests): endpoints, their
    entries, and (optional) the node's own addresses and the per-endpoint drop counters
    (a per-CPU array indexed by endpoint id: a PinnedMap). `last_ids`: the last sync's
    pod -> id."""

    def __init__(self, eps: MapPort, rules: MapPort, node: MapPort | None = None,
                 drops: PinnedMap | None = None) -> None:
        self.eps, self.rules, self.node, self.drops = eps, rules, node, drops
        self.last_ids: dict[str, int] = {}

    def sync_node(self, addresses: Iterable[IPAddress]) -> list[str]:
        """Make rr_pol_node hold exactly the node's addresses."""
        if self.node is None:
            return []
        want = {ep_key(a): (1).to_bytes(4, "little") for a in addresses}
        have = dict(self.node.items())
        errors: list[str] = []
        _write(self.node, "rr_pol_node", {k: v for k, v in want.items() if have.get(k) != v},
               errors)
        _delete(self.node, [k for k in have if k not in want])
        return errors

    def ids(self, endpoints: Mapping[str, EndpointPolicy]) -> dict[str, int]:
        """Each endpoint's id: the one its addresses have in rr_pol_eps, else the lowest
        free one."""
        held: dict[IPAddress, int] = {
            _addr_of_key(k): m.PolEp.from_buffer_copy(v).id for k, v in self.eps.items()}
        out: dict[str, int] = {}
        for key, ep in sorted(endpoints.items()):
            old = next((held[a] for a in ep.ips if a in held), None)
            if old is not None and old not in out.values():
                out[key] = old
        used = set(out.values())
        free = (i for i in range(1, 1 << 32) if i not in used)
        for key in sorted(endpoints):
            if key not in out:
                out[key] = next(free)
        return out

    def sync(self, endpoints: Mapping[str, EndpointPolicy]) -> list[str]:
        """Make the maps hold endpoints; returns what was refused (a map full), the rest
        written all the same."""
        ids = self.ids(endpoints)
        labels: dict[bytes, str] = {}
        want_eps, want_rules = pol_entries(ids, endpoints, labels)
        have_rules = dict(self.rules.items())
        have_eps = dict(self.eps.items())
        freed = {m.PolEp.from_buffer_copy(v).id for v in have_eps.values()} - set(ids.values())
        errors: list[str] = []
        _write(self.rules, "rr_pol", {k: v for k, v in want_rules.items()
                                      if have_rules.get(k) != v}, errors, labels)
        _write(self.eps, "rr_pol_eps", {k: v for k, v in want_eps.items()
                                        if have_eps.get(k) != v}, errors, labels)
        _delete(self.eps, [k for k in have_eps if k not in want_eps])
        _delete(self.rules, [k for k in have_rules if k not in want_rules])
        if self.drops is not None:  # an id freed starts again from 0 for its next pod
            _zero_percpu(self.drops, freed)
        self.last_ids = ids
        return errors


def _write(port: MapPort, name: str, items: Mapping[bytes, bytes], errors: list[str],
           labels: Mapping[bytes, str] | None = None) -> None:
    """Write items one by one, so that a refusal names its entry (with labels: the pod and
    what of it); the rest are written all the same."""
    for k, v in items.items():
        try:
            port.update_batch([(k, v)])
        except OSError as e:
            what = labels.get(k) if labels is not None else None
            why = "map full" if e.errno == errno.E2BIG else (e.strerror or str(e))
            errors.append(f"{name}: {what or 'entry ' + k.hex()}: not written: {why}")


def _delete(port: MapPort, keys: Iterable[bytes]) -> None:
    for k in keys:
        with contextlib.suppress(OSError):  # gone already
            port.delete_batch([k])

