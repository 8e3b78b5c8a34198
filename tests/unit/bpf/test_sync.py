"""The sync against in-memory maps: minimal writes, adoption, per-service errors."""

from __future__ import annotations

from array import array
from ipaddress import IPv4Address as A4
from ipaddress import IPv6Address as A6

from bpf import maps as m
from bpf.mapstore import FakeMap
from bpf.sync import Syncer, SyncMaps, read_table
from bpf.table import Algorithm, Backend, BackendState, Proto, Service, ServiceKey

M = 251


def fake_maps(services: int = 100, backends: int = 100) -> SyncMaps:
    return SyncMaps(FakeMap(20, 16, services), FakeMap(4, 20, backends),
                    FakeMap(4, 4 * M, services), M)


def key(i: int, proto: Proto = Proto.TCP) -> ServiceKey:
    return ServiceKey(A4(f"10.96.0.{i}"), 80, proto)


def be(i: int, local: bool | None = None) -> Backend:
    return Backend(A4(f"10.0.0.{i}"), 8080, i % 2 == 0 if local is None else local)


def table(n: int = 3) -> dict[ServiceKey, Service]:
    return {key(i): Service((be(i), be(i + 1)), name=f"ns/s{i}") for i in range(1, n + 1)}


def test_first_sync_programs_everything_and_reads_back() -> None:
    maps = fake_maps()
    t = table()
    res = Syncer(maps).sync(t)
    assert not res.errors and res.programmed == frozenset(t)
    assert read_table(maps) == {k: s.programmed() for k, s in t.items()}
    assert len(maps.backend.data) == 4  # shared backends written once
    # the Maglev table of each service holds exactly its backends' ids
    for kb, vb in maps.svc.data.items():
        sid = m.SvcValue.from_buffer_copy(vb).svc_id
        ids = set(array("I", maps.maglev.data[sid.to_bytes(4, "little")]))
        bes = {m.BackendValue.from_buffer_copy(maps.backend.data[i.to_bytes(4, "little")]).addr.w[0]
               for i in ids}
        assert len(ids) == 2 and len(bes) == 2
        assert m.SvcKey.from_buffer_copy(kb).port == m.port_of(80)


def test_second_sync_writes_nothing_and_one_change_writes_little() -> None:
    maps = fake_maps()
    s = Syncer(maps)
    t = table(20)
    s.sync(t)
    calls = maps.svc.batch_calls
    again = s.sync(t)
    assert again.writes == 0 and again.deletes == 0 and maps.svc.batch_calls == calls
    t2 = dict(t)
    t2[key(5)] = Service((be(5), be(6), be(50)))
    res = s.sync(t2)
    assert res.writes == 3  # one new backend, one table, one service
    assert read_table(maps)[key(5)] == t2[key(5)].programmed()


def test_new_syncer_adopts_existing_maps_without_writes() -> None:
    maps = fake_maps()
    Syncer(maps).sync(table(10))
    before = (dict(maps.svc.data), dict(maps.backend.data), dict(maps.maglev.data))
    res = Syncer(maps).sync(table(10))
    assert res.writes == 0 and res.deletes == 0
    assert (maps.svc.data, maps.backend.data, maps.maglev.data) == before


def test_removal_deletes_service_table_and_unused_backends() -> None:
    maps = fake_maps()
    s = Syncer(maps)
    s.sync(table(3))
    t = table(3)
    del t[key(3)]
    res = s.sync(t)
    assert res.deletes == 3  # service, its table, backend 10.0.0.4 (no longer used)
    assert key(3) not in read_table(maps)
    assert len(maps.backend.data) == 3 and len(maps.maglev.data) == 2


def test_removed_backend_leaves_the_table_but_ids_stay_stable() -> None:
    maps = fake_maps()
    s = Syncer(maps)
    s.sync({key(1): Service((be(1), be(2), be(3)))})
    ids_before = dict(maps.backend.data)
    s.sync({key(1): Service((be(1), be(3)))})
    (tab,) = maps.maglev.data.values()
    assert len(set(array("I", tab))) == 2
    remaining = {k: v for k, v in ids_before.items() if k in maps.backend.data}
    assert remaining == maps.backend.data and len(remaining) == 2


def test_zero_eligible_backends_programs_a_refusing_entry() -> None:
    maps = fake_maps()
    t = {key(1): Service((be(1, local=False),), local_only=True, external=True)}
    res = Syncer(maps).sync(t)
    assert res.programmed == frozenset(t)
    (vb,) = maps.svc.data.values()
    v = m.SvcValue.from_buffer_copy(vb)
    assert v.backend_count == 0 and v.flags & m.SVC_LOCAL_ONLY and v.flags & m.SVC_EXTERNAL
    assert maps.maglev.data == {}


def test_flags_affinity_algorithm_and_terminating_round_trip() -> None:
    maps = fake_maps()
    svc = Service((Backend(A4("10.0.0.9"), 80, True, BackendState.TERMINATING),),
                  nodeport=True, affinity_timeout=30, algorithm=Algorithm.RANDOM)
    Syncer(maps).sync({key(1, Proto.UDP): svc})
    assert read_table(maps) == {key(1, Proto.UDP): svc.programmed()}


def test_bad_service_and_full_map_do_not_stop_the_others() -> None:
    maps = fake_maps(services=3)
    t = table(4)
    t[key(9)] = Service((Backend(A6("fd00::1"), 80),))  # wrong family
    res = Syncer(maps).sync(t)
    assert "IPv6" in res.errors[key(9)]
    full = [k for k, why in res.errors.items() if "map full" in why]
    assert len(full) == 1
    assert len(res.programmed) == 3 and res.programmed <= frozenset(t)
    assert set(read_table(maps)) == set(res.programmed)


def test_full_backend_map_blames_the_services_using_it() -> None:
    maps = fake_maps(backends=2)
    t = {key(1): Service((be(1), be(2))), key(2): Service((be(3),))}
    res = Syncer(maps).sync(t)
    assert set(res.errors) == {key(2)} and "backend" in res.errors[key(2)]
    assert res.programmed == frozenset({key(1)})


def test_conflicting_endpoint_flags_are_reported_not_flapped() -> None:
    maps = fake_maps()
    t = {key(1): Service((be(1, local=True),)), key(2): Service((be(1, local=False),))}
    s = Syncer(maps)
    res = s.sync(t)
    assert set(res.errors) == {key(2)} and "conflicts" in res.errors[key(2)]
    assert s.sync(t).writes == 0


def test_confirmed_reads_the_maps() -> None:
    maps = fake_maps()
    s = Syncer(maps)
    s.sync(table(2))
    assert s.confirmed([key(1), key(2), key(7)]) == frozenset({key(1), key(2)})
    maps.svc.data.clear()
    assert s.confirmed([key(1)]) == frozenset()


def test_sync_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    s = Syncer(fake_maps())
    assert gc.isenabled()
    s.sync({})
    assert gc.isenabled()
    gc.disable()
    try:
        s.sync({})
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_service_addresses_are_marked_once_and_never_cleared() -> None:
    maps = fake_maps()
    maps.vips = FakeMap(4, 8, m.VIPS_ARMED + 1)
    words = maps.vips.data

    def word(addr: str) -> int:
        w, _ = m.vip_bit(4, int(A4(addr)))
        return int.from_bytes(words.get(w.to_bytes(4, "little"), bytes(8)), "little")

    t = table(3)  # 10.96.0.1-3: one /24
    t[ServiceKey(A4("10.97.5.5"), 53, Proto.UDP)] = Service((be(9),))
    t[ServiceKey(A6("fd00::5"), 80, Proto.TCP)] = Service((Backend(A6("fd00::9"), 80),))
    s = Syncer(maps)
    assert not s.sync(t).errors
    assert word("10.96.0.1") == m.vip_bit(4, int(A4("10.96.0.1")))[1]
    assert word("10.97.5.5") == m.vip_bit(4, int(A4("10.97.5.5")))[1]
    assert words[m.VIPS_ARMED.to_bytes(4, "little")] == (1).to_bytes(8, "little")
    w6, bit6 = m.vip_bit(6, int(A6("fd00::5")))
    assert w6 >= m.VIP6_BASE and words[w6.to_bytes(4, "little")] == bit6.to_bytes(8, "little")
    assert len(words) == 4  # two IPv4 words, one IPv6 word, the armed entry
    calls = maps.vips.batch_calls
    assert s.sync(t).writes == 0 and maps.vips.batch_calls == calls  # nothing new
    del t[key(1)], t[key(2)], t[key(3)]
    assert not s.sync(t).errors and word("10.96.0.1")  # removed: the bit stays
    t[ServiceKey(A4("10.96.0.77"), 80, Proto.TCP)] = Service((be(1),))
    assert not s.sync(t).errors and maps.vips.batch_calls == calls  # its /24 is marked


def test_an_adopting_syncer_marks_what_is_programmed_and_arms_the_filter() -> None:
    maps = fake_maps()
    assert not Syncer(maps).sync(table(3)).errors  # no filter map yet (an old datapath)
    maps.vips = FakeMap(4, 8, m.VIPS_ARMED + 1)  # the upgrade created it, empty
    s = Syncer(maps)
    assert not s.sync(s.adopt()).errors
    w, bit = m.vip_bit(4, int(A4("10.96.0.1")))
    assert maps.vips.data == {w.to_bytes(4, "little"): bit.to_bytes(8, "little"),
                              m.VIPS_ARMED.to_bytes(4, "little"): (1).to_bytes(8, "little")}


def test_a_pass_cut_short_leaves_strays_that_the_next_syncer_deletes() -> None:
    """The agent killed mid-pass: a new service's table and backends were written, its
    service entry was not. Nothing can reach them; the adopting syncer does not count
    them as programmed and its first pass deletes them, leaving the rest alone."""
    maps = fake_maps()
    t = table(3)
    Syncer(maps).sync(t)
    kept = (dict(maps.svc.data), dict(maps.backend.data), dict(maps.maglev.data))
    stray_table, stray_be = (900).to_bytes(4, "little"), (901).to_bytes(4, "little")
    maps.maglev.data[stray_table] = array("I", [901] * M).tobytes()
    maps.backend.data[stray_be] = m.backend_value_bytes(A4("10.0.0.99"), 8080, 0)
    s = Syncer(maps)
    assert s.adopt() == {k: v.programmed() for k, v in t.items()}
    res = s.sync(t)
    assert not res.errors and res.writes == 0 and res.deletes == 2
    assert (maps.svc.data, maps.backend.data, maps.maglev.data) == kept
    # a backend the strays shared a name with is a new id, not the stray's
    t[key(9)] = Service((Backend(A4("10.0.0.99"), 8080),))
    assert not s.sync(t).errors
    assert stray_be not in maps.backend.data and len(maps.backend.data) == len(kept[1]) + 1


def test_the_ipv6_bucket_hash_is_pinned() -> None:
    # the datapath computes the same (lb.h rr_vip6_hash); a change must change both
    assert m.vip6_hash(0, 0) == 0
    assert [m.vip6_hash(w, w ^ 0xFFFF) for w in (1, 0x000000FD, 0xDEADBEEF)] == [
        404972, 897688, 621772]
    a, b = m.vip_bit(6, int(A6("fd00:10:96::1"))), m.vip_bit(6, int(A6("fd00:10:96::ffff")))
    assert a == b  # one /64, one bucket
    assert m.VIP6_BASE <= a[0] < m.VIPS_ARMED
