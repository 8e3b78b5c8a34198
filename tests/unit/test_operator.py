"""The operator: writes allocations to status, never renumbers across restarts."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
import time
from pathlib import Path

from controller.desired.bgpconfig import resolve_node
from controller.operator import Operator
from controller.sources.files import ManifestDir
from controller.status import read_operator, read_yaml, status_dir

LAB = Path(__file__).resolve().parents[2] / "examples" / "frr-lab" / "manifests"


def lab_copy(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    shutil.copytree(LAB, root)
    return root


def test_reconcile_writes_then_is_stable(tmp_path: Path) -> None:
    root = lab_copy(tmp_path)
    md = ManifestDir(root)
    op = Operator(root)
    assert op.reconcile(md.load()) is True
    st = read_operator(root)
    assert [str(i) for i in st.ingress["demo/web-local"]] == ["10.96.100.2", "fd00:96:100::2"]
    assert [str(c) for c in st.pod_cidrs["node-2"]] == ["10.244.1.0/24", "fd00:244:0:1::/64"]
    # the status now feeds back in; a second pass changes nothing
    assert op.reconcile(md.load()) is False
    doc = read_yaml(status_dir(root) / "operator.yaml")
    cond = doc["services"]["demo/web-local"]["conditions"][0]
    assert (cond["type"], cond["reason"]) == ("rackroute.io/IPAMRequestSatisfied", "satisfied")
    pool = doc["objects"]["LoadBalancerIPPool general"]["conditions"]
    assert {c["type"] for c in pool} >= {
        "IPsTotal",
        "IPsAvailable",
        "IPsUsed",
    }


def test_no_renumber_when_an_earlier_service_is_deleted(tmp_path: Path) -> None:
    root = lab_copy(tmp_path)
    md, op = ManifestDir(root), Operator(root)
    op.reconcile(md.load())
    before = read_operator(root).ingress["demo/web-local"]
    svc = root / "40-services.yaml"
    text = svc.read_text()
    # drop web-cluster (it holds the lower address)
    parts = text.split("---\n")
    svc.write_text("---\n".join(p for p in parts if "name: web-cluster" not in p))
    op.reconcile(md.load())
    st = read_operator(root)
    assert "demo/web-cluster" not in st.ingress
    assert st.ingress["demo/web-local"] == before


def test_bad_manifest_becomes_condition_and_rest_still_allocated(tmp_path: Path) -> None:
    root = lab_copy(tmp_path)
    (root / "99-bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: broken, namespace: demo}\n"
        "spec: {type: LoadBalancer, ports: [{port: 0}]}\n"
    )
    Operator(root).reconcile(ManifestDir(root).load())
    doc = read_yaml(status_dir(root) / "operator.yaml")
    cond = doc["objects"]["Service demo/broken"]["conditions"][0]
    assert cond["reason"] == "InvalidManifest"
    assert "spec.ports[0].port: must be 1..65535, got 0" in cond["message"]
    assert doc["services"]["demo/web-local"]["ingress"] == ["10.96.100.2", "fd00:96:100::2"]


def test_router_ids_from_the_pool_reach_the_agents_through_the_status(tmp_path: Path) -> None:
    root = lab_copy(tmp_path)
    cluster = root / "00-cluster.yaml"
    cluster.write_text(cluster.read_text() + "  bgpRouterIDPool: 10.255.0.0/24\n")
    md, op = ManifestDir(root), Operator(root)
    assert op.reconcile(md.load()) is True
    want = {f"node-{i}": ipaddress.IPv4Address(f"10.255.0.{i}") for i in (1, 2, 3)}
    assert dict(read_operator(root).router_ids) == want
    entry = read_yaml(status_dir(root) / "operator.yaml")["nodeNetworks"]["node-2"]
    assert entry["bgpRouterID"] == "10.255.0.2" and entry["podCIDRs"] == ["10.244.1.0/24",
                                                                       "fd00:244:0:1::/64"]
    rid = {c["type"]: c for c in entry["conditions"]}["rackroute.io/BGPRouterIDAllocated"]
    assert (rid["status"], rid["reason"]) == ("True", "Allocated")
    # stable: a second pass, and a restarted operator, change nothing
    assert op.reconcile(md.load()) is False
    assert Operator(root).reconcile(ManifestDir(root).load()) is False
    # the agents read them from the status, as they read pod CIDRs, and use them where
    # the node's BGPNodeConfigOverride sets no routerID (node-2's is taken out here)
    bgp = root / "20-bgp.yaml"
    bgp.write_text(bgp.read_text().replace(", routerID: 10.0.0.12}", "}"))
    snap = ManifestDir(root).load()
    assert snap.node_networks["node-2"].bgp_router_id == want["node-2"]
    got = {n: [str(i.global_config.router_id) for i in resolve_node(snap, snap.nodes[n]).instances]
           for n in ("node-1", "node-2")}
    assert got == {"node-1": ["10.0.0.11"], "node-2": ["10.255.0.2"]}
    # a bad pool is reported on its object; no router ID moves
    cluster.write_text(cluster.read_text().replace("10.255.0.0/24", "10.255.0.1/24"))
    op.reconcile(md.load())
    doc = read_yaml(status_dir(root) / "operator.yaml")
    (valid,) = doc["objects"]["RackrouteConfig default"]["conditions"]
    assert valid["reason"] == "InvalidManifest"
    assert ("RackrouteConfig default: spec.bgpRouterIDPool: host bits set in '10.255.0.1/24', "
            "did you mean 10.255.0.0/24?") in valid["message"]
    assert dict(read_operator(root).router_ids) == want


def test_operator_process_restart_keeps_allocations(tmp_path: Path) -> None:
    root = lab_copy(tmp_path)
    cmd = [sys.executable, "-m", "controller.cli", "operator", "--manifests", str(root),
           "--metrics-port", "0"]

    def run_until_written(extra: str | None = None) -> dict[str, object]:
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        try:
            if extra:
                time.sleep(0.5)
                (root / "45-new.yaml").write_text(extra)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                st = read_operator(root)
                if st.ingress and (extra is None or "demo/new" in st.ingress):
                    time.sleep(0.5)
                    return dict(read_operator(root).ingress)
                time.sleep(0.1)
            raise AssertionError("operator wrote no status")
        finally:
            proc.kill()
            proc.wait()

    first = run_until_written()
    new_svc = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: new, namespace: demo, "
        "creationTimestamp: '2000-01-01T00:00:00Z'}\n"
        "spec: {type: LoadBalancer, ports: [{port: 80}]}\n"
    )
    second = run_until_written(new_svc)
    for key, ips in first.items():
        assert second[key] == ips, key
    assert second["demo/new"] not in first.values()
