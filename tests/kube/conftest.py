"""A real kube-apiserver for the session, with rackroute's CRDs installed from the chart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.sources.kubeapi import HTTPKubeAPI, from_kubeconfig
from tests.kube.apiserver import REPO, ApiServer, available, running_apiserver

CRDS = REPO / "helm" / "rackroute" / "crds"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def install_crds(api: ApiServer, timeout: float = 30.0) -> list[str]:
    """Create every CRD of the chart and wait until each is Established."""
    names = []
    for p in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(p.read_text())
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


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with running_apiserver(Path(tmp_path_factory.mktemp("apiserver"))) as api:
        install_crds(api)
        yield api


@pytest.fixture
def kube(apiserver: ApiServer) -> Iterator[HTTPKubeAPI]:
    """rackroute's own client, through the server's kubeconfig."""
    client = HTTPKubeAPI(from_kubeconfig(apiserver.kubeconfig))
    yield client
    client.close()
