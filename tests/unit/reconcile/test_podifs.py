"""PodIfsReconciler: rr_pod_ifs entries of interfaces that are gone are removed on the
first pass and on resyncs only; an entry recorded while it runs is kept; an entry that
vanished meanwhile is no failure; any other refusal is reported."""

from __future__ import annotations

import errno

from bpf import maps as m
from bpf.mapstore import FakeMap, MapWriteError
from controller.reconcile.loop import PassContext
from controller.reconcile.podifs import PodIfsReconciler
from controller.store import Snapshot


def pod_ifs(*ifindexes: int) -> FakeMap:
    fm = FakeMap(4, 8, 64)
    fm.update_batch([m.pod_if_entry(i, f"02:00:00:00:00:{i:02x}") for i in ifindexes])
    return fm


def held(fm: FakeMap) -> set[int]:
    return {int.from_bytes(k, "little") for k, _ in fm.items()}


def run(r: PodIfsReconciler, resync: bool = False) -> PassContext:
    ctx = PassContext(Snapshot.build([]), "n1", resync=resync)
    r.reconcile(ctx)
    return ctx


def test_first_pass_and_resyncs_remove_entries_of_gone_interfaces() -> None:
    fm = pod_ifs(5, 7, 9)
    live = {1, 5, 9}
    r = PodIfsReconciler(fm, lambda: set(live))
    assert run(r).errors == {}
    assert held(fm) == {5, 9} and r.pruned == 1
    live.discard(9)
    run(r)  # not a resync: the map is not even read
    assert held(fm) == {5, 9}
    run(r, resync=True)
    assert held(fm) == {5} and r.pruned == 2


def test_an_entry_recorded_while_pruning_is_kept() -> None:
    fm = pod_ifs(5)

    def live() -> set[int]:
        # a CNI ADD between the two reads: veth 11 created, then recorded
        fm.update_batch([m.pod_if_entry(11, "02:00:00:00:00:0b")])
        return {11}

    r = PodIfsReconciler(fm, live)
    run(r)
    assert held(fm) == {11}


def test_an_entry_gone_meanwhile_is_no_failure() -> None:
    fm = pod_ifs(5, 7)

    def live() -> set[int]:
        fm.delete_batch([(7).to_bytes(4, "little")])  # LRU-evicted, or a DEL
        return set()

    r = PodIfsReconciler(fm, live)
    ctx = run(r)
    assert ctx.errors == {} and held(fm) == set() and r.pruned == 1


def test_a_refusal_is_reported_and_the_rest_still_pruned() -> None:
    class Refusing(FakeMap):
        def delete_batch(self, keys: list[bytes]) -> None:  # type: ignore[override]
            if keys == [(5).to_bytes(4, "little")]:
                raise MapWriteError(errno.EPERM, "refused", 0)
            super().delete_batch(keys)

    fm = Refusing(4, 8, 64)
    fm.update_batch([m.pod_if_entry(i, "02:00:00:00:00:01") for i in (5, 6)])
    ctx = run(PodIfsReconciler(fm, set))
    assert "rr_pod_ifs" in ctx.errors["pod-ifs"] and "ifindex 5" in ctx.errors["pod-ifs"]
    assert held(fm) == {5}


def test_an_empty_map_never_lists_the_interfaces() -> None:
    def live() -> set[int]:
        raise AssertionError("no entries: nothing to compare")

    assert run(PodIfsReconciler(FakeMap(4, 8, 64), live)).errors == {}
