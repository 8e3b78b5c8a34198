"""`rackroute policy` reading a real kube-apiserver: Pods, Namespaces and NetworkPolicies
as the server returns them (defaults, managed fields and all) parse, and the verdicts are
those from the same objects in a manifest directory."""

from __future__ import annotations

import json

import pytest

from controller.cli import main
from tests.kube.apiserver import ApiServer
from tests.kube.conftest import apply
from tests.unit.policy.test_cli import DOCS


def test_policy_from_the_api_server(kube: object, apiserver: ApiServer,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    apply(kube, DOCS)  # type: ignore[arg-type]
    src = ["--kubeconfig", str(apiserver.kubeconfig)]
    assert main(["policy", *src, "-o", "json"]) == 0
    docs = {d["pod"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(docs) == {"web/api", "web/front"}
    assert docs["web/api"]["ingress"] == [{"peer": "10.0.1.10/32", "allow": ["tcp/8080"]}]
    assert main(["policy", *src, "--check", "web/front", "web/api", "tcp/8080"]) == 0
    assert main(["policy", *src, "--check", "ops/probe", "web/api", "tcp/8080"]) == 1
    out = capsys.readouterr().out
    assert "refused: ops/probe -> web/api tcp/8080" in out
