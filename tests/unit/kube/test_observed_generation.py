"""Every condition the operator writes carries the generation of the object it describes
(API.md: conditions carry observedGeneration): a NodeNetwork's at the generation its own
spec write gives it, a fixed manifest's Valid=True at the generation that fixed it, an
invalid object's Valid=False at the generation the parser refused; 0 only when nothing
says which."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.desired.cluster import plan_allocations
from controller.kubestatus import planned_writes
from controller.model.crds import NodeNetwork
from controller.model.meta import Meta
from controller.operator import KubeOperator, Operator, status_document
from controller.sources.files import ManifestDir
from controller.sources.kube import ParseCache
from controller.sources.kubeapi import RESOURCES
from controller.sources.kubefake import FakeKubeAPI
from controller.store import ObjectError, Snapshot
from tests.unit.kube.cluster import create_all, lab_docs
from tests.unit.kube.test_kube_operator import set_pool, settle
from tests.unit.test_operator import lab_copy

NN = RESOURCES["NodeNetwork"]
ADV = RESOURCES["BGPAdvertisement"]
NOW = "2026-11-27T00:00:00Z"


def generations(api: FakeKubeAPI, kind: str, name: str) -> tuple[int, dict[str, int]]:
    """The object's metadata.generation, and each of its conditions' observedGeneration."""
    obj = api.get(RESOURCES[kind], name)
    conds = (obj.get("status") or {}).get("conditions") or []
    return obj["metadata"]["generation"], {c["type"]: c["observedGeneration"] for c in conds}


def test_node_network_conditions_follow_the_spec_writes_in_the_same_pass() -> None:
    """Created (generation 1), then its spec changed by the operator (a router ID from a
    new pool: generation 2): the conditions written in the same pass already say so, and
    the next pass has nothing to catch up (settle counts one writing pass)."""
    api = FakeKubeAPI()
    create_all(api, lab_docs())
    cache = ParseCache()
    op = KubeOperator(api, lambda: NOW)
    assert settle(api, op, cache) == 1
    assert generations(api, "NodeNetwork", "node-2") == (
        1, {"rackroute.io/PodCIDRAllocated": 1})
    set_pool(api, "10.255.0.0/24")
    assert settle(api, op, cache) == 1
    for node in ("node-1", "node-2", "node-3"):
        assert generations(api, "NodeNetwork", node) == (
            2, {"rackroute.io/PodCIDRAllocated": 2, "rackroute.io/BGPRouterIDAllocated": 2})


def test_a_node_network_edited_by_hand_gets_its_generation_back() -> None:
    """A spec edit the operator did not make and keeps (a router ID set by hand while no
    pool is set: generation 2) moves the conditions to that generation."""
    api = FakeKubeAPI()
    create_all(api, lab_docs())
    cache = ParseCache()
    op = KubeOperator(api, lambda: NOW)
    settle(api, op, cache)
    api.merge_patch(NN, "node-1", {"spec": {"bgpRouterID": "10.9.9.9"}})
    assert settle(api, op, cache) == 1
    assert generations(api, "NodeNetwork", "node-1") == (
        2, {"rackroute.io/PodCIDRAllocated": 2})


def test_a_fixed_manifest_is_valid_at_the_generation_that_fixed_it() -> None:
    api = FakeKubeAPI()
    create_all(api, lab_docs())
    api.create(ADV, {"metadata": {"name": "adv-x"},
                     "spec": {"advertisements": [{"advertisementType": "Nonsense"}]}})
    cache = ParseCache()
    op = KubeOperator(api, lambda: NOW)
    settle(api, op, cache)
    api.merge_patch(ADV, "adv-x", {"spec": {"advertisements": [
        {"advertisementType": "PodCIDR"}]}})
    settle(api, op, cache)
    assert generations(api, "BGPAdvertisement", "adv-x") == (2, {"Valid": 2})


def _conditions(body: Any) -> list[tuple[str, str, int]]:
    return [(c["type"], c["status"], c["observedGeneration"])
            for c in body["status"]["conditions"]]


def test_an_invalid_object_is_reported_at_the_generation_the_parser_refused() -> None:
    """Valid=False (a custom resource) and rackroute.io/Valid=False (a Service) carry the
    generation of the version that did not parse, as its source read it."""
    snap = Snapshot.build([], [
        ObjectError("LoadBalancerIPPool broken",
                    ("LoadBalancerIPPool broken: spec.blocks[0].cidr: bad",), 3),
        ObjectError("Service demo/typo",
                    ("Service demo/typo: metadata.annotations: bad",), 2),
    ])
    writes = {w.ref: w for w in planned_writes(snap, plan_allocations(snap), NOW)}
    assert _conditions(writes["LoadBalancerIPPool broken"].body) == [("Valid", "False", 3)]
    assert _conditions(writes["Service demo/typo"].body) == [
        ("rackroute.io/Valid", "False", 2)]
    doc = status_document(snap, plan_allocations(snap))  # the manifest directory's
    (valid,) = doc["objects"]["LoadBalancerIPPool broken"]["conditions"]
    assert (valid["type"], valid["observedGeneration"]) == ("Valid", 3)


def test_the_manifest_directorys_node_networks_carry_their_generation(
        tmp_path: Path) -> None:
    """Without an API server a NodeNetwork is the status file's entry, at generation 1
    (what its model carries) from the first pass on: the second pass rewrites nothing."""
    root = lab_copy(tmp_path)
    md, op = ManifestDir(root), Operator(root)
    assert op.reconcile(md.load()) is True
    doc = status_document(md.load(), plan_allocations(md.load()))
    assert {c["observedGeneration"] for n in doc["nodeNetworks"].values()
            for c in n["conditions"]} == {1}
    assert op.reconcile(md.load()) is False
    snap = Snapshot.build([NodeNetwork(Meta("NodeNetwork", "node-1", generation=7))])
    assert snap.generation("NodeNetwork node-1") == 7
    assert snap.generation("NodeNetwork node-2") == 0
    assert snap.generation("BGPAdvertisement node-1") == 0  # another kind of that name


def test_the_kube_source_reads_the_generation_of_what_does_not_parse(
        caplog: Any) -> None:
    """An object the parser refuses keeps its metadata.generation in the snapshot's error
    (the operator's Valid=False carries it), and is logged once per version, not once per
    snapshot."""
    import logging

    bad = {"apiVersion": "rackroute.io/v1alpha1", "kind": "LoadBalancerIPPool",
           "metadata": {"name": "broken", "generation": 7, "resourceVersion": "11"},
           "spec": {"blocks": [{"cidr": "not-a-cidr"}]}}
    cache = ParseCache()
    with caplog.at_level(logging.WARNING, logger="rackroute.kube"):
        snap = cache.snapshot([bad], 1)
        cache.snapshot([bad], 2)  # the same version again: not parsed, not logged again
    (err,) = snap.errors
    assert (err.ref, err.generation) == ("LoadBalancerIPPool broken", 7)
    assert len([r for r in caplog.records if "object_invalid" in r.getMessage()]) == 1
    writes = {w.ref: w for w in planned_writes(snap, plan_allocations(snap), NOW)}
    assert _conditions(writes["LoadBalancerIPPool broken"].body) == [("Valid", "False", 7)]
