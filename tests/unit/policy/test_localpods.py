"""New pods' addresses from the CNI plugin's records: the pure merge
(controller/desired/localpods.py), the LocalPods port's contract held by the real
directory (written by the plugin's own writer) and by the fake, and the policy
reconciler guarding a pod whose status has no address yet, acknowledging its record only
once the maps hold its policy."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpf import maps as m
from bpf.mapstore import FakeMap
from bpf.policy import PolicyMaps
from controller.cni import podrecords
from controller.cni.podrecords import PodRecord, PodRecordDir, parse_record
from controller.desired.localpods import with_local_addresses
from controller.model.meta import Meta, frozen_map
from controller.model.policy import Pod
from controller.reconcile.loop import PassContext
from controller.reconcile.policy import FakeLocalPods, LocalPods, PolicyReconciler
from controller.store import Snapshot
from tests.unit.policy.test_compile import NAMESPACES, policy, sel

A = ipaddress.ip_address


def new_pod(name: str, node: str = "n1", uid: str = "", ips: tuple[str, ...] = (),
            **fields: object) -> Pod:
    pod = Pod(Meta("Pod", name, "web", labels=frozen_map({"app": name}), uid=uid), node,
              tuple(A(i) for i in ips))
    return dataclasses.replace(pod, **fields)  # type: ignore[arg-type]


def rec(key: str, name: str, *ips: str, uid: str = "") -> PodRecord:
    cid, _, ifname = key.rpartition("-")
    return PodRecord(key, "web", name, uid, tuple(A(i) for i in ips), cid, ifname)


def test_a_pod_without_an_address_takes_its_records() -> None:
    pods, keys = with_local_addresses([new_pod("api")], [rec("c1-eth0", "api", "10.0.1.7",
                                                             "fd00:1::7")], "n1")
    assert pods[0].ips == (A("10.0.1.7"), A("fd00:1::7")) and keys == ["c1-eth0"]


def test_the_status_wins_and_its_record_is_acknowledged_all_the_same() -> None:
    pods, keys = with_local_addresses([new_pod("api", ips=("10.0.1.9",))],
                                      [rec("c1-eth0", "api", "10.0.1.7")], "n1")
    assert pods[0].ips == (A("10.0.1.9"),) and keys == ["c1-eth0"]


def test_two_sandboxes_give_both_addresses() -> None:
    pods, keys = with_local_addresses(
        [new_pod("api")], [rec("c2-eth0", "api", "10.0.1.8"), rec("c1-eth0", "api", "10.0.1.7")],
        "n1")
    assert pods[0].ips == (A("10.0.1.7"), A("10.0.1.8")) and keys == ["c1-eth0", "c2-eth0"]


@pytest.mark.parametrize("pod, record", [
    (new_pod("api", node="n2"), rec("c1-eth0", "api", "10.0.1.7")),  # another node's
    (new_pod("api", uid="u2"), rec("c1-eth0", "api", "10.0.1.7", uid="u1")),  # made again
    (new_pod("api", host_network=True), rec("c1-eth0", "api", "10.0.1.7")),
    (new_pod("api", phase="Succeeded"), rec("c1-eth0", "api", "10.0.1.7")),
    (new_pod("front"), rec("c1-eth0", "api", "10.0.1.7")),  # names a pod not in the view
])
def test_what_a_record_does_not_stand_for(pod: Pod, record: PodRecord) -> None:
    pods, keys = with_local_addresses([pod], [record], "n1")
    assert pods == [pod] and keys == []


def test_a_uid_on_one_side_only_matches() -> None:
    _, keys = with_local_addresses([new_pod("api", uid="u1")],
                                   [rec("c1-eth0", "api", "10.0.1.7")], "n1")
    assert keys == ["c1-eth0"]


@pytest.mark.parametrize("text, why", [
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"namespace": "web", "name": "api", "ips": ["10.0.0.1"]}', '"uid" must be a string'),
    ('{"namespace": "", "name": "api", "uid": "", "ips": ["10.0.0.1"]}',
     '"namespace" and "name" must not be empty'),
    ('{"namespace": "web", "name": "api", "uid": "", "ips": []}',
     '"ips" must be a non-empty list'),
    ('{"namespace": "web", "name": "api", "uid": "", "ips": ["10.0.0.300"]}', '"ips": '),
])
def test_a_record_that_does_not_read_names_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[")):
        parse_record("k", text)


# the LocalPods contract: the real directory and the fake behave alike

def _real(tmp: Path) -> tuple[LocalPods, Callable[[PodRecord], None], Callable[[str], None]]:
    d = PodRecordDir(tmp)

    def add(r: PodRecord) -> None:
        cid, _, ifname = r.key.rpartition("-")
        podrecords.write_record(tmp, cid, ifname, r.namespace, r.name, r.uid, r.ips)

    def remove(key: str) -> None:
        cid, _, ifname = key.rpartition("-")
        podrecords.remove_record(tmp, cid, ifname)
    return d, add, remove


def _fake(tmp: Path) -> tuple[LocalPods, Callable[[PodRecord], None], Callable[[str], None]]:
    f = FakeLocalPods()
    return f, f.add, f.remove


@pytest.fixture(params=[_real, _fake], ids=["dir", "fake"])
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[
        tuple[LocalPods, Callable[[PodRecord], None], Callable[[str], None]]]:
    yield request.param(tmp_path)


def test_contract_records_and_acknowledgements(local: tuple[
        LocalPods, Callable[[PodRecord], None], Callable[[str], None]]) -> None:
    port, add, remove = local
    assert port.records() == ([], [])
    a, b = rec("c1-eth0", "api", "10.0.1.7", uid="u1"), rec("c2-eth0", "front", "fd00::8")
    add(b)
    add(a)
    assert port.records() == ([a, b], [])
    port.acknowledge(["c1-eth0", "c9-eth0"])  # a key with no record: nothing
    assert port.acknowledged("c1-eth0") and not port.acknowledged("c2-eth0")
    assert not port.acknowledged("c9-eth0")
    add(a)  # ADD again (a retried sandbox): to be acknowledged anew
    assert not port.acknowledged("c1-eth0")
    port.acknowledge(["c1-eth0"])
    remove("c1-eth0")
    assert port.records() == ([b], []) and not port.acknowledged("c1-eth0")


def test_an_unreadable_record_is_named_and_the_others_read(tmp_path: Path) -> None:
    d = PodRecordDir(tmp_path)
    podrecords.write_record(tmp_path, "c1", "eth0", "web", "api", "", [A("10.0.1.7")])
    (podrecords.record_dir(tmp_path) / "c2-eth0.json").write_text("{")
    recs, errors = d.records()
    assert [r.key for r in recs] == ["c1-eth0"]
    assert len(errors) == 1 and "c2-eth0.json: not JSON" in errors[0]


def test_the_directory_is_read_again_only_when_a_record_came_or_went(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = PodRecordDir(tmp_path)
    podrecords.write_record(tmp_path, "c1", "eth0", "web", "api", "", [A("10.0.1.7")])
    reads: list[int] = []
    real = PodRecordDir._read_all

    def counted(self: PodRecordDir) -> tuple[list[PodRecord], list[str]]:
        reads.append(1)
        return real(self)

    monkeypatch.setattr(PodRecordDir, "_read_all", counted)
    first = d.records()
    assert d.records() == first and len(reads) == 1  # nothing changed: not read again
    podrecords.write_record(tmp_path, "c2", "eth0", "web", "db", "", [A("10.0.1.8")])
    assert [r.key for r in d.records()[0]] == ["c1-eth0", "c2-eth0"] and len(reads) == 2
    podrecords.remove_record(tmp_path, "c1", "eth0")
    assert [r.key for r in d.records()[0]] == ["c2-eth0"] and len(reads) == 3
    # the same key written again (an ADD retried), at once: read again
    podrecords.write_record(tmp_path, "c2", "eth0", "web", "db", "", [A("10.0.1.9")])
    assert d.records()[0][0].ips == (A("10.0.1.9"),) and len(reads) == 4


def test_the_plugin_waits_for_the_acknowledgement(tmp_path: Path) -> None:
    key = podrecords.write_record(tmp_path, "c1", "eth0", "web", "api", "", [A("10.0.1.7")])
    assert not podrecords.wait_ready(tmp_path, key, 0.05)
    PodRecordDir(tmp_path).acknowledge([key])
    assert podrecords.wait_ready(tmp_path, key, 0.05)


# the reconciler

DENY_IN = policy("deny", "web", sel(app="api"), ingress=[])


def _maps(eps: int = 64) -> PolicyMaps:
    return PolicyMaps(FakeMap(20, 8, eps), FakeMap(28, 50, 1024), FakeMap(20, 4, 16))


def _pass(r: PolicyReconciler, *objects: object) -> PassContext:
    ctx = PassContext(Snapshot.build([*NAMESPACES.values(), *objects]), "n1")
    r.reconcile(ctx)
    return ctx


def _eps(pm: PolicyMaps) -> set[object]:
    return {m.ip_of(m.PolEpKey.from_buffer_copy(k).addr, m.PolEpKey.from_buffer_copy(k).family)
            for k, _ in pm.eps.items()}


def test_a_new_pod_is_guarded_by_its_record_before_its_status_has_an_address() -> None:
    pm, local = _maps(), FakeLocalPods([rec("c1-eth0", "api", "10.0.1.7")])
    r = PolicyReconciler(pm, set, local)
    assert _pass(r, new_pod("api"), DENY_IN).errors == {}
    assert _eps(pm) == {A("10.0.1.7")} and local.acknowledged("c1-eth0")
    # without the record, the pod would be under no policy until its status said more
    pm2 = _maps()
    PolicyReconciler(pm2, set).reconcile(PassContext(Snapshot.build(
        [*NAMESPACES.values(), new_pod("api"), DENY_IN]), "n1"))
    assert _eps(pm2) == set()
    # a pod under no policy is acknowledged too (its ADD waits for the verdict)
    local.add(rec("c2-eth0", "front", "10.0.1.8"))
    assert _pass(r, new_pod("api"), new_pod("front"), DENY_IN).errors == {}
    assert local.acknowledged("c2-eth0") and _eps(pm) == {A("10.0.1.7")}


def test_a_record_is_not_acknowledged_while_the_maps_refuse_its_pod() -> None:
    pm = _maps(eps=1)  # room for one pod under policy
    local = FakeLocalPods([rec("c1-eth0", "api", "10.0.1.7"), rec("c2-eth0", "db", "10.0.1.8")])
    local.bad["c3-eth0"] = "not JSON"
    both = policy("deny", "web", sel(), ingress=[])  # every pod of web
    ctx = _pass(PolicyReconciler(pm, set, local), new_pod("api"), new_pod("db"), both)
    assert "pod record c3-eth0: not JSON" in ctx.errors["policy"]
    # the map that refused, the pod and its address
    assert "rr_pol_eps: pod web/db address 10.0.1.8: not written: map full" in \
        ctx.errors["policy"]
    assert not local.acknowledged("c1-eth0") and not local.acknowledged("c2-eth0")


def test_a_record_names_its_attachment_and_older_ones_are_read_from_their_key(
        tmp_path: Path) -> None:
    podrecords.write_record(tmp_path, "c-1", "net1", "web", "api", "", [A("10.0.1.7")])
    (r,) = PodRecordDir(tmp_path).records()[0]
    assert (r.key, r.container_id, r.ifname) == ("c-1-net1", "c-1", "net1")
    old = parse_record("c-2-eth0", '{"namespace": "web", "name": "db", "uid": "", '
                                   '"ips": ["10.0.1.8"]}')
    assert (old.container_id, old.ifname) == ("c-2", "eth0")


def test_a_record_whose_sandbox_network_is_gone_is_removed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Asked on every read, the directory unchanged or not: the record and its
    acknowledgement go, the pod is named in the log, and the others stay."""
    alive = {"c1", "c2"}
    d = PodRecordDir(tmp_path, lambda r: r.container_id in alive)
    for cid, ip in (("c1", "10.0.1.7"), ("c2", "10.0.1.8")):
        podrecords.write_record(tmp_path, cid, "eth0", "web", f"pod-{cid}", "", [A(ip)])
    d.acknowledge(["c1-eth0", "c2-eth0"])
    assert [r.key for r in d.records()[0]] == ["c1-eth0", "c2-eth0"]
    alive.discard("c2")  # nothing in the directory changed
    with caplog.at_level("INFO", logger="rackroute.policy"):
        assert [r.key for r in d.records()[0]] == ["c1-eth0"]
    assert "event=pod_record_pruned pod=web/pod-c2 key=c2-eth0" in caplog.text
    assert sorted(p.name for p in podrecords.record_dir(tmp_path).iterdir()) == [
        "c1-eth0.json", "c1-eth0.ready"]
    assert [r.key for r in d.records()[0]] == ["c1-eth0"]
    assert [r.key for r in PodRecordDir(tmp_path).records()[0]] == ["c1-eth0"]
