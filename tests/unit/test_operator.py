"""The operator: writes allocations to status, never renumbers across restarts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

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
    assert [str(i) for i in st.ingress["demo/web-local"]] == ["10.96.100.2"]
    assert [str(c) for c in st.pod_cidrs["node-2"]] == ["10.244.1.0/24"]
    # the status now feeds back in; a second pass changes nothing
    assert op.reconcile(md.load()) is False
    doc = read_yaml(status_dir(root) / "operator.yaml")
    cond = doc["services"]["demo/web-local"]["conditions"][0]
    assert (cond["type"], cond["reason"]) == ("rackroute.io/IPAMRequestSatisfied", "satisfied")
    pool = doc["objects"]["LoadBalancerIPPool general"]["conditions"]
    assert {c["type"] for c in pool} >= {
        "rackroute.io/IPsTotal",
        "rackroute.io/IPsAvailable",
        "rackroute.io/IPsUsed",
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
    assert doc["services"]["demo/web-local"]["ingress"] == ["10.96.100.2"]


def test_operator_process_restart_keeps_allocations(tmp_path: Path) -> None:
    root = lab_copy(tmp_path)
    cmd = [sys.executable, "-m", "controller.cli", "operator", "--manifests", str(root)]

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
