"""Source ranges (loadBalancerSourceRanges) in the sync, against in-memory maps: the
prefixes reach rr_src_ranges before the entry that flags them, and leave after it; read
back, adopted, changed, emptied (fail closed), dropped; a full prefix map or a datapath
without one blames only that service; strays from a pass cut short are removed."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address as A4
from ipaddress import IPv6Address as A6
from ipaddress import ip_network

from bpf import maps as m
from bpf.mapstore import FakeMap
from bpf.sync import Syncer, SyncMaps, read_table
from bpf.table import Backend, Proto, Service, ServiceKey

M = 251
LB4 = ServiceKey(A4("192.0.2.10"), 443, Proto.TCP)
LB6 = ServiceKey(A6("2001:db8::10"), 443, Proto.TCP)
CIP = ServiceKey(A4("10.96.0.1"), 443, Proto.TCP)


class LoggedMap(FakeMap):
    """A FakeMap that records (map name, op, key) into a shared log."""

    def __init__(self, name: str, log: list[tuple[str, str, bytes]], key_size: int,
                 value_size: int, max_entries: int) -> None:
        super().__init__(key_size, value_size, max_entries)
        self.name, self.log = name, log

    def update_batch(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        try:
            super().update_batch(items)
        finally:
            self.log.extend((self.name, "put", k) for k, _ in items if k in self.data)

    def delete_batch(self, keys: Sequence[bytes]) -> None:
        super().delete_batch(keys)
        self.log.extend((self.name, "del", k) for k in keys)


def maps(log: list[tuple[str, str, bytes]] | None = None, ranges: int | None = 64) -> SyncMaps:
    lg: list[tuple[str, str, bytes]] = [] if log is None else log
    return SyncMaps(LoggedMap("svc", lg, 20, 16, 64), FakeMap(4, 20, 64),
                    FakeMap(4, 4 * M, 64), M, None,
                    None if ranges is None else LoggedMap("ranges", lg, 24, 4, ranges))


def svc(*nets: str, none: bool = False, version: int = 4) -> Service:
    ip = A4("10.0.0.5") if version == 4 else A6("fd00::5")
    return Service((Backend(ip, 8443),), external=True,
                   source_ranges=None if none else tuple(sorted(ip_network(n) for n in nets)))


def value(mp: SyncMaps, k: ServiceKey) -> m.SvcValue:
    assert isinstance(mp.svc, FakeMap)
    return m.SvcValue.from_buffer_copy(mp.svc.data[m.svc_key_bytes(k.vip, k.port, k.proto)])


def svc_id(mp: SyncMaps, k: ServiceKey) -> int:
    return int(value(mp, k).svc_id)


def prefixes(mp: SyncMaps, k: ServiceKey) -> set[str]:
    assert mp.ranges is not None
    sid = svc_id(mp, k)
    out = set()
    for kb in mp.ranges.data:  # type: ignore[attr-defined]
        if int.from_bytes(kb[4:8], "little") == sid:  # (the key holds no family)
            got_sid, net = m.src_of_key(kb, k.vip.version)
            assert got_sid == sid
            out.add(str(net))
    return out


def test_prefixes_are_written_before_the_entry_and_read_back() -> None:
    log: list[tuple[str, str, bytes]] = []
    mp = maps(log)
    t = {LB4: svc("198.51.100.0/24", "203.0.113.7/32"), LB6: svc("2001:db8:1::/48", version=6),
         CIP: svc(none=True)}
    res = Syncer(mp).sync(t)
    assert not res.errors
    first_svc = min(i for i, (name, op, _) in enumerate(log) if name == "svc")
    last_range = max(i for i, (name, _, _) in enumerate(log) if name == "ranges")
    assert last_range < first_svc
    assert prefixes(mp, LB4) == {"198.51.100.0/24", "203.0.113.7/32"}
    assert prefixes(mp, LB6) == {"2001:db8:1::/48"}
    flags = {k: value(mp, k).flags for k in t}
    assert flags[LB4] & m.SVC_SRC_RANGES and flags[LB6] & m.SVC_SRC_RANGES
    assert not flags[CIP] & m.SVC_SRC_RANGES
    assert read_table(mp) == {k: s.programmed() for k, s in t.items()}
    again = Syncer(mp)  # adopted: nothing to write
    res2 = again.sync(t)
    assert (res2.writes, res2.deletes) == (0, 0)


def test_changing_ranges_adds_first_and_deletes_after() -> None:
    log: list[tuple[str, str, bytes]] = []
    mp = maps(log)
    s = Syncer(mp)
    s.sync({LB4: svc("198.51.100.0/24", "203.0.113.7/32")})
    log.clear()
    assert not s.sync({LB4: svc("198.51.100.0/24", "192.0.2.128/25")}).errors
    ops = [(name, op) for name, op, _ in log]
    assert ops == [("ranges", "put"), ("svc", "put"), ("ranges", "del")]
    assert prefixes(mp, LB4) == {"198.51.100.0/24", "192.0.2.128/25"}


def test_no_usable_range_admits_nobody_and_no_ranges_admits_everybody() -> None:
    mp = maps()
    s = Syncer(mp)
    s.sync({LB4: svc("198.51.100.0/24")})
    assert not s.sync({LB4: svc()}).errors  # () : flagged, no prefix (fail closed)
    assert prefixes(mp, LB4) == set()
    assert read_table(mp)[LB4].source_ranges == ()
    assert not s.sync({LB4: svc(none=True)}).errors
    assert read_table(mp)[LB4].source_ranges is None
    assert mp.ranges is not None and not mp.ranges.data  # type: ignore[attr-defined]


def test_a_removed_service_takes_its_prefixes_along() -> None:
    mp = maps()
    s = Syncer(mp)
    s.sync({LB4: svc("198.51.100.0/24"), LB6: svc("2001:db8:1::/48", version=6)})
    res = s.sync({LB6: svc("2001:db8:1::/48", version=6)})
    assert not res.errors and res.deletes >= 2
    assert mp.ranges is not None
    assert len(mp.ranges.data) == 1  # type: ignore[attr-defined]


def test_a_full_prefix_map_blames_that_service_only_and_keeps_its_old_entry() -> None:
    mp = maps(ranges=2)
    s = Syncer(mp)
    assert not s.sync({LB4: svc("198.51.100.0/24"), CIP: svc(none=True)}).errors
    res = s.sync({LB4: svc("198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"),
                  CIP: Service((Backend(A4("10.0.0.6"), 8443),))})
    assert set(res.errors) == {LB4}
    assert "source ranges" in res.errors[LB4] and "full" in res.errors[LB4]
    assert CIP in res.programmed
    assert read_table(mp)[LB4].source_ranges == (ip_network("198.51.100.0/24"),)
    assert prefixes(mp, LB4) == {"198.51.100.0/24"}  # what it had: nothing left behind


def test_a_datapath_without_the_prefix_map_refuses_ranges_not_the_rest() -> None:
    mp = maps(ranges=None)
    res = Syncer(mp).sync({LB4: svc("198.51.100.0/24"), CIP: svc(none=True)})
    assert set(res.errors) == {LB4} and "rr_src_ranges" in res.errors[LB4]
    assert CIP in res.programmed


def test_strays_of_a_pass_cut_short_are_removed() -> None:
    mp = maps()
    Syncer(mp).sync({LB4: svc("198.51.100.0/24")})
    assert mp.ranges is not None
    stray = m.src_key_bytes(999, ip_network("10.9.0.0/16"))
    mp.ranges.update_batch([(stray, bytes(4))])
    s = Syncer(mp)
    s.adopt()
    s.sync({LB4: svc("198.51.100.0/24")})
    assert stray not in mp.ranges.data  # type: ignore[attr-defined]
    assert prefixes(mp, LB4) == {"198.51.100.0/24"}
