"""The node's service health checks, as kube-proxy serves them: a pure function of the
snapshot.

A LoadBalancer service with externalTrafficPolicy Local gets a `spec.healthCheckNodePort`
from the API server; every node answers HTTP on that port with the number of the
service's ready endpoints on that node (200 when there is one, 503 when there is none),
so that a load balancer outside the cluster sends the service's traffic only to nodes
that serve it locally. (rackroute's own BGP advertisement withdraws such a node's route
instead; the health check is for load balancers that probe NodePorts.)

Endpoints are counted once per pod (a dual-stack pod appears in one EndpointSlice per
family) and only when ready: a terminating endpoint no longer counts, so an outside
load balancer drains the node, as with kube-proxy. Two services claiming one port: the
first by name keeps it, the other is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.desired.services import proxied_here
from controller.model.k8s import EndpointSlice
from controller.store import Snapshot


@dataclass(frozen=True, order=True)
class HealthCheck:
    """What the node answers on one health check node port."""

    port: int
    namespace: str
    name: str
    local_endpoints: int

    @property
    def healthy(self) -> bool:
        return self.local_endpoints > 0

    def body(self) -> dict[str, object]:
        """The JSON document kube-proxy answers with."""
        return {"service": {"namespace": self.namespace, "name": self.name},
                "localEndpoints": self.local_endpoints, "serviceProxyHealthy": True}


@dataclass(frozen=True)
class HealthPlan:
    checks: Mapping[int, HealthCheck]  # by port
    problems: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # by ns/name


def local_ready_endpoints(slices: list[EndpointSlice], node: str) -> int:
    """Ready endpoints on node, one per pod (its target, else its first address)."""
    seen: set[str] = set()
    for sl in slices:
        for ep in sl.endpoints:
            if ep.node_name == node and ep.ready and ep.addresses:
                seen.add(ep.target or str(ep.addresses[0]))
    return len(seen)


def plan_health_checks(snap: Snapshot, node: str, proxy_name: str = "") -> HealthPlan:
    """The health checks node serves: one per LoadBalancer service of this proxy
    (`proxied_here`) with externalTrafficPolicy Local and a healthCheckNodePort."""
    by_service: dict[str, list[EndpointSlice]] = {}
    for sk in sorted(snap.slices):
        sl = snap.slices[sk]
        by_service.setdefault(sl.service_key, []).append(sl)
    checks: dict[int, HealthCheck] = {}
    problems: dict[str, tuple[str, ...]] = {}
    for key in sorted(snap.services):
        svc = snap.services[key]
        port = svc.health_check_node_port
        if (svc.type != "LoadBalancer" or svc.external_traffic_policy != "Local" or not port
                or not proxied_here(svc, proxy_name)):
            continue
        other = checks.get(port)
        if other is not None:
            problems[key] = (f"spec.healthCheckNodePort {port}: already used by service "
                             f"{other.namespace}/{other.name}; not served",)
            continue
        checks[port] = HealthCheck(port, svc.meta.namespace, svc.meta.name,
                                   local_ready_endpoints(by_service.get(key, []), node))
    return HealthPlan(checks, problems)
