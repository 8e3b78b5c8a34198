"""The incremental sync: unchanged entries cost nothing, shared backends are reference
counted, clashes with entries that stay are reported, and the result always equals a
sync from scratch."""

from __future__ import annotations

from ipaddress import IPv4Address as A4

from hypothesis import given, settings
from hypothesis import strategies as st

from bpf import maglev
from bpf.mapstore import FakeMap
from bpf.sync import Syncer, SyncMaps, read_table
from bpf.table import Algorithm, Backend, BackendState, Proto, Service, ServiceKey

M = 251


def fake_maps() -> SyncMaps:
    return SyncMaps(FakeMap(20, 16, 200), FakeMap(4, 20, 200), FakeMap(4, 4 * M, 200), M)


def key(i: int) -> ServiceKey:
    return ServiceKey(A4(f"10.96.0.{i}"), 80, Proto.TCP)


def be(i: int, local: bool = False, state: BackendState = BackendState.READY) -> Backend:
    return Backend(A4(f"10.0.0.{i}"), 8080, local, state)


def test_unchanged_entries_are_not_recomputed() -> None:
    maps = fake_maps()
    s = Syncer(maps)
    t = {key(i): Service((be(i), be(i + 1))) for i in range(1, 30)}
    s.sync(t)
    calls: list[tuple[str, ...]] = []
    real = maglev.maglev_flat

    def spy(jobs: list[tuple[list[str], list[int]]], m: int) -> bytearray:
        calls.extend(tuple(names) for names, _ in jobs)
        return real(jobs, m)

    import bpf.slots as sync_mod
    setattr(sync_mod, "maglev_flat", spy)  # noqa: B010
    try:
        t2 = {k: Service(v.backends) for k, v in t.items()}  # equal, not identical
        t2[key(3)] = Service((be(3), be(99)))
        res = s.sync(t2)
    finally:
        setattr(sync_mod, "maglev_flat", real)  # noqa: B010
    assert calls == [("10.0.0.3:8080", "10.0.0.99:8080")]
    assert res.writes == 3 and res.deletes == 0  # backend 99, one table, one service


def test_shared_backend_survives_until_its_last_user_goes() -> None:
    maps = fake_maps()
    s = Syncer(maps)
    t = {key(1): Service((be(1), be(2))), key(2): Service((be(2),))}
    s.sync(t)
    s.sync({key(2): Service((be(2),))})
    assert len(maps.backend.data) == 1
    s.sync({})
    assert not maps.backend.data and not maps.maglev.data and not maps.svc.data


def test_clash_with_a_staying_entry_is_reported_and_others_programmed() -> None:
    maps = fake_maps()
    s = Syncer(maps)
    t = {key(1): Service((be(1, local=True),)), key(2): Service((be(2),))}
    s.sync(t)
    t2 = dict(t)
    t2[key(3)] = Service((be(1, local=False), be(3)))
    res = s.sync(t2)
    assert set(res.errors) == {key(3)} and "conflicts" in res.errors[key(3)]
    assert res.programmed == {key(1), key(2)}
    # when the old user changes the same way, the backend is rewritten
    t3 = {key(1): Service((be(1),)), key(3): Service((be(1), be(3)))}
    res = s.sync(t3)
    assert not res.errors and read_table(maps) == {k: v.programmed() for k, v in t3.items()}


def _table(spec: dict[int, tuple[int, ...]], rnd: bool) -> dict[ServiceKey, Service]:
    alg = Algorithm.RANDOM if rnd else Algorithm.MAGLEV
    return {key(k): Service(tuple(be(i, local=i % 2 == 0) for i in bes), algorithm=alg)
            for k, bes in spec.items()}


specs = st.dictionaries(st.integers(1, 12), st.tuples(*[st.integers(1, 9)] * 2).map(
    lambda t: tuple(sorted(set(t)))), max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(specs, min_size=1, max_size=5), st.booleans())
def test_any_sequence_of_syncs_equals_a_sync_from_scratch(steps: list[dict[int, tuple[int, ...]]],
                                                          rnd: bool) -> None:
    maps = fake_maps()
    s = Syncer(maps)
    for spec in steps:
        t = _table(spec, rnd)
        res = s.sync(t)
        assert not res.errors
        fresh = fake_maps()
        Syncer(fresh).sync(t)
        assert read_table(maps) == read_table(fresh) == {k: v.programmed() for k, v in t.items()}
        used = {b.name for v in t.values() for b in v.eligible()}
        assert len(maps.backend.data) == len(used)
        assert len(maps.maglev.data) == sum(1 for v in t.values() if v.eligible())
