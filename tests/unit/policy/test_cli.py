"""`rackroute policy` on a manifest directory: the pods under policy, one pod's entries,
and --check's verdict with its reasons (exit 0 allowed, 1 refused, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli import main

DOCS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops",
                                                           "labels": {"team": "ops"}}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "front", "namespace": "web", "labels": {"app": "front"}},
     "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "app"}]},
     "status": {"phase": "Running", "podIPs": [{"ip": "10.0.1.10"}]}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "api", "namespace": "web", "labels": {"app": "api"}},
     "spec": {"nodeName": "n2", "containers": [
         {"name": "c", "image": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
     "status": {"phase": "Running", "podIPs": [{"ip": "10.0.2.11"}]}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "probe", "namespace": "ops", "labels": {"app": "probe"}},
     "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "app"}]},
     "status": {"phase": "Running", "podIPs": [{"ip": "10.0.3.30"}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "api-from-front", "namespace": "web"},
     "spec": {"podSelector": {"matchLabels": {"app": "api"}},
              "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "front"}}}],
                           "ports": [{"port": "http"}]}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "front-dns-and-api", "namespace": "web"},
     "spec": {"podSelector": {"matchLabels": {"app": "front"}},
              "policyTypes": ["Egress"],
              "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "api"}}}]},
                         {"ports": [{"protocol": "UDP", "port": 53}]}]}},
]


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump_all(DOCS))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_every_pod_under_policy(manifests: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "policy", "--manifests", str(manifests), "-o", "json")
    assert rc == 0 and err == ""
    docs = {d["pod"]: d for d in json.loads(out)}
    assert set(docs) == {"web/api", "web/front"}  # ops/probe: no policy selects it
    assert docs["web/api"]["ingress"] == [{"peer": "10.0.1.10/32", "allow": ["tcp/8080"]}]
    assert docs["web/api"]["egress"] == "not isolated"
    assert docs["web/front"]["ingress"] == "not isolated"
    assert {"peer": "10.0.2.11/32", "allow": ["any"]} in docs["web/front"]["egress"]
    rc, out, _ = run(capsys, "policy", "--manifests", str(manifests))
    assert "web/api" in out and "1 entries" in out and "api-from-front" in out


def test_one_pods_entries(manifests: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "policy", "--manifests", str(manifests), "--pod", "web/api")
    assert rc == 0
    assert "web/api (10.0.2.11), selected by web/api-from-front" in out
    assert "ingress: isolated, 1 entries" in out and "10.0.1.10/32  tcp/8080" in out
    assert "egress: not isolated" in out
    rc, out, _ = run(capsys, "policy", "--manifests", str(manifests), "--pod", "ops/probe")
    assert rc == 0 and "no policy selects it" in out


@pytest.mark.parametrize(("src", "dst", "what", "rc", "reason"), [
    ("web/front", "web/api", "tcp/8080", 0, "ingress of web/api: allowed (entry "
                                            "10.0.1.10/32 allows tcp/8080)"),
    ("web/front", "web/api", "tcp/9090", 1, "ingress of web/api: refused"),
    ("ops/probe", "web/api", "tcp/8080", 1, "no entry holds 10.0.3.30"),
    ("web/front", "ops/probe", "tcp/80", 1, "egress of web/front: refused"),
    ("web/front", "192.0.2.53", "udp/53", 0, "ingress: 192.0.2.53 is no pod"),
    ("10.0.3.30", "web/front", "tcp/80", 0, "ingress of web/front: allowed (not isolated)"),
])
def test_check(manifests: Path, capsys: pytest.CaptureFixture[str], src: str, dst: str,
               what: str, rc: int, reason: str) -> None:
    got, out, _ = run(capsys, "policy", "--manifests", str(manifests), "--check", src, dst,
                      what)
    assert got == rc, out
    assert out.startswith("allowed" if rc == 0 else "refused")
    assert reason in out, out


def test_bad_input_is_named(manifests: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "policy", "--manifests", str(manifests), "--check", "web/nope",
                     "web/api", "tcp/80")
    assert rc == 2 and "'web/nope': neither an address nor a pod" in err
    rc, _, err = run(capsys, "policy", "--manifests", str(manifests), "--check", "web/front",
                     "web/api", "icmp/0")
    assert rc == 2 and "expected tcp/PORT" in err
    rc, _, err = run(capsys, "policy", "--manifests", str(manifests), "--pod", "web/nope")
    assert rc == 2 and "--pod web/nope: no such pod" in err
