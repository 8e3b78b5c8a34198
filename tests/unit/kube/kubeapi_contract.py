"""The KubeAPI contract: run against the fake (unit) and a real kube-apiserver (tests/kube).

Each check takes the port, a namespace that exists, and a prefix for the names it makes,
and removes what it made."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from controller.sources.kubeapi import RESOURCES, ApiError, Gone, KubeAPI, Resource, WatchEvent

SVC = RESOURCES["Service"]
POOL = RESOURCES["LoadBalancerIPPool"]
NOT_SERVED = Resource("Widget", "nothere.rackroute.io/v1", "widgets", False)


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}}


def pool(name: str, cidr: str) -> dict[str, Any]:
    return {"apiVersion": "rackroute.io/v1alpha1", "kind": "LoadBalancerIPPool",
            "metadata": {"name": name}, "spec": {"blocks": [{"cidr": cidr}]}}


def _names(items: list[dict[str, Any]], prefix: str) -> list[str]:
    return sorted(str(i["metadata"]["name"]) for i in items
                  if str(i["metadata"]["name"]).startswith(prefix))


def check_create_get_list_delete(api: KubeAPI, ns: str, prefix: str) -> None:
    made = api.create(SVC, service(f"{prefix}a"), ns)
    assert made["metadata"]["resourceVersion"] and made["metadata"]["uid"]
    assert made["metadata"]["namespace"] == ns
    try:
        with pytest.raises(ApiError) as e:
            api.create(SVC, service(f"{prefix}a"), ns)
        assert e.value.status == 409
        got = api.get(SVC, f"{prefix}a", ns)
        assert got["metadata"]["uid"] == made["metadata"]["uid"]
        items, rv = api.list(SVC, ns)
        assert rv
        assert _names(items, prefix) == [f"{prefix}a"]
        # every listed item names its kind and version (typed lists leave them off)
        mine = [i for i in items if i["metadata"]["name"] == f"{prefix}a"][0]
        assert (mine["kind"], mine["apiVersion"]) == ("Service", "v1")
        everywhere, _ = api.list(SVC)
        assert f"{prefix}a" in _names(everywhere, prefix)
    finally:
        api.delete(SVC, f"{prefix}a", ns)
    with pytest.raises(ApiError) as e:
        api.get(SVC, f"{prefix}a", ns)
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        api.delete(SVC, f"{prefix}a", ns)
    assert e.value.status == 404


def check_status_is_a_subresource(api: KubeAPI, ns: str, prefix: str) -> None:
    name = f"{prefix}st"
    api.create(SVC, service(name), ns)
    try:
        ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}
        # through the main resource, status is ignored
        api.merge_patch(SVC, name, ingress, ns)
        assert not (api.get(SVC, name, ns).get("status") or {}).get("loadBalancer", {}).get(
            "ingress")
        out = api.merge_patch(SVC, name, ingress, ns, sub="status")
        # (the real server adds ipMode: VIP)
        assert [i["ip"] for i in out["status"]["loadBalancer"]["ingress"]] == ["192.0.2.10"]
        # the status subresource leaves the spec alone
        api.merge_patch(SVC, name, {"spec": {"ports": [{"port": 81, "protocol": "TCP"}]}},
                        ns, sub="status")
        assert api.get(SVC, name, ns)["spec"]["ports"][0]["port"] == 80
        # a merge patch with null removes a key
        out = api.merge_patch(SVC, name, {"status": {"loadBalancer": {"ingress": None}}}, ns,
                              sub="status")
        assert not (out.get("status") or {}).get("loadBalancer", {}).get("ingress")
    finally:
        api.delete(SVC, name, ns)
    with pytest.raises(ApiError) as e:
        api.merge_patch(SVC, name, {"metadata": {"labels": {"a": "b"}}}, ns)
    assert e.value.status == 404


def _collect(w: Any, out: list[WatchEvent], until: Callable[[list[WatchEvent]], bool]) -> None:
    for ev in w:
        if ev.type != "BOOKMARK":
            out.append(ev)
        if until(out):
            w.close()
            return


def check_watch_follows_changes(api: KubeAPI, ns: str, prefix: str) -> None:
    _, rv = api.list(SVC, ns)
    w = api.watch(SVC, rv, ns, timeout=20)
    events: list[WatchEvent] = []
    mine = f"{prefix}w"

    def done(evs: list[WatchEvent]) -> bool:
        return any(e.type == "DELETED" and e.obj["metadata"]["name"] == mine for e in evs)

    t = threading.Thread(target=_collect, args=(w, events, done), daemon=True)
    t.start()
    made = api.create(SVC, service(mine), ns)
    patched = api.merge_patch(SVC, mine, {"metadata": {"labels": {"rr": "1"}}}, ns)
    assert int(patched["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])
    # a patch that changes nothing writes nothing
    same = api.merge_patch(SVC, mine, {"metadata": {"labels": {"rr": "1"}}}, ns)
    assert same["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    api.delete(SVC, mine, ns)
    t.join(timeout=15)
    assert not t.is_alive(), f"watch saw only {[(e.type) for e in events]}"
    seen = [(e.type, e.obj["metadata"].get("labels", {}).get("rr"))
            for e in events if e.obj["metadata"]["name"] == mine]
    assert seen == [("ADDED", None), ("MODIFIED", "1"), ("DELETED", "1")]
    assert all(e.obj.get("kind") in (None, "Service") for e in events)


def check_watch_close_ends_iteration(api: KubeAPI, ns: str) -> None:
    _, rv = api.list(SVC, ns)
    w = api.watch(SVC, rv, ns, timeout=60)
    got: list[WatchEvent] = []
    t = threading.Thread(target=lambda: got.extend(w), daemon=True)
    t.start()
    t.join(timeout=0.3)
    assert t.is_alive()  # nothing happens: the watch waits
    w.close()
    t.join(timeout=5)
    assert not t.is_alive()


def check_stale_resource_version_is_gone(api: KubeAPI, ns: str,
                                         stale: Callable[[], str]) -> None:
    rv = stale()
    with pytest.raises(Gone):
        w = api.watch(SVC, rv, ns, timeout=5)
        list(w)


def check_cluster_scoped_custom_resource(api: KubeAPI, prefix: str) -> None:
    name = f"{prefix}pool"
    bare = pool(name, "192.0.2.0/28")
    del bare["kind"], bare["apiVersion"]  # the resource names them
    made = api.create(POOL, bare)
    try:
        assert made["kind"] == "LoadBalancerIPPool"
        items, _ = api.list(POOL)
        assert name in _names(items, prefix)
        cond = {"type": "Ready", "status": "True", "reason": "Ok", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}
        out = api.merge_patch(POOL, name, {"status": {"conditions": [cond]}}, sub="status")
        assert out["status"]["conditions"][0]["type"] == "Ready"
        out = api.merge_patch(POOL, name, {"spec": {"blocks": [{"cidr": "192.0.2.16/28"}]}})
        assert out["spec"]["blocks"] == [{"cidr": "192.0.2.16/28"}]
        assert out["status"]["conditions"][0]["type"] == "Ready"
    finally:
        api.delete(POOL, name)


def check_a_resource_not_served_is_404(api: KubeAPI) -> None:
    with pytest.raises(ApiError) as e:
        api.list(NOT_SERVED)
    assert e.value.status == 404


def check_a_stale_resource_version_in_a_patch_conflicts(api: KubeAPI, ns: str,
                                                         prefix: str) -> None:
    name = f"{prefix}rv"
    made = api.create(SVC, service(name), ns)
    try:
        rv = made["metadata"]["resourceVersion"]
        api.merge_patch(SVC, name, {"metadata": {"resourceVersion": rv, "labels": {"a": "1"}}},
                        ns)
        with pytest.raises(ApiError) as e:
            api.merge_patch(SVC, name, {"metadata": {"resourceVersion": rv,
                                                     "labels": {"a": "2"}}}, ns)
        assert e.value.status == 409
        assert api.get(SVC, name, ns)["metadata"]["labels"] == {"a": "1"}
    finally:
        api.delete(SVC, name, ns)
