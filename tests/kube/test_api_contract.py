"""The KubeAPI contract against a real kube-apiserver (the fake passes the same checks:
tests/unit/kube/test_fake_api.py), with the chart's CRDs installed."""

from __future__ import annotations

import itertools
import time

from controller.sources.kubeapi import HTTPKubeAPI
from tests.unit.kube import kubeapi_contract as c

_n = itertools.count()


def prefix() -> str:
    return f"rr{next(_n)}-"


def test_create_get_list_delete(kube: HTTPKubeAPI) -> None:
    c.check_create_get_list_delete(kube, "default", prefix())


def test_status_is_a_subresource(kube: HTTPKubeAPI) -> None:
    c.check_status_is_a_subresource(kube, "default", prefix())


def test_watch_follows_changes(kube: HTTPKubeAPI) -> None:
    c.check_watch_follows_changes(kube, "default", prefix())


def test_watch_close_ends_iteration(kube: HTTPKubeAPI) -> None:
    c.check_watch_close_ends_iteration(kube, "default")


def test_stale_resource_version_is_gone(kube: HTTPKubeAPI) -> None:
    # the test server compacts etcd every 2 s: after a write and a compaction, a
    # resourceVersion from before them is gone
    _, rv = kube.list(c.SVC, "default")

    def stale() -> str:
        kube.create(c.SVC, c.service("rr-stale"), "default")
        kube.delete(c.SVC, "rr-stale", "default")
        time.sleep(4.5)
        return rv

    c.check_stale_resource_version_is_gone(kube, "default", stale)


def test_cluster_scoped_custom_resource(kube: HTTPKubeAPI) -> None:
    c.check_cluster_scoped_custom_resource(kube, prefix())


def test_a_resource_not_served_is_404(kube: HTTPKubeAPI) -> None:
    c.check_a_resource_not_served_is_404(kube)


def test_a_stale_resource_version_in_a_patch_conflicts(kube: HTTPKubeAPI) -> None:
    c.check_a_stale_resource_version_in_a_patch_conflicts(kube, "default", prefix())
