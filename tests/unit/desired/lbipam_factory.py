"""Builders of Services and LoadBalancerIPPools for the LB-IPAM tests, via the real parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controller.model.crds import LoadBalancerIPPool
from controller.model.k8s import Service
from controller.model.parse import parse_object

TS = "2024-01-01T00:00:00Z"


def ts(minute: int) -> str:
    """A creation timestamp `minute` minutes after the base one."""
    t = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parsed(raw: dict[str, Any]) -> Any:
    result = parse_object(raw)
    assert not result.errors, result.errors
    return result.obj


def service(
    name: str,
    ns: str = "default",
    *,
    created: str = TS,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    status: tuple[str, ...] = (),
    **spec: Any,
) -> Service:
    """A LoadBalancer Service; `spec` keys use the manifest spelling (camelCase)."""
    body: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80}]}
    body.update(spec)
    raw = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": created,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": body,
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in status]}},
    }
    svc = _parsed(raw)
    assert isinstance(svc, Service)
    return svc


def _block(text: str) -> dict[str, str]:
    if "-" in text:
        start, stop = text.split("-")
        return {"start": start, "stop": stop}
    return {"cidr": text}


def pool(
    name: str,
    *blocks: str,
    created: str = TS,
    selector: dict[str, Any] | None = None,
    first_last: str | None = None,
    disabled: bool = False,
    generation: int = 1,
) -> LoadBalancerIPPool:
    """A pool; blocks are "cidr" or "start-stop" strings."""
    spec: dict[str, Any] = {"blocks": [_block(b) for b in blocks], "disabled": disabled}
    if selector is not None:
        spec["serviceSelector"] = selector
    if first_last is not None:
        spec["allowFirstLastIPs"] = first_last
    raw = {
        "apiVersion": "rackroute.io/v1alpha1",
        "kind": "LoadBalancerIPPool",
        "metadata": {"name": name, "creationTimestamp": created, "generation": generation},
        "spec": spec,
    }
    obj = _parsed(raw)
    assert isinstance(obj, LoadBalancerIPPool)
    return obj
