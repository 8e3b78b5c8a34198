"""The in-memory KubeAPI passes the contract the real API server passes (tests/kube)."""

from __future__ import annotations

from controller.sources.kubefake import FakeKubeAPI, merge
from tests.unit.kube import kubeapi_contract as c


def fake() -> FakeKubeAPI:
    return FakeKubeAPI(installed={"Service", "LoadBalancerIPPool"})


def test_create_get_list_delete() -> None:
    c.check_create_get_list_delete(fake(), "default", "rr-")


def test_status_is_a_subresource() -> None:
    c.check_status_is_a_subresource(fake(), "default", "rr-")


def test_watch_follows_changes() -> None:
    c.check_watch_follows_changes(fake(), "default", "rr-")


def test_watch_close_ends_iteration() -> None:
    c.check_watch_close_ends_iteration(fake(), "default")


def test_stale_resource_version_is_gone() -> None:
    api = fake()
    _, rv = api.list(c.SVC, "default")
    api.create(c.SVC, c.service("x"), "default")

    def stale() -> str:
        api.compact()
        return rv

    c.check_stale_resource_version_is_gone(api, "default", stale)


def test_cluster_scoped_custom_resource() -> None:
    c.check_cluster_scoped_custom_resource(fake(), "rr-")


def test_a_resource_not_served_is_404() -> None:
    c.check_a_resource_not_served_is_404(fake())


def test_merge_patch_follows_rfc_7386() -> None:
    # the RFC's own example
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    patch = {"a": "z", "c": {"f": None}}
    assert merge(target, patch) == {"a": "z", "c": {"d": "e"}}
    assert merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge({"a": 1}, {"b": {"c": None}}) == {"a": 1, "b": {}}


def test_a_stale_resource_version_in_a_patch_conflicts() -> None:
    c.check_a_stale_resource_version_in_a_patch_conflicts(fake(), "default", "rr-")
