"""Service health check node ports: which services get one, how local ready endpoints
are counted (per pod, ready only, this node only), a port claimed twice, the parsed
field; and the reconciler against the fake server port."""

from __future__ import annotations

from ipaddress import ip_address

from controller.desired.healthcheck import HealthCheck, plan_health_checks
from controller.model.k8s import Endpoint, EndpointPort, EndpointSlice, ServicePort
from controller.model.k8s import Service as Svc
from controller.model.meta import Meta
from controller.model.parse import parse_object
from controller.reconcile.healthcheck import FakeHealthServers, HealthCheckReconciler
from controller.reconcile.loop import PassContext
from controller.store import Snapshot

NODE = "n1"


def svc(name: str, port: int | None = 32001, etp: str = "Local",
        type_: str = "LoadBalancer") -> Svc:
    return Svc(Meta("Service", name, "demo"), type=type_, external_traffic_policy=etp,
               ports=(ServicePort(80, "TCP", "http", 8080),), health_check_node_port=port)


def ep(addr: str, node: str | None = NODE, ready: bool = True, target: str = "") -> Endpoint:
    return Endpoint((ip_address(addr),), ready, ready, not ready, node, target)


def sl(service: str, *eps: Endpoint, name: str = "", fam: str = "IPv4") -> EndpointSlice:
    return EndpointSlice(Meta("EndpointSlice", name or f"{service}-a", "demo"), service, fam,
                         eps, (EndpointPort(8080, "TCP", "http"),))


def test_local_ready_endpoints_are_counted_per_pod() -> None:
    s = Snapshot.build([
        svc("web"),
        sl("web", ep("10.1.0.1", target="web-1"), ep("10.1.0.2", target="web-2"),
           ep("10.1.0.3", ready=False, target="web-3"),  # terminating: drains
           ep("10.2.0.1", node="n2", target="web-4")),  # another node's
        sl("web", ep("fd00::1", target="web-1"), name="web-v6", fam="IPv6"),  # web-1 again
    ])
    plan = plan_health_checks(s, NODE)
    assert plan.checks == {32001: HealthCheck(32001, "demo", "web", 2)}
    assert plan.checks[32001].healthy
    assert plan.checks[32001].body() == {"service": {"namespace": "demo", "name": "web"},
                                         "localEndpoints": 2, "serviceProxyHealthy": True}
    other = plan_health_checks(s, "n3").checks[32001]
    assert other.local_endpoints == 0 and not other.healthy


def test_only_local_policy_load_balancers_with_a_port() -> None:
    s = Snapshot.build([svc("a"), svc("b", etp="Cluster", port=32002),
                        svc("c", type_="NodePort", port=32003), svc("d", port=None)])
    assert set(plan_health_checks(s, NODE).checks) == {32001}


def test_a_port_claimed_twice_goes_to_the_first_and_the_other_is_told() -> None:
    s = Snapshot.build([svc("a"), svc("b")])
    plan = plan_health_checks(s, NODE)
    assert plan.checks[32001].name == "a"
    assert plan.problems == {"demo/b": ("spec.healthCheckNodePort 32001: already used by "
                                        "service demo/a; not served",)}


def test_the_field_is_parsed_with_its_range() -> None:
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"},
           "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                    "healthCheckNodePort": 32000, "ports": [{"port": 80}]}}
    got = parse_object(doc)
    assert got.obj is not None and got.obj.health_check_node_port == 32000
    doc["spec"]["healthCheckNodePort"] = 70000  # type: ignore[index]
    assert parse_object(doc).errors == [
        "Service n/a: spec.healthCheckNodePort: must be 1..65535, got 70000"]


def test_the_reconciler_serves_the_plan_and_reports_a_busy_port() -> None:
    fake = FakeHealthServers(busy={32002})
    r = HealthCheckReconciler(fake)
    s = Snapshot.build([svc("a"), svc("b", port=32002), sl("a", ep("10.1.0.1"))])
    ctx = PassContext(s, NODE)
    r.reconcile(ctx)
    assert set(fake.serving) == {32001} and fake.serving[32001].local_endpoints == 1
    assert ctx.errors == {"health-checks": "service demo/b: spec.healthCheckNodePort 32002: "
                          "cannot serve: address already in use"}
    # the count changes in place; a service gone closes its port
    s2 = Snapshot.build([svc("a"), sl("a")])
    ctx2 = PassContext(s2, NODE)
    r.reconcile(ctx2)
    assert fake.serving[32001].local_endpoints == 0 and fake.opened == 1
    assert ctx2.errors == {}
    r.reconcile(PassContext(Snapshot.build([]), NODE))
    assert fake.serving == {}
    r.close()


def test_node_health_follows_the_datapaths_passes() -> None:
    from controller.reconcile.healthcheck import NodeHealth

    now = [1000.0]
    node = NodeHealth(stale=60, clock=lambda: now[0])
    assert node.body()[0] is False  # never programmed yet
    r = HealthCheckReconciler(FakeHealthServers(), node)
    bad = PassContext(Snapshot.build([]), NODE)
    bad.errors["datapath"] = "map full"
    r.reconcile(bad)
    assert node.last_ok is None  # a pass whose datapath failed does not count
    r.reconcile(PassContext(Snapshot.build([]), NODE))
    ok, doc = node.body()
    assert ok and doc["nodeEligible"] is True
    assert doc["lastUpdated"] == doc["currentTime"] == "1970-01-01T00:16:40+00:00"
    now[0] += 61  # no good pass for longer than the stale limit
    assert node.body()[0] is False


def test_a_service_of_another_proxy_gets_no_health_check_here() -> None:
    other = Svc(Meta("Service", "b", "demo",
                     labels={"service.kubernetes.io/service-proxy-name": "other"}),
                type="LoadBalancer", external_traffic_policy="Local",
                ports=(ServicePort(80, "TCP", "http", 8080),), health_check_node_port=32009)
    s = Snapshot.build([svc("a"), other])
    assert set(plan_health_checks(s, NODE).checks) == {32001}
    assert set(plan_health_checks(s, NODE, "other").checks) == {32009}
