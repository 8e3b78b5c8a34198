"""The datapath reconciler against in-memory maps: batched writes, the readiness gate,
deletes deferred to finalize, per-service errors that never stop the others."""

from __future__ import annotations

from ipaddress import IPv4Address as A4
from ipaddress import IPv4Network, ip_address, ip_network

from bpf import maps as m
from bpf.mapstore import FakeMap
from bpf.sync import Syncer, SyncMaps, read_table
from bpf.table import Proto, ServiceKey
from controller.model.k8s import Endpoint, EndpointPort, EndpointSlice, Node, ServicePort
from controller.model.k8s import Service as Svc
from controller.model.meta import Meta
from controller.reconcile.datapath import DatapathReconciler
from controller.reconcile.loop import Loop, PassContext
from controller.store import Snapshot, Store

M = 251
NODE = "n1"
NODE_IP = A4("192.0.2.1")


def fake_maps(services: int = 100) -> SyncMaps:
    return SyncMaps(FakeMap(20, 16, services), FakeMap(4, 20, 100),
                    FakeMap(4, 4 * M, services), M)


def svc(i: int, **kw: object) -> Svc:
    kw.setdefault("cluster_ips", (A4(f"10.96.0.{i}"),))
    kw.setdefault("ports", (ServicePort(80, "TCP", "", 8080),))
    return Svc(Meta("Service", f"s{i}", "demo"), **kw)


def sl(i: int, *addrs: str) -> EndpointSlice:
    eps = tuple(Endpoint((ip_address(a),), node_name=NODE) for a in addrs)
    return EndpointSlice(Meta("EndpointSlice", f"s{i}-x", "demo"), f"s{i}", "IPv4", eps,
                         (EndpointPort(8080, "TCP", ""),))


def snap(*objs: object) -> Snapshot:
    return Snapshot.build((Node(Meta("Node", NODE), (NODE_IP,)), *objs))


def key(i: int) -> ServiceKey:
    return ServiceKey(A4(f"10.96.0.{i}"), 80, Proto.TCP)


def host(i: int) -> IPv4Network:
    return IPv4Network(f"10.96.0.{i}/32")


def run(r: DatapathReconciler, s: Snapshot, resync: bool = False) -> PassContext:
    ctx = PassContext(s, NODE, resync)
    r.reconcile(ctx)
    return ctx


def test_first_pass_writes_batched_and_opens_the_gate_for_programmed_addresses() -> None:
    maps = fake_maps()
    r = DatapathReconciler(Syncer(maps))
    s = snap(*(svc(i) for i in range(1, 11)), *(sl(i, f"10.1.0.{i}") for i in range(1, 11)))
    before = PassContext(s, NODE)
    ctx = run(r, s)
    assert len(maps.svc.data) == 10 and maps.svc.batch_calls == 1  # one batch, not ten
    assert all(ctx.gate.ready(host(i)) for i in range(1, 11))
    assert not ctx.errors
    assert before.gate.ready(host(1))  # no datapath: open gate


def test_gate_stays_closed_until_the_maps_hold_the_entry() -> None:
    maps = fake_maps()
    syncer = Syncer(maps)
    r = DatapathReconciler(syncer)
    s = snap(svc(1), sl(1, "10.1.0.1"), svc(2), sl(2, "10.1.0.2"))
    # the maps lose entry 2 behind our back (e.g. a write the kernel did not keep)
    real_sync = syncer.sync

    def lossy(table):  # type: ignore[no-untyped-def]
        res = real_sync(table)
        maps.svc.data.pop(bytes(m.svc_key(A4("10.96.0.2"), 80, 6)), None)
        return res

    syncer.sync = lossy  # type: ignore[method-assign]
    ctx = run(r, s)
    assert ctx.gate.ready(host(1))
    assert not ctx.gate.ready(host(2))
    syncer.sync = real_sync  # type: ignore[method-assign]
    ctx = run(r, s)  # an ordinary pass trusts what it wrote
    assert not ctx.gate.ready(host(2))
    ctx = run(r, s, resync=True)  # a resync finds the entry gone and writes it again
    assert ctx.gate.ready(host(2)) and ctx.gate.ready(host(1))
    assert bytes(m.svc_key(A4("10.96.0.2"), 80, 6)) in maps.svc.data


def test_a_resync_rewrites_entries_deleted_behind_its_back() -> None:
    maps = fake_maps()
    r = DatapathReconciler(Syncer(maps))
    s = snap(svc(1), sl(1, "10.1.0.1"), svc(2), sl(2, "10.1.0.2"))
    run(r, s)
    before = dict(maps.svc.data)
    maps.svc.data.clear()  # someone deletes the service entries
    maps.maglev.data.clear()  # and a table
    ctx = run(r, s, resync=True)
    assert maps.svc.data == before and len(maps.maglev.data) == 2
    assert ctx.gate.ready(host(1)) and ctx.gate.ready(host(2)) and not ctx.errors


def test_removed_service_is_deleted_in_finalize_not_before() -> None:
    maps = fake_maps()
    r = DatapathReconciler(Syncer(maps))
    run(r, snap(svc(1), sl(1, "10.1.0.1"), svc(2), sl(2, "10.1.0.2")))
    ctx = run(r, snap(svc(1), sl(1, "10.1.0.1")))
    assert set(read_table(maps)) == {key(1), key(2)}  # still served while BGP withdraws
    assert ctx.gate.ready(host(1))  # service 1 still confirmed
    r.finalize(ctx)
    assert set(read_table(maps)) == {key(1)}
    assert len(maps.backend.data) == 1 and len(maps.maglev.data) == 1
    writes = maps.svc.batch_calls
    r.finalize(ctx)  # nothing left to delete: no map call
    assert maps.svc.batch_calls == writes


def test_changed_backends_are_written_in_reconcile() -> None:
    maps = fake_maps()
    r = DatapathReconciler(Syncer(maps))
    run(r, snap(svc(1), sl(1, "10.1.0.1")))
    run(r, snap(svc(1), sl(1, "10.1.0.1", "10.1.0.9")))
    got = read_table(maps)[key(1)]
    assert [str(b.ip) for b in got.backends] == ["10.1.0.1", "10.1.0.9"]


def test_per_service_errors_do_not_stop_the_others() -> None:
    maps = fake_maps(services=3)  # room for three entries only
    r = DatapathReconciler(Syncer(maps))
    objs = [svc(i) for i in range(1, 5)] + [sl(i, f"10.1.0.{i}") for i in range(1, 5)]
    objs.append(svc(9, ports=()))  # bad input: no ports
    ctx = run(r, snap(*objs))
    programmed = set(read_table(maps))
    assert len(programmed) == 3 and programmed < {key(i) for i in range(1, 5)}
    failed = ({key(i) for i in range(1, 5)} - programmed).pop()
    assert "map full" in r.errors[failed]
    assert f"datapath:demo/s{failed.vip.packed[-1]}" in ctx.errors
    assert "no ports" in ctx.errors["datapath:demo/s9"]
    for k in programmed:
        assert ctx.gate.ready(ip_network(f"{k.vip}/32"))
    assert not ctx.gate.ready(ip_network(f"{failed.vip}/32"))


def test_invalid_update_keeps_the_old_entry_until_finalize() -> None:
    maps = fake_maps()
    r = DatapathReconciler(Syncer(maps))
    run(r, snap(svc(1), sl(1, "10.1.0.1")))
    bad = svc(1, ports=(ServicePort(80, "TCP", "", 70000),))  # target port out of range
    ctx = run(r, snap(bad, EndpointSlice(Meta("EndpointSlice", "s1-x", "demo"), "s1", "IPv4",
                                         (Endpoint((A4("10.1.0.1"),), node_name=NODE),), ())))
    assert "port out of range" in r.errors[key(1)]
    assert key(1) in read_table(maps)
    assert not ctx.gate.ready(host(1))
    r.finalize(ctx)
    assert key(1) not in read_table(maps)


def test_nodeport_uses_the_node_objects_addresses_and_adopts_on_restart() -> None:
    maps = fake_maps()
    s = svc(1, type="NodePort", ports=(ServicePort(80, "TCP", "", 8080, 30080),))
    first = DatapathReconciler(Syncer(maps))
    run(first, snap(s, sl(1, "10.1.0.1")))
    assert ServiceKey(NODE_IP, 30080, Proto.TCP) in read_table(maps)
    calls = maps.svc.batch_calls
    again = DatapathReconciler(Syncer(maps))  # a restarted agent adopts the maps
    ctx = run(again, snap(s, sl(1, "10.1.0.1")))
    again.finalize(ctx)
    assert maps.svc.batch_calls == calls  # nothing rewritten, nothing deleted
    assert ctx.gate.ready(ip_network(f"{NODE_IP}/32"))


def test_in_the_loop_finalize_runs_after_every_reconcile() -> None:
    maps = fake_maps()
    store = Store(snap(svc(1), sl(1, "10.1.0.1"), svc(2), sl(2, "10.1.0.2")))
    seen: list[set[ServiceKey]] = []

    class Bgp:
        name = "bgp"

        def reconcile(self, ctx: PassContext) -> None:
            seen.append(set(read_table(maps)))

        def close(self) -> None:
            pass

    loop = Loop(store, NODE, [DatapathReconciler(Syncer(maps)), Bgp()])
    loop.run_once()
    store.publish(snap(svc(1), sl(1, "10.1.0.1")))
    loop.run_once()
    assert seen == [{key(1), key(2)}, {key(1), key(2)}]  # BGP saw it while withdrawing
    assert set(read_table(maps)) == {key(1)}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def local_backends(maps: SyncMaps, i: int) -> list[str]:
    entry = read_table(maps).get(key(i))
    return [str(b.ip) for b in entry.backends if b.local] if entry else []


def test_last_local_backend_drains_before_it_goes() -> None:
    maps, clock = fake_maps(), Clock()
    r = DatapathReconciler(Syncer(maps), drain=2.0, clock=clock)
    local = svc(1, internal_traffic_policy="Local")
    ctx = run(r, snap(local, sl(1, "10.244.0.5")))
    r.finalize(ctx)
    assert local_backends(maps, 1) == ["10.244.0.5"]
    moved = EndpointSlice(Meta("EndpointSlice", "s1-x", "demo"), "s1", "IPv4",
                          (Endpoint((ip_address("10.244.1.5"),), node_name="other"),),
                          (EndpointPort(8080, "TCP", ""),))
    ctx = run(r, snap(local, moved))
    r.finalize(ctx)
    assert local_backends(maps, 1) == ["10.244.0.5"]  # still serving while BGP withdraws
    assert ctx.requeue_after == 2.0
    clock.t += 1.0
    ctx = run(r, snap(local, moved))
    r.finalize(ctx)
    assert local_backends(maps, 1) == ["10.244.0.5"]
    assert ctx.requeue_after == 1.0
    clock.t += 1.5
    ctx = run(r, snap(local, moved))
    r.finalize(ctx)
    assert local_backends(maps, 1) == []
    assert ctx.requeue_after is None


def test_deleted_service_drains_then_is_deleted() -> None:
    maps, clock = fake_maps(), Clock()
    r = DatapathReconciler(Syncer(maps), drain=2.0, clock=clock)
    ctx = run(r, snap(svc(1), sl(1, "10.244.0.5"), svc(2), sl(2, "10.244.0.6")))
    r.finalize(ctx)
    ctx = run(r, snap(svc(2), sl(2, "10.244.0.6")))
    r.finalize(ctx)
    assert key(1) in read_table(maps)
    assert ctx.requeue_after == 2.0
    clock.t += 2.5
    ctx = run(r, snap(svc(2), sl(2, "10.244.0.6")))
    r.finalize(ctx)
    assert set(read_table(maps)) == {key(2)}


def test_a_new_snapshot_with_one_change_hands_the_syncer_the_same_objects() -> None:
    maps = fake_maps()
    r = DatapathReconciler(Syncer(maps))
    objs = [svc(i) for i in range(1, 6)] + [sl(i, f"10.1.0.{i}") for i in range(1, 6)]
    run(r, snap(*objs))
    assert r.plan is not None
    first = dict(r.plan.table)
    objs[5] = sl(1, "10.1.0.99")  # s1's slice changed; the rest are the same objects
    ctx = run(r, snap(*objs))
    assert r.plan is not None and not ctx.errors
    assert r.plan.table[key(1)] != first[key(1)]
    assert all(r.plan.table[key(i)] is first[key(i)] for i in range(2, 6))
    assert read_table(maps)[key(1)].backends[0].ip == A4("10.1.0.99")
    # equal but new objects (a source that re-parses everything) plan the same
    run(r, snap(*(svc(i) for i in range(1, 6)), sl(1, "10.1.0.99"),
                 *(sl(i, f"10.1.0.{i}") for i in range(2, 6))))
    assert all(r.plan.table[key(i)] is first[key(i)] for i in range(2, 6))
