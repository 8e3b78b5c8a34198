"""The operator with the kube source: allocations and conditions written to the API, a
stable second pass, no renumbering across restarts, bad input on its object, failures
retried without holding up the rest."""

from __future__ import annotations

from typing import Any

from controller.operator import KubeOperator
from controller.sources.kube import ParseCache
from controller.sources.kubeapi import RESOURCES, ApiError, Obj, Resource
from controller.sources.kubefake import FakeKubeAPI
from tests.unit.kube.cluster import create_all, lab_docs, snapshot

SVC = RESOURCES["Service"]
NN = RESOURCES["NodeNetwork"]
POOL = RESOURCES["LoadBalancerIPPool"]
NODE = RESOURCES["Node"]


def now() -> str:
    return "2026-11-27T00:00:00Z"


def settle(api: FakeKubeAPI, op: KubeOperator, cache: ParseCache, passes: int = 4) -> int:
    """Reconcile until a pass writes nothing; returns the passes that wrote."""
    for i in range(passes):
        if not op.reconcile(snapshot(api, cache, i + 1)):
            return i
    raise AssertionError(f"still writing after {passes} passes: {op.writer.failures}")


def ingress(api: FakeKubeAPI, key: str) -> list[str]:
    ns, name = key.split("/")
    st = api.get(SVC, name, ns).get("status") or {}
    return [i["ip"] for i in (st.get("loadBalancer") or {}).get("ingress") or []]


def lab() -> FakeKubeAPI:
    api = FakeKubeAPI()
    create_all(api, lab_docs())
    return api


def conditions(api: FakeKubeAPI, res: Resource, name: str, ns: str = "") -> dict[str, Any]:
    st = api.get(res, name, ns).get("status") or {}
    return {c["type"]: c for c in st.get("conditions") or []}


def test_allocations_and_conditions_land_on_their_objects() -> None:
    api = lab()
    op = KubeOperator(api, now)
    assert settle(api, op, ParseCache()) == 1
    assert ingress(api, "demo/web-local") == ["10.96.100.2", "fd00:96:100::2"]
    svc_cond = conditions(api, SVC, "web-local", "demo")["rackroute.io/IPAMRequestSatisfied"]
    assert (svc_cond["status"], svc_cond["reason"]) == ("True", "satisfied")
    assert svc_cond["lastTransitionTime"] == now()
    nn = api.get(NN, "node-2")
    assert nn["spec"]["podCIDRs"] == ["10.244.1.0/24", "fd00:244:0:1::/64"]
    assert nn["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rackroute-operator"
    assert {"IPsTotal", "IPsUsed"} <= set(
        conditions(api, POOL, "general"))


def test_a_second_pass_and_a_restart_write_no_allocation() -> None:
    api = lab()
    cache = ParseCache()
    settle(api, KubeOperator(api, now), cache)
    before = {k: ingress(api, k) for k in ("demo/web-local", "demo/web-cluster")}
    rv = api.get(SVC, "web-local", "demo")["metadata"]["resourceVersion"]
    nn_rv = api.get(NN, "node-1")["metadata"]["resourceVersion"]
    # a restarted operator reads allocations and conditions back from the objects: it
    # writes nothing at all
    calls = len(api.calls)
    restarted = KubeOperator(api, lambda: "2026-11-28T00:00:00Z")
    assert not restarted.reconcile(snapshot(api, cache, 10))
    assert [v for v, _ in api.calls[calls:]] == ["list"] * (len(api.calls) - calls)
    assert {k: ingress(api, k) for k in before} == before
    assert api.get(NN, "node-1")["metadata"]["resourceVersion"] == nn_rv
    assert api.get(SVC, "web-local", "demo")["metadata"]["resourceVersion"] == rv


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    api = lab()
    cache = ParseCache()
    settle(api, KubeOperator(api, now), cache)
    later = KubeOperator(api, lambda: "2026-11-29T00:00:00Z")
    # the pool's usage changes: its counters' messages change, their status does not
    api.delete(SVC, "web-cluster", "demo")
    settle(api, later, cache)
    used = conditions(api, POOL, "general")["IPsUsed"]
    assert used["lastTransitionTime"] == now()
    got = conditions(api, SVC, "web-local", "demo")["rackroute.io/IPAMRequestSatisfied"]
    assert got["status"] == "True" and got["lastTransitionTime"] == now()
    # its pool deleted, a service's condition turns False, with a new time
    api.delete(POOL, "general")
    settle(api, later, cache)
    got = conditions(api, SVC, "web-local", "demo")["rackroute.io/IPAMRequestSatisfied"]
    assert got["status"] == "False"
    assert got["lastTransitionTime"] == "2026-11-29T00:00:00Z"


def test_a_deleted_node_releases_its_node_network_and_foreign_ones_stay() -> None:
    api = lab()
    api.create(NN, {"metadata": {"name": "by-hand"}, "spec": {"podCIDRs": ["10.99.0.0/24"]}})
    cache = ParseCache()
    op = KubeOperator(api, now)
    settle(api, op, cache)
    api.delete(NODE, "node-3")
    settle(api, op, cache)
    names, _ = api.list(NN)
    assert sorted(n["metadata"]["name"] for n in names) == ["by-hand", "node-1", "node-2"]


def test_a_bad_pool_gets_valid_false_and_the_rest_is_allocated() -> None:
    api = lab()
    api.create(POOL, {"metadata": {"name": "broken"}, "spec": {"blocks": [{"cidr": "nope"}]}})
    settle(api, KubeOperator(api, now), ParseCache())
    valid = conditions(api, POOL, "broken")["Valid"]
    assert valid["status"] == "False" and "cidr" in valid["message"]
    assert ingress(api, "demo/web-local") == ["10.96.100.2", "fd00:96:100::2"]


class FailingPatches(FakeKubeAPI):
    """Status patches of the services named in `refuse` fail."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: set[str] = set()

    def merge_patch(self, res: Resource, name: str, patch: Obj, namespace: str = "",
                    sub: str = "") -> Obj:
        if res.kind == "Service" and name in self.refuse:
            raise ApiError(500, "InternalError", "etcdserver: request timed out")
        return super().merge_patch(res, name, patch, namespace, sub)


def test_a_failed_write_holds_up_nothing_else_and_is_retried() -> None:
    api = FailingPatches()
    create_all(api, lab_docs())
    api.refuse.add("web-local")
    cache = ParseCache()
    op = KubeOperator(api, now)
    op.reconcile(snapshot(api, cache, 1))
    assert op.pending
    assert "Service demo/web-local" in op.writer.failures
    assert ingress(api, "demo/web-local") == []
    assert ingress(api, "demo/web-cluster") != []
    assert api.get(NN, "node-1")["spec"]["podCIDRs"]
    api.refuse.clear()
    settle(api, op, cache)
    assert not op.pending
    assert ingress(api, "demo/web-local") == ["10.96.100.2", "fd00:96:100::2"]


EVENT = RESOURCES["Event"]


def events(api: FakeKubeAPI) -> list[tuple[str, str, str, str]]:
    """(type, reason, regarding kind, regarding name) of every event, in order."""
    items, _ = api.list(EVENT)
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["type"], e["reason"], e["regarding"]["kind"], e["regarding"]["name"])
            for e in items]


def test_what_the_operator_does_is_told_in_events_once() -> None:
    api = lab()
    api.create(POOL, {"metadata": {"name": "broken"}, "spec": {"blocks": [{"cidr": "nope"}]}})
    cache = ParseCache()
    op = KubeOperator(api, now)
    settle(api, op, cache)
    got = events(api)
    assert ("Normal", "IPAllocated", "Service", "web-local") in got
    assert ("Normal", "PodCIDRAllocated", "NodeNetwork", "node-2") in got
    assert ("Warning", "InvalidManifest", "LoadBalancerIPPool", "broken") in got
    items, _ = api.list(EVENT)
    web = next(e for e in items if e["regarding"]["name"] == "web-local")
    assert web["metadata"]["namespace"] == "demo"
    assert web["regarding"]["uid"] == api.get(SVC, "web-local", "demo")["metadata"]["uid"]
    assert "10.96.100.2" in web["note"]
    assert web["reportingController"] == "rackroute.io/operator"
    broken = next(e for e in items if e["regarding"]["name"] == "broken")
    assert broken["metadata"]["namespace"] == "default"  # cluster-scoped: in default
    assert "cidr" in broken["note"]
    # nothing new to say: no new events, even from a restarted operator
    settle(api, KubeOperator(api, now), cache)
    assert events(api) == got
    # a service left without an address says why
    api.delete(POOL, "general")
    settle(api, op, cache)
    new = events(api)[len(got):]
    assert sorted(new) == [("Warning", "NoPool", "Service", "web-cluster"),
                           ("Warning", "NoPool", "Service", "web-local")]  # from no_pool


ADV = RESOURCES["BGPAdvertisement"]
VALID = "rackroute.io/Valid"


def test_a_service_turned_malformed_keeps_its_address_and_says_why() -> None:
    """A typo in web-local's lbipam annotation: its last good version keeps its address,
    the Service carries rackroute.io/Valid=False naming the annotation (one Warning
    event), and another controller's condition on it stays; fixed, the condition goes.
    A new Service that never parsed gets the condition alone."""
    api = lab()
    cache = ParseCache()
    op = KubeOperator(api, now)
    settle(api, op, cache)
    api.merge_patch(SVC, "web-local", {"status": {"conditions": [
        {"type": "example.com/Probed", "status": "True", "reason": "Ok", "message": "",
         "lastTransitionTime": now()}]}}, "demo", "status")
    api.merge_patch(SVC, "web-local", {"metadata": {"annotations": {
        "lbipam.rackroute.io/ips": "10.96.100.x"}}}, "demo")
    settle(api, op, cache)
    assert ingress(api, "demo/web-local") == ["10.96.100.2", "fd00:96:100::2"]
    conds = conditions(api, SVC, "web-local", "demo")
    assert (conds[VALID]["status"], conds[VALID]["reason"]) == ("False", "InvalidManifest")
    assert "lbipam.rackroute.io/ips" in conds[VALID]["message"]
    assert conds["example.com/Probed"]["status"] == "True"
    assert conds["rackroute.io/IPAMRequestSatisfied"]["status"] == "True"
    warned = [e for e in events(api) if e[1] == "InvalidManifest" and e[3] == "web-local"]
    assert len(warned) == 1
    api.merge_patch(SVC, "web-local", {"metadata": {"annotations": {
        "lbipam.rackroute.io/ips": None}}}, "demo")
    settle(api, op, cache)
    conds = conditions(api, SVC, "web-local", "demo")
    assert VALID not in conds and "example.com/Probed" in conds
    assert ingress(api, "demo/web-local") == ["10.96.100.2", "fd00:96:100::2"]
    # never parsed: the condition alone, no address
    api.create(SVC, {"metadata": {"name": "typo", "namespace": "demo", "annotations": {
        "lbipam.rackroute.io/ips": "nope"}}, "spec": {
        "type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}}, "demo")
    settle(api, op, cache)
    assert conditions(api, SVC, "typo", "demo")[VALID]["status"] == "False"
    assert ingress(api, "demo/typo") == []


def test_the_crds_printer_columns_read_conditions_the_operator_writes() -> None:
    """Every `status.conditions[?(@.type=="X")]` column of a CRD names a condition the
    operator writes on the lab's objects of that kind (a renamed condition would leave
    `kubectl get` with an empty column)."""
    import re
    from pathlib import Path

    import yaml

    api = lab()
    settle(api, KubeOperator(api, now), ParseCache())
    crds = Path(__file__).resolve().parents[3] / "helm" / "rackroute" / "crds"
    checked = 0
    for f in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            for col in v.get("additionalPrinterColumns") or []:
                m = re.search(r'conditions\[\?\(@\.type=="([^"]+)"\)\]', col["jsonPath"])
                if m is None:
                    continue
                items, _ = api.list(RESOURCES[kind])
                assert items, kind
                for obj in items:
                    types = {c["type"] for c in (obj.get("status") or {}).get("conditions")
                             or []}
                    assert m.group(1) in types, (kind, obj["metadata"]["name"], col["name"])
                checked += 1
    assert checked >= 7


def test_a_fixed_manifest_loses_its_invalid_condition() -> None:
    """Valid=False on a BGPAdvertisement the parser refused; once fixed, Valid=True in
    its place (not the old complaint for good), and then nothing more is written."""
    api = lab()
    bad = {"metadata": {"name": "adv-x", "labels": {"advertise": "x"}},
           "spec": {"advertisements": [{"advertisementType": "Nonsense"}]}}
    api.create(ADV, bad)
    cache = ParseCache()
    op = KubeOperator(api, now)
    settle(api, op, cache)
    valid = conditions(api, ADV, "adv-x")["Valid"]
    assert (valid["status"], valid["reason"]) == ("False", "InvalidManifest")
    assert "advertisementType" in valid["message"]
    api.merge_patch(ADV, "adv-x", {"spec": {"advertisements": [
        {"advertisementType": "PodCIDR"}]}})
    settle(api, op, cache)
    assert {k: (c["status"], c["reason"]) for k, c in conditions(api, ADV, "adv-x").items()} \
        == {"Valid": ("True", "Accepted")}


# ------------------------------------------------------------------ BGP router IDs

CONFIG = RESOURCES["RackrouteConfig"]
RID = "rackroute.io/BGPRouterIDAllocated"


def set_pool(api: FakeKubeAPI, pool: str | None) -> None:
    api.merge_patch(CONFIG, "default", {"spec": {"bgpRouterIDPool": pool}})


def router_ids(api: FakeKubeAPI) -> dict[str, str | None]:
    items, _ = api.list(NN)
    return {n["metadata"]["name"]: n["spec"].get("bgpRouterID") for n in items}


def test_router_ids_from_the_pool_are_stable_and_freed_with_their_node() -> None:
    api = lab()
    set_pool(api, "10.255.0.0/24")
    cache = ParseCache()
    op = KubeOperator(api, now)
    assert settle(api, op, cache) == 1
    assert router_ids(api) == {"node-1": "10.255.0.1", "node-2": "10.255.0.2",
                               "node-3": "10.255.0.3"}
    cond = conditions(api, NN, "node-2")[RID]
    assert (cond["status"], cond["reason"]) == ("True", "Allocated")
    assert "rackroute.io/PodCIDRAllocated" in conditions(api, NN, "node-2")
    items, _ = api.list(EVENT)
    note = next(e["note"] for e in items if e["regarding"]["name"] == "node-2")
    assert note == "node node-2: 10.244.1.0/24, fd00:244:0:1::/64; BGP router ID 10.255.0.2"
    # a restarted operator reads them back from the NodeNetworks: no write at all
    calls = len(api.calls)
    assert not KubeOperator(api, now).reconcile(snapshot(api, cache, 10))
    assert {v for v, _ in api.calls[calls:]} == {"list"}
    # a node deleted frees its address; a new one takes the lowest free, the others stay
    api.delete(NODE, "node-1")
    api.create(NODE, {"metadata": {"name": "node-4"}})
    settle(api, op, cache)
    assert router_ids(api) == {"node-2": "10.255.0.2", "node-3": "10.255.0.3",
                               "node-4": "10.255.0.1"}


def test_a_full_pool_says_which_node_waits_and_a_pool_edit_moves_only_what_fell_out() -> None:
    api = lab()
    set_pool(api, "10.255.0.0/30")
    cache = ParseCache()
    op = KubeOperator(api, now)
    settle(api, op, cache)
    assert router_ids(api) == {"node-1": "10.255.0.1", "node-2": "10.255.0.2", "node-3": None}
    cond = conditions(api, NN, "node-3")[RID]
    assert (cond["status"], cond["reason"]) == ("False", "PoolExhausted")
    assert cond["message"] == ("Node node-3: no free router ID left in 10.255.0.0/30 "
                               "(RackrouteConfig default: spec.bgpRouterIDPool)")
    assert api.get(NN, "node-3")["spec"]["podCIDRs"][0] == "10.244.2.0/24"  # not held up
    # a larger pool: node-3 gets one, told in an event; the others keep theirs
    before = len(events(api))
    set_pool(api, "10.255.0.0/29")
    settle(api, op, cache)
    assert router_ids(api) == {"node-1": "10.255.0.1", "node-2": "10.255.0.2",
                               "node-3": "10.255.0.3"}
    assert events(api)[before:] == [("Normal", "BGPRouterIDAllocated", "NodeNetwork", "node-3")]
    items, _ = api.list(EVENT)
    latest = max(items, key=lambda e: int(e["metadata"]["resourceVersion"]))
    assert latest["note"] == "node node-3: BGP router ID 10.255.0.3"
    assert conditions(api, NN, "node-3")[RID]["status"] == "True"
    # shrunk to a /31 (one address to give, .1): node-2's falls outside, only it moves
    set_pool(api, "10.255.0.0/31")
    settle(api, op, cache)
    assert router_ids(api) == {"node-1": "10.255.0.1", "node-2": None, "node-3": None}
    set_pool(api, "10.255.0.0/30")
    settle(api, op, cache)
    assert router_ids(api) == {"node-1": "10.255.0.1", "node-2": "10.255.0.2", "node-3": None}
    # the pool removed: the recorded router IDs stay, the condition goes
    set_pool(api, None)
    settle(api, op, cache)
    assert router_ids(api) == {"node-1": "10.255.0.1", "node-2": "10.255.0.2", "node-3": None}
    assert RID not in conditions(api, NN, "node-1")


def test_a_bad_pool_is_reported_on_its_object_and_takes_no_router_id_away() -> None:
    api = lab()
    set_pool(api, "10.255.0.0/24")
    cache = ParseCache()
    op = KubeOperator(api, now)
    settle(api, op, cache)
    before = router_ids(api)
    set_pool(api, "fd00:255::/64")
    settle(api, op, cache)
    valid = conditions(api, CONFIG, "default")["Valid"]
    assert valid["status"] == "False"
    assert ("RackrouteConfig default: spec.bgpRouterIDPool: must be an IPv4 CIDR, got "
            "fd00:255::/64 (keeping the last good version)") in valid["message"]
    assert router_ids(api) == before
    assert {n: [str(c) for c in nn.pod_cidrs]
            for n, nn in snapshot(api, cache, 20).node_networks.items()} == {
        "node-1": ["10.244.0.0/24", "fd00:244::/64"],
        "node-2": ["10.244.1.0/24", "fd00:244:0:1::/64"],
        "node-3": ["10.244.2.0/24", "fd00:244:0:2::/64"]}
