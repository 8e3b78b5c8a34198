"""`rackroute status` from the status files and from the API server (the fake): each
node's health, routing, sessions and BFD, the addresses, the pools, and every line of
trouble naming where it comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from controller.cli_status import from_cluster, node_rows, trouble
from controller.sources.kubeapi import RESOURCES
from controller.sources.kubefake import FakeKubeAPI
from controller.status import status_dir, write_atomic, write_node

PEER_UP = {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 65000,
           "state": "established", "lastError": None, "bfd": {"state": "up"}}
PEER_DOWN = {"name": "tor-b", "peerAddress": "10.0.0.2", "peerASN": 65000, "state": "active",
             "lastError": "no TCP connection with 10.0.0.2 port 179", "bfd": {"state": "down"}}


def bgp_doc(*peers: dict[str, object], problems: tuple[str, ...] = ()) -> dict[str, object]:
    return {"instances": [{"name": "tor", "localASN": 65011, "peers": list(peers)}],
            "problems": list(problems)}


def test_rows_and_trouble() -> None:
    bgp = {"n1": bgp_doc(PEER_UP, PEER_DOWN), "n2": bgp_doc(PEER_UP)}
    nets = {"n1": {"healthy": False, "routing": "native", "problems": ["routing: boom"]},
            "n2": {"healthy": True, "routing": "tunnel", "tunnelEndpoint": "10.0.0.12",
                   "problems": []}}
    assert node_rows(bgp, nets) == [["n1", "unhealthy", "native", "1/2", "1/2", 1],
                                    ["n2", "ok", "tunnel from 10.0.0.12", "1/1", "1/1", 0]]
    assert trouble(bgp, nets) == [
        "n1: peer 10.0.0.2 (tor/tor-b) not up: no TCP connection with 10.0.0.2 port 179",
        "n1: routing: boom"]


def test_from_the_status_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = bgp_doc(PEER_UP, problems=("BGPPeerConfig p: spec.x: bad",))
    doc["network"] = {"healthy": True, "routing": "native", "tunnelEndpoint": None,
                      "problems": []}
    write_node(tmp_path, "n1", doc)
    write_atomic(status_dir(tmp_path) / "operator.yaml", {
        "services": {"demo/web": {"ingress": ["198.51.100.1"]}},
        "objects": {"LoadBalancerIPPool blue": {"conditions": [
            {"type": "IPsAvailable", "status": "True", "message": "253"}]}}})
    assert main(["status", "--manifests", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["n1", "ok", "native", "1/1", "1/1", "1"]
    assert "LoadBalancer IPs: 1 on 1 services" in out
    assert "blue" in out and "available=253" in out
    assert "n1: bgp: BGPPeerConfig p: spec.x: bad" in out
    empty = tmp_path / "none"
    empty.mkdir()
    assert main(["status", "--manifests", str(empty)]) == 1


def test_from_the_cluster() -> None:
    api = FakeKubeAPI()
    api.create(RESOURCES["NodeNetwork"], {
        "apiVersion": "rackroute.io/v1alpha1", "kind": "NodeNetwork",
        "metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.1.0/24"]}})
    api.merge_patch(RESOURCES["NodeNetwork"], "n1", {"status": {
        "healthy": True, "routing": "native", "problems": []}}, sub="status")
    api.create(RESOURCES["Service"], {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
                                                            "namespace": "demo"},
        "spec": {"type": "LoadBalancer"}}, "demo")
    api.merge_patch(RESOURCES["Service"], "web", {"status": {
        "loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}, "demo", sub="status")
    bgp, nets, cluster = from_cluster(api)
    assert nets["n1"]["healthy"] is True and bgp == {}
    assert cluster["services"] == {"demo/web": ["198.51.100.1"]}
    assert node_rows(bgp, nets) == [["n1", "ok", "native", "0/0", "-", 0]]
