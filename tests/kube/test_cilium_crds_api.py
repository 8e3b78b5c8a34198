"""`rackroute operator --watch-cilium-crds` against a real kube-apiserver with minimal
cilium.io CRDs: a LoadBalancer Service gets its address from a CiliumLoadBalancerIPPool,
a CiliumBGPClusterConfig served at v2alpha1 alone is read there, the Cilium kinds whose
CRDs are missing (404) change nothing, and a Cilium object that a rackroute object of the
same kind and name shadows is told in a Warning Event. The operator writes nothing to any
cilium.io object."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.lab.netns import wait_for
from controller.sources.kubeapi import RESOURCES, HTTPKubeAPI, Obj
from tests.kube.apiserver import ApiServer
from tests.kube.conftest import cilium_crd, client, create_crds
from tests.kube.test_operator_api import Operator, ingress
from tests.unit.kube.kubeapi_contract import service

C_POOL = RESOURCES["CiliumLoadBalancerIPPool"]
C_CC = RESOURCES["CiliumBGPClusterConfig"]
CC = RESOURCES["BGPClusterConfig"]
EVENT = RESOURCES["Event"]
POOL_CIDR = "192.0.2.0/28"


def cluster_config(name: str, **selector: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"bgpInstances": [{"name": "tor", "localASN": 65011}]}
    if selector:
        spec["nodeSelector"] = {"matchLabels": selector}
    return {"metadata": {"name": name}, "spec": spec}


def cilium_objects(kube: HTTPKubeAPI) -> dict[str, Obj]:
    """Every cilium.io object, as the server holds it (read at the version it serves)."""
    out = {}
    for res in (C_POOL, C_CC.versions()[1]):
        for o in kube.list(res)[0]:
            out[f"{res.kind} {o['metadata']['name']}"] = o
    return out


@pytest.fixture
def kube(fresh_apiserver: ApiServer) -> Iterator[HTTPKubeAPI]:
    """The pool's CRD at v2, the cluster config's at v2alpha1 alone, the other three not
    installed; a Cilium pool, a Service, a rackroute and a Cilium cluster config of one
    name, and a Cilium cluster config selecting no node."""
    create_crds(fresh_apiserver, [cilium_crd("CiliumLoadBalancerIPPool"),
                                  cilium_crd("CiliumBGPClusterConfig", ("v2alpha1",))])
    with client(fresh_apiserver) as c:
        c.create(RESOURCES["Node"], {"metadata": {"name": "n1"}})
        c.create(C_POOL, {"metadata": {"name": "cil"},
                          "spec": {"blocks": [{"cidr": POOL_CIDR}]}})
        c.create(C_CC.versions()[1], cluster_config("tor"))
        c.create(C_CC.versions()[1], cluster_config("cil-only", rack="none"))
        c.create(CC, cluster_config("tor"))
        c.create(RESOURCES["Service"], service("web"), "default")
        yield c


def test_a_service_gets_its_address_from_a_cilium_pool_and_cilium_objects_stay_untouched(
        fresh_apiserver: ApiServer, kube: HTTPKubeAPI, tmp_path: Path) -> None:
    before = cilium_objects(kube)
    assert len(before) == 3
    log = tmp_path / "operator.log"
    op = Operator(fresh_apiserver, log, "--watch-cilium-crds")
    op.start()
    try:
        wait_for(lambda: ingress(kube, "default", "web") != [], 30,
                 what="web's LoadBalancer IP in its status")
        [ip] = ingress(kube, "default", "web")
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(POOL_CIDR)

        def cilium_events() -> dict[str, Obj]:
            return {e["regarding"]["name"]: e for e in kube.list(EVENT, "default")[0]
                    if e["regarding"]["kind"] == "CiliumBGPClusterConfig"}

        wait_for(lambda: len(cilium_events()) == 2, 20, what="two Warning Events")
        ev = cilium_events()["tor"]
        assert (ev["type"], ev["reason"]) == ("Warning", "NameClash")
        assert ev["regarding"]["apiVersion"] == "cilium.io/v2alpha1"  # as the server serves it
        assert ev["regarding"]["uid"] == before["CiliumBGPClusterConfig tor"]["metadata"]["uid"]
        assert "BGPClusterConfig tor" in ev["note"]
        # the rackroute object of that name carries its own conditions, none of the Cilium one
        conds = (kube.get(CC, "tor").get("status") or {}).get("conditions") or []
        assert conds and "Cilium" not in str(conds)
        # the problem a condition would say on a rackroute object, told on the Cilium one
        lonely = cilium_events()["cil-only"]
        assert (lonely["type"], lonely["reason"]) == ("Warning", "NoMatchingNode")
        assert [e["regarding"]["name"] for e in kube.list(EVENT, "default")[0]
                if e["type"] == "Warning"].count("cil-only") == 1
    finally:
        op.kill()
    after = cilium_objects(kube)
    for ref, obj in before.items():
        assert after[ref]["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], ref
        assert "status" not in after[ref], ref
    text = log.read_text()
    assert "status_write_failed" not in text
    assert "event=kube_resource_missing kind=CiliumBGPPeerConfig" in text  # said, not fatal
    assert text.count("kind=CiliumBGPPeerConfig") == 1
    assert "event=kube_resource_version kind=CiliumBGPClusterConfig " \
           "api_version=cilium.io/v2alpha1" in text
