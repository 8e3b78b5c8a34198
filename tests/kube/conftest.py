"""A real kube-apiserver per test module, with rackroute's CRDs installed from the chart,
and a way to load manifests into it as kubectl would (status through its subresource)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.sources.kubeapi import (
    RESOURCES,
    ApiError,
    HTTPKubeAPI,
    KubeAPI,
    Resource,
    from_kubeconfig,
)
from tests.kube.apiserver import REPO, ApiServer, available, running_apiserver

CRDS = REPO / "helm" / "rackroute" / "crds"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
NAMESPACE = Resource("Namespace", "v1", "namespaces", False)


def install_crds(api: ApiServer, timeout: float = 30.0) -> list[str]:
    """Create every CRD of the chart and wait until each is Established."""
    return create_crds(api, [yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.yaml"))],
                       timeout)


def cilium_crd(kind: str, versions: tuple[str, ...] = ("v2",)) -> dict[str, Any]:
    """A minimal cluster-scoped cilium.io CRD (any spec; a status subresource, so that a
    status write would show) served at `versions`, the first the storage version."""
    plural = kind.lower() + "s"
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.cilium.io"},
            "spec": {"group": "cilium.io", "scope": "Cluster",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                               "listKind": f"{kind}List"},
                     "versions": [{"name": v, "served": True, "storage": i == 0,
                                   "schema": schema, "subresources": {"status": {}}}
                                  for i, v in enumerate(versions)]}}


def create_crds(api: ApiServer, crds: list[dict[str, Any]], timeout: float = 30.0
                ) -> list[str]:
    """Create the CRDs and wait until each is Established."""
    names = []
    for crd in crds:
        api.request("POST", CRD_PATH, crd)
        names.append(str(crd["metadata"]["name"]))
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            got = api.request("GET", f"{CRD_PATH}/{name}")
            conds = {c["type"]: c["status"] for c in got.get("status", {}).get("conditions", [])}
            if conds.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"CRD {name} not Established: {conds}")
            time.sleep(0.1)
    return names


def _serve(tmp: Path) -> Iterator[ApiServer]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with running_apiserver(tmp) as api:
        install_crds(api)
        yield api


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One server for a module's tests (they leave it as they found it)."""
    yield from _serve(Path(tmp_path_factory.mktemp("apiserver")))


@pytest.fixture
def fresh_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server of the test's own (about 4 s to start), for tests that fill the cluster."""
    yield from _serve(Path(tmp_path_factory.mktemp("apiserver")))


def apply(api: KubeAPI, docs: list[dict[str, Any]]) -> None:
    """Create namespaces as needed, then each document; a document's status is written
    through the status subresource, as a controller would."""
    made: set[str] = set()
    for d in docs:
        if d["kind"] == "Namespace" and d["metadata"]["name"] in made:
            # made already for an object in it: give it the document's labels
            api.merge_patch(NAMESPACE, str(d["metadata"]["name"]),
                            {"metadata": {"labels": d["metadata"].get("labels") or {}}})
            continue
        if d["kind"] == "Namespace":
            made.add(str(d["metadata"]["name"]))
        ns = str(d["metadata"].get("namespace") or "")
        if ns and ns not in made:
            try:
                api.create(NAMESPACE, {"metadata": {"name": ns}})
            except ApiError as e:
                if e.status != 409:
                    raise
            made.add(ns)
        res = RESOURCES[str(d["kind"])]
        # the server sets these (creation order then stands for creationTimestamp)
        meta = {k: v for k, v in d["metadata"].items()
                if k not in ("creationTimestamp", "resourceVersion", "uid")}
        api.create(res, dict(d, metadata=meta), ns)
        if d.get("status"):
            api.merge_patch(res, str(d["metadata"]["name"]), {"status": d["status"]}, ns,
                            sub="status")


@contextmanager
def client(api: ApiServer) -> Iterator[HTTPKubeAPI]:
    """rackroute's own client, through the server's kubeconfig."""
    c = HTTPKubeAPI(from_kubeconfig(api.kubeconfig))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def kube(apiserver: ApiServer) -> Iterator[HTTPKubeAPI]:
    with client(apiserver) as c:
        yield c
