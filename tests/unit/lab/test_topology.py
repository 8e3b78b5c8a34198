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
    assert [n.address6 for n in topo.nodes] == ["fd00:10::11", "fd00:10::12", "fd00:10::13"]
    assert topo.dual_stack
    assert {(p.name, p.node, p.ips) for p in topo.pods} == {
        ("web-local-1", "node-1", ("10.244.0.10", "fd00:244::10")),
        ("web-local-2", "node-2", ("10.244.1.10", "fd00:244:0:1::10")),
        ("web-cluster-1", "node-3", ("10.244.2.10", "fd00:244:0:2::10")),
    }
    conf = topo.tor_bgp().render()
    v4, v6 = conf.split(" address-family ipv4 unicast\n")[1].split(" address-family ipv6 unicast\n")
    for n in topo.nodes:
        for a in (n.address, n.address6):
            assert f"neighbor {a} peer-group NODES" in conf
        # each session carries its own family only
        assert f"  neighbor {n.address} activate" in v4
        assert f"no neighbor {n.address6} activate" in v4
        assert f"  neighbor {n.address6} activate" in v6
        assert f"no neighbor {n.address} activate" in v6
        assert f"neighbor {n.address6} next-hop-self" in v6
    assert "maximum-paths 16" in conf
    assert "bgp listen range 10.0.0.0/24 peer-group NODES" in conf
    assert "bgp listen range fd00:10::/64 peer-group NODES" in conf


def test_a_single_stack_lab_has_no_ipv6(tmp_path: Path) -> None:
    """Manifests without IPv6 node addresses make the IPv4-only lab of before."""
    import shutil

    for f in (LAB / "manifests").glob("*.yaml"):
        text = f.read_text()
        if f.name == "10-nodes.yaml":
            text = "\n".join(line.split(", {type: InternalIP, address: \"fd00")[0] + "]"
                             if "fd00" in line else line for line in text.splitlines())
        (tmp_path / f.name).write_text(text)
    shutil.rmtree(tmp_path / ".status", ignore_errors=True)
    topo = load_topology(tmp_path)
    assert not topo.dual_stack and all(n.address6 == "" for n in topo.nodes)
    conf = topo.tor_bgp().render()
    assert "fd00" not in conf.split("address-family")[0]


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
        assert f"ip addr add {n.address6}/64 dev eth1 nodad" in nodes[n.name]["exec"]
    frr = (LAB / "clab" / "tor" / "frr.conf").read_text()
    assert topo.tor_bgp().render() in frr
