"""The lab's topology comes from the lab manifests; the containerlab files stay in step."""

from __future__ import annotations

from pathlib import Path

import yaml

from controller.lab.clab import render
from controller.lab.topology import load_topology

LAB = Path(__file__).resolve().parents[3] / "examples" / "frr-lab"


def test_topology_from_manifests() -> None:
    topo = load_topology(LAB / "manifests")
    assert [(n.name, n.address, n.asn, n.ns) for n in topo.nodes] == [
        ("node-1", "10.0.0.11", 65011, "rrl-n1"),
        ("node-2", "10.0.0.12", 65012, "rrl-n2"),
        ("node-3", "10.0.0.13", 65013, "rrl-n3"),
    ]
    assert {(p.name, p.node, p.ip) for p in topo.pods} == {
        ("web-local-1", "node-1", "10.244.0.10"),
        ("web-local-2", "node-2", "10.244.1.10"),
        ("web-cluster-1", "node-3", "10.244.2.10"),
    }
    conf = topo.tor_bgp().render()
    for n in topo.nodes:
        assert f"neighbor {n.address} peer-group NODES" in conf
        assert f"neighbor {n.address} next-hop-self" in conf
    assert "maximum-paths 16" in conf
    assert "bgp listen range 10.0.0.0/24 peer-group NODES" in conf


def test_committed_containerlab_files_are_current() -> None:
    topo = load_topology(LAB / "manifests")
    for rel, text in render(topo).items():
        assert (LAB / rel).read_text() == text, f"{rel} is stale: run `rackroute lab clab`"


def test_containerlab_topology_matches_the_netns_lab() -> None:
    topo = load_topology(LAB / "manifests")
    doc = yaml.safe_load((LAB / "topology.clab.yml").read_text())
    nodes = doc["topology"]["nodes"]
    assert set(nodes) == {"tor", "client", *(n.name for n in topo.nodes)}
    links = [tuple(link["endpoints"]) for link in doc["topology"]["links"]]
    assert len(links) == len(topo.nodes) + 1
    for n in topo.nodes:
        assert f"ip addr add {n.address}/24 dev eth1" in nodes[n.name]["exec"]
    frr = (LAB / "clab" / "tor" / "frr.conf").read_text()
    assert topo.tor_bgp().render() in frr
