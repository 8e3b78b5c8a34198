"""The kube source over the in-memory API: first lists before any snapshot, changes
followed, relists after 410, missing CRDs, failures retried, bad objects reported."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from controller.sources.kube import AGENT_KINDS, Backoff, KubeSource
from controller.sources.kubeapi import RESOURCES, ApiError, Obj, Resource
from controller.sources.kubefake import FakeKubeAPI
from controller.store import Snapshot, Store
from tests.unit.kube.kubeapi_contract import pool, service

POOL = RESOURCES["LoadBalancerIPPool"]
SVC = RESOURCES["Service"]
SECRET = RESOURCES["Secret"]
FAST = Backoff(first=0.01, cap=0.05, missing=0.05)


class Flaky(FakeKubeAPI):
    """The fake, with lists of chosen kinds failing while `failing` holds them."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.failing: set[str] = set()

    def list(self, res: Resource, namespace: str = "") -> tuple[list[Obj], str]:
        if res.kind in self.failing:
            raise ApiError(503, "ServiceUnavailable", "etcd is down")
        return super().list(res, namespace)


@contextmanager
def running(api: FakeKubeAPI, **kw: Any) -> Iterator[tuple[KubeSource, Store]]:
    store = Store()
    src = KubeSource(api, store, backoff=FAST, settle=0.005, **kw)
    stop = threading.Event()
    assert src.poll(timeout=2.0) or kw.get("expect_unsynced")
    t = threading.Thread(target=src.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield src, store
    finally:
        stop.set()
        t.join(timeout=3)
        assert not t.is_alive()


def until(store: Store, pred: Callable[[Snapshot], bool], timeout: float = 3.0) -> Snapshot:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = store.snapshot()
        if pred(snap):
            return snap
        store.wait(0.05)
    raise AssertionError(f"not reached; last snapshot: pools={list(store.snapshot().pools)} "
                         f"services={list(store.snapshot().services)} "
                         f"errors={store.snapshot().errors}")


def test_first_snapshot_holds_every_kind() -> None:
    api = FakeKubeAPI()
    api.create(POOL, pool("p1", "192.0.2.0/28"))
    api.create(SVC, service("web"), "default")
    with running(api) as (_, store):
        snap = store.snapshot()
        assert set(snap.pools) == {"p1"}
        assert set(snap.services) == {"default/web"}
        assert snap.errors == ()


def test_changes_are_followed() -> None:
    api = FakeKubeAPI()
    with running(api) as (_, store):
        api.create(POOL, pool("p1", "192.0.2.0/28"))
        until(store, lambda s: "p1" in s.pools)
        api.merge_patch(POOL, "p1", {"spec": {"blocks": [{"cidr": "192.0.2.64/28"}]}})
        until(store, lambda s: "p1" in s.pools
              and str(s.pools["p1"].blocks[0].cidr) == "192.0.2.64/28")
        api.delete(POOL, "p1")
        until(store, lambda s: not s.pools)


def test_nothing_is_published_until_every_kind_has_listed() -> None:
    api = Flaky()
    api.create(POOL, pool("p1", "192.0.2.0/28"))
    api.failing.add("Service")
    store = Store()
    src = KubeSource(api, store, backoff=FAST, settle=0.005)
    stop = threading.Event()
    try:
        assert not src.poll(timeout=0.3)
        t = threading.Thread(target=src.run, args=(stop,), daemon=True)
        t.start()
        time.sleep(0.2)
        assert store.snapshot().revision == 0  # an empty cluster was never published
        assert "etcd is down" in src.problems()["Service"]
        api.failing.clear()
        snap = until(store, lambda s: "p1" in s.pools)
        assert snap.revision > 0
    finally:
        stop.set()
        src.close()


def test_a_missing_custom_resource_counts_as_empty_and_is_found_later() -> None:
    api = FakeKubeAPI(installed=set(AGENT_KINDS) - {"BGPAdvertisement"})
    api.create(POOL, pool("p1", "192.0.2.0/28"))
    with running(api) as (src, store):
        assert "p1" in store.snapshot().pools
        assert "not served" in src.problems()["BGPAdvertisement"]
        api.installed = None  # the CRD is installed now
        api.create(RESOURCES["BGPAdvertisement"],
                   {"metadata": {"name": "a"},
                    "spec": {"advertisements": [{"advertisementType": "PodCIDR"}]}})
        until(store, lambda s: "a" in s.advertisements)
        assert "BGPAdvertisement" not in src.problems()


def test_a_gone_resource_version_relists_and_converges() -> None:
    api = FakeKubeAPI()
    for i in range(3):
        api.create(POOL, pool(f"p{i}", f"192.0.2.{16 * i}/28"))
    with running(api) as (src, store):
        until(store, lambda s: len(s.pools) == 3)
        api.compact()  # the watchers' resourceVersion is gone now
        api.delete(POOL, "p0")
        api.create(POOL, pool("p9", "192.0.2.128/28"))
        until(store, lambda s: set(s.pools) == {"p1", "p2", "p9"})
        api.merge_patch(POOL, "p1", {"metadata": {"labels": {"x": "y"}}})
        until(store, lambda s: s.pools["p1"].meta.labels.get("x") == "y")
        assert not src.problems()  # a relist is routine, not an error


def test_a_failing_watch_keeps_the_objects_and_recovers() -> None:
    api = Flaky()
    api.create(POOL, pool("p1", "192.0.2.0/28"))
    with running(api) as (_, store):
        api.failing.add("LoadBalancerIPPool")
        api.compact()  # the watch ends with 410; the relist fails for a while
        time.sleep(0.2)
        assert "p1" in store.snapshot().pools  # nothing lost meanwhile
        api.create(POOL, pool("p2", "192.0.2.16/28"))
        api.failing.clear()
        until(store, lambda s: set(s.pools) == {"p1", "p2"})


def test_a_bad_object_is_reported_by_name_and_field_and_keeps_its_last_good_version() -> None:
    api = FakeKubeAPI()
    api.create(POOL, pool("good", "192.0.2.0/28"))
    api.create(POOL, pool("other", "192.0.2.16/28"))
    api.create(POOL, pool("bad", "not-a-cidr"))
    with running(api) as (_, store):
        snap = store.snapshot()
        assert set(snap.pools) == {"good", "other"}
        [err] = snap.errors
        assert "LoadBalancerIPPool bad" in err.ref
        assert "cidr" in err.messages[0] and "not-a-cidr" in err.messages[0]
        # a good object turning bad keeps its last good version, and says so
        api.merge_patch(POOL, "good", {"spec": {"blocks": [{"cidr": "300.0.0.0/8"}]}})
        snap = until(store, lambda s: len(s.errors) == 2)
        assert str(snap.pools["good"].blocks[0].cidr) == "192.0.2.0/28"
        assert any("keeping the last good version" in m
                   for e in snap.errors for m in e.messages if "good" in e.ref)
        assert set(snap.pools) == {"good", "other"}


def test_secrets_are_read_in_their_namespace_alone() -> None:
    api = FakeKubeAPI()
    for ns in ("kube-system", "default"):
        api.create(SECRET, {"metadata": {"name": "bgp"}, "data": {"password": "cGFzcw=="}}, ns)
    with running(api, secrets_namespace="kube-system") as (_, store):
        assert set(store.snapshot().secrets) == {"kube-system/bgp"}
    assert ("list", SECRET.path("kube-system")) in api.calls
    assert ("list", SECRET.path("")) not in api.calls


def test_unchanged_objects_keep_their_identity_between_snapshots() -> None:
    api = FakeKubeAPI()
    api.create(POOL, pool("p1", "192.0.2.0/28"))
    with running(api) as (_, store):
        before = store.snapshot().pools["p1"]
        api.create(SVC, service("web"), "default")
        snap = until(store, lambda s: "default/web" in s.services)
        assert snap.pools["p1"] is before  # parsed once per resourceVersion


def test_the_cache_keeps_parsed_objects_without_kubectls_last_applied_copy() -> None:
    api = FakeKubeAPI()
    svc = service("web")
    svc["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    svc["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 4096 + "}",
        "rackroute.io/lb-ipam-ips": "192.0.2.7"}
    api.create(SVC, svc, "default")
    with running(api) as (src, store):
        entry = next(r for r in src.reflectors if r.res.kind == "Service").objects["default/web"]
        assert entry.good is store.snapshot().services["default/web"]  # no raw copy kept
        assert store.snapshot().services["default/web"].meta.annotations == {
            "rackroute.io/lb-ipam-ips": "192.0.2.7"}


def test_the_metrics_say_what_each_resource_is_doing() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from controller.metrics import KubeSourceCollector

    api = Flaky(installed=set(AGENT_KINDS) - {"BGPAdvertisement"})
    api.create(POOL, pool("p1", "192.0.2.0/28"))
    api.create(POOL, pool("p2", "192.0.2.16/28"))
    with running(api) as (src, _):
        reg = CollectorRegistry()
        reg.register(KubeSourceCollector("n1", lambda: src.reflectors))
        api.failing.add("LoadBalancerIPPool")
        api.compact()  # the pools' watch ends; their list now fails
        text = ""
        for _ in range(100):  # until the relist has failed once
            text = generate_latest(reg).decode()
            if 'rackroute_kube_error{kind="LoadBalancerIPPool",node="n1"} 1.0' in text:
                break
            time.sleep(0.02)
        assert 'rackroute_kube_error{kind="LoadBalancerIPPool",node="n1"} 1.0' in text
        assert 'rackroute_kube_objects{kind="LoadBalancerIPPool",node="n1"} 2.0' in text
        assert 'rackroute_kube_resource_served{kind="BGPAdvertisement",node="n1"} 0.0' in text
        assert 'rackroute_kube_synced{kind="Service",node="n1"} 1.0' in text
        assert 'rackroute_kube_error{kind="Service",node="n1"} 0.0' in text
