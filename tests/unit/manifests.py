"""Test helpers: build snapshots from YAML text, and small manifest builders."""

from __future__ import annotations

from typing import Any

import yaml

from controller.model.parse import parse_object
from controller.store import ObjectError, Snapshot


def snapshot(text: str, *extra: dict[str, Any]) -> Snapshot:
    """Parse multi-document YAML (plus dicts) into a snapshot; parse errors fail the test."""
    objs: list[object] = []
    errors: list[ObjectError] = []
    docs = [d for d in yaml.safe_load_all(text) if d is not None] + list(extra)
    for d in docs:
        r = parse_object(d)
        assert not r.errors, r.errors
        if r.obj is not None:
            objs.append(r.obj)
    return Snapshot.build(objs, errors)


def node(name: str, ip: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {"bgp": "on"}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def lb_service(
    name: str,
    *,
    ns: str = "demo",
    etp: str = "Cluster",
    itp: str = "Cluster",
    ingress: list[str] | None = None,
    labels: dict[str, str] | None = None,
    cluster_ip: str | None = None,
    external_ips: list[str] | None = None,
    svc_type: str = "LoadBalancer",
    lb_class: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": svc_type,
        "externalTrafficPolicy": etp,
        "internalTrafficPolicy": itp,
        "ports": [{"port": 80}],
    }
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    if external_ips:
        spec["externalIPs"] = external_ips
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    d: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": spec,
    }
    if ingress:
        d["status"] = {"loadBalancer": {"ingress": [{"ip": i} for i in ingress]}}
    return d


def slice_(
    service: str,
    eps: list[tuple[str, str, dict[str, bool]]],
    *,
    ns: str = "demo",
    fam: str = "IPv4",
) -> dict[str, Any]:
    """eps: (address, nodeName, conditions)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-{abs(hash(str(eps))) % 10000}",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": fam,
        "endpoints": [{"addresses": [a], "nodeName": n, "conditions": c} for a, n, c in eps],
        "ports": [{"port": 8080}],
    }


READY = {"ready": True}
TERMINATING = {"ready": False, "serving": True, "terminating": True}
NOT_READY = {"ready": False, "serving": False}
