"""The desired service table: every service type, traffic policies, endpoint semantics,
target-port resolution and per-service problems, checked against exact tables."""

from __future__ import annotations

from ipaddress import IPv4Address as A4
from ipaddress import IPv6Address as A6
from ipaddress import ip_address

from bpf.table import Backend, BackendState, Proto, Service, ServiceKey
from controller.desired.services import PlanMemo, plan_services
from controller.model.k8s import Endpoint, EndpointPort, EndpointSlice, ServicePort
from controller.model.k8s import Service as Svc
from controller.model.meta import Meta
from controller.store import Snapshot

NODE = "n1"
N1 = A4("192.0.2.1")
N1B = A4("198.51.100.1")
R, T = BackendState.READY, BackendState.TERMINATING
NS = BackendState.NOT_SERVING
TCP, UDP = Proto.TCP, Proto.UDP


def svc(name: str, **kw: object) -> Svc:
    kw.setdefault("cluster_ips", (A4("10.96.0.10"),))
    kw.setdefault("ports", (ServicePort(80, "TCP", "http", "web"),))
    return Svc(Meta("Service", name, "demo"), **kw)  # type: ignore[arg-type]


def ep(addr: str, node: str | None = NODE, ready: bool = True, serving: bool = True,
       terminating: bool = False) -> Endpoint:
    return Endpoint((ip_address(addr),), ready, serving, terminating, node)


def sl(service: str, *eps: Endpoint, name: str = "", fam: str = "IPv4",
       ports: tuple[EndpointPort, ...] = (EndpointPort(8080, "TCP", "http"),)) -> EndpointSlice:
    return EndpointSlice(Meta("EndpointSlice", name or f"{service}-a", "demo"), service, fam,
                         eps, ports)


def snap(*objs: object) -> Snapshot:
    return Snapshot.build(objs)


def k(vip: str, port: int, proto: Proto = TCP) -> ServiceKey:
    return ServiceKey(ip_address(vip), port, proto)


def b(addr: str, port: int = 8080, local: bool = True, state: BackendState = R) -> Backend:
    return Backend(ip_address(addr), port, local, state)


def test_clusterip_with_local_and_remote_ready_endpoints() -> None:
    plan = plan_services(snap(svc("web"), sl("web", ep("10.1.0.5"), ep("10.1.1.5", "n2"))),
                         NODE, (N1,))
    assert dict(plan.table) == {
        k("10.96.0.10", 80): Service((b("10.1.0.5"), b("10.1.1.5", local=False)),
                                     name="demo/web"),
    }
    assert plan.problems == {}
    assert plan.addresses() == {A4("10.96.0.10")}


def test_nodeport_loadbalancer_and_external_ips_with_local_policy() -> None:
    s = svc("lb", type="LoadBalancer", external_traffic_policy="Local",
            ports=(ServicePort(80, "TCP", "http", 8080, node_port=30080),),
            status_ingress=(A4("203.0.113.7"),), external_ips=(A4("203.0.113.9"),))
    plan = plan_services(snap(s, sl("lb", ep("10.1.0.5"), ep("10.1.1.5", "n2"))),
                         NODE, (N1, N1B))
    bes = (b("10.1.0.5"), b("10.1.1.5", local=False))
    ext = Service(bes, local_only=True, external=True, name="demo/lb")
    assert dict(plan.table) == {
        k("10.96.0.10", 80): Service(bes, name="demo/lb"),
        k("192.0.2.1", 30080): Service(bes, True, True, True, name="demo/lb"),
        k("198.51.100.1", 30080): Service(bes, True, True, True, name="demo/lb"),
        k("203.0.113.7", 80): ext,
        k("203.0.113.9", 80): ext,
    }
    # Local: only this node's endpoint is eligible on external keys
    assert plan.table[k("203.0.113.7", 80)].eligible() == (b("10.1.0.5"),)


def test_nodeport_listens_on_the_node_addresses_of_the_services_families() -> None:
    n6 = A6("2001:db8::1")
    port = (ServicePort(80, "TCP", "http", 8080, node_port=30090),)
    v4 = svc("v4", type="NodePort", ports=port)
    v6 = svc("v6", type="NodePort", ports=port, cluster_ips=(A6("fd00:96::10"),))
    dual = svc("dual", type="NodePort", ports=port, ip_families=(6, 4),
               cluster_ips=(A6("fd00:96::11"), A4("10.96.0.11")))
    objs = [sl("v4", ep("10.1.0.5")), sl("v6", ep("fd00:1::5"), fam="IPv6"),
            sl("dual", ep("10.1.0.6")), sl("dual", ep("fd00:1::6"), name="dual-b", fam="IPv6")]
    for s_, want in ((v4, {N1}), (v6, {n6}), (dual, {N1, n6})):
        plan = plan_services(snap(s_, *objs), NODE, (N1, n6))
        nodeports = {key.vip for key, e in plan.table.items() if e.nodeport}
        assert nodeports == want, s_.meta.name
        for key, e in plan.table.items():  # each key's backends are of its family
            assert e.backends and all(b_.ip.version == key.vip.version for b_ in e.backends)


def test_unmanaged_lb_class_gets_no_lb_ip_but_keeps_nodeport() -> None:
    s = svc("other", type="LoadBalancer", load_balancer_class="example.com/other",
            ports=(ServicePort(80, "TCP", "http", 8080, node_port=30081),),
            status_ingress=(A4("203.0.113.8"),))
    plan = plan_services(snap(s, sl("other", ep("10.1.0.5"))), NODE, (N1,))
    bes = (b("10.1.0.5"),)
    assert dict(plan.table) == {
        k("10.96.0.10", 80): Service(bes, name="demo/other"),
        k("192.0.2.1", 30081): Service(bes, False, True, True, name="demo/other"),
    }


def test_internal_traffic_policy_local_and_client_ip_affinity() -> None:
    s = svc("sticky", internal_traffic_policy="Local", session_affinity="ClientIP",
            session_affinity_timeout=600)
    plan = plan_services(snap(s, sl("sticky", ep("10.1.1.5", "n2"))), NODE, (N1,))
    assert dict(plan.table) == {
        k("10.96.0.10", 80): Service((b("10.1.1.5", local=False),), local_only=True,
                                     affinity_timeout=600, name="demo/sticky"),
    }
    assert plan.table[k("10.96.0.10", 80)].eligible() == ()  # no local endpoint: nothing


def test_endpoint_states_and_kube_proxy_fallback() -> None:
    eps = (ep("10.1.0.5", ready=False, serving=True, terminating=True),
           ep("10.1.0.6", ready=False, serving=False, terminating=True),
           ep("10.1.0.7", ready=False, serving=False))
    plan = plan_services(snap(svc("t"), sl("t", *eps)), NODE)
    s = plan.table[k("10.96.0.10", 80)]
    assert s.backends == (b("10.1.0.5", state=T), b("10.1.0.6", state=NS),
                          b("10.1.0.7", state=NS))
    assert s.eligible() == (b("10.1.0.5", state=T),)  # no ready one: serving-terminating
    plan2 = plan_services(snap(svc("t"), sl("t", *eps, ep("10.1.0.8"))), NODE)
    assert plan2.table[k("10.96.0.10", 80)].eligible() == (b("10.1.0.8"),)


def test_target_ports_by_name_and_number_and_udp() -> None:
    s = svc("multi", ports=(ServicePort(53, "UDP", "dns", "dns"),
                            ServicePort(53, "TCP", "dns-tcp", "dns-tcp"),
                            ServicePort(9090, "TCP", "", 9091)))
    ports = (EndpointPort(5353, "UDP", "dns"), EndpointPort(5354, "TCP", "dns-tcp"),
             EndpointPort(9091, "TCP", ""))
    plan = plan_services(snap(s, sl("multi", ep("10.1.0.5"), ports=ports)), NODE)
    assert dict(plan.table) == {
        k("10.96.0.10", 53, UDP): Service((b("10.1.0.5", 5353),), name="demo/multi"),
        k("10.96.0.10", 53): Service((b("10.1.0.5", 5354),), name="demo/multi"),
        k("10.96.0.10", 9090): Service((b("10.1.0.5", 9091),), name="demo/multi"),
    }
    assert plan.problems == {}


def test_slice_without_ports_uses_numeric_target_port() -> None:
    s = svc("np", ports=(ServicePort(80, "TCP", "", 8081),))
    plan = plan_services(snap(s, sl("np", ep("10.1.0.5"), ports=())), NODE)
    assert dict(plan.table) == {k("10.96.0.10", 80): Service((b("10.1.0.5", 8081),),
                                                             name="demo/np")}


def test_two_slices_merge_and_dual_stack_keeps_families_apart() -> None:
    s = svc("ds", cluster_ips=(A4("10.96.0.10"), A6("fd00::10")))
    objs = (s, sl("ds", ep("10.1.0.5"), name="ds-a"), sl("ds", ep("10.1.1.5", "n2"), name="ds-b"),
            sl("ds", ep("fd01::5"), name="ds-c", fam="IPv6"))
    plan = plan_services(snap(*objs), NODE)
    assert dict(plan.table) == {
        k("10.96.0.10", 80): Service((b("10.1.0.5"), b("10.1.1.5", local=False)),
                                     name="demo/ds"),
        k("fd00::10", 80): Service((b("fd01::5"),), name="demo/ds"),
    }


def test_bad_input_is_reported_per_service_and_others_still_planned() -> None:
    objs = (
        svc("noports", ports=()),
        svc("sctp", cluster_ips=(A4("10.96.0.11"),),
            ports=(ServicePort(80, "SCTP", "s"), ServicePort(81, "TCP", "web", 8080))),
        svc("wrongfam", cluster_ips=(A4("10.96.0.12"),)),
        sl("wrongfam", ep("10.1.0.5"), ep("fd01::9")),
        svc("dup", cluster_ips=(A4("10.96.0.10"),)),  # same VIP:port as `web`, sorts first
        svc("web"),
        sl("sctp", ep("10.1.0.6"), ports=(EndpointPort(8080, "TCP", "web"),)),
        svc("unmatched", cluster_ips=(A4("10.96.0.13"),)),
        sl("unmatched", ep("10.1.0.7"), ports=(EndpointPort(9999, "TCP", "other"),)),
    )
    plan = plan_services(snap(*objs), NODE)
    assert dict(plan.table) == {
        k("10.96.0.10", 80): Service((), name="demo/dup"),
        k("10.96.0.11", 81): Service((b("10.1.0.6"),), name="demo/sctp"),
        k("10.96.0.12", 80): Service((b("10.1.0.5"),), name="demo/wrongfam"),
        k("10.96.0.13", 80): Service((), name="demo/unmatched"),
    }
    assert set(plan.problems) == {"demo/noports", "demo/sctp", "demo/wrongfam", "demo/web",
                                  "demo/unmatched"}
    assert "no ports" in plan.problems["demo/noports"][0]
    assert "SCTP" in plan.problems["demo/sctp"][0]
    assert "fd01::9" in plan.problems["demo/wrongfam"][0]
    assert "IPv6 in an IPv4 slice" in plan.problems["demo/wrongfam"][0]
    assert "already served by service demo/dup" in plan.problems["demo/web"][0]
    assert "no TCP port matching" in plan.problems["demo/unmatched"][0]


def test_headless_and_external_name_program_nothing() -> None:
    plan = plan_services(snap(svc("h", cluster_ips=()), svc("x", type="ExternalName",
                                                            cluster_ips=())), NODE)
    assert dict(plan.table) == {} and plan.problems == {}


def test_pure_and_deterministic() -> None:
    objs = (svc("web"), sl("web", ep("10.1.0.6"), ep("10.1.0.5")))
    assert plan_services(snap(*objs), NODE) == plan_services(snap(*reversed(objs)), NODE)


def test_memo_gives_the_same_plan_and_keeps_unchanged_entries_identical() -> None:
    web, api, dup = svc("web"), svc("api", cluster_ips=(A4("10.96.0.20"),)), svc(
        "dup", cluster_ips=(A4("10.96.0.10"),))
    s_web, s_api = sl("web", ep("10.1.0.5")), sl("api", ep("10.1.0.6"))
    memo = PlanMemo()
    passes = [
        (web, api, s_web, s_api),
        (web, api, s_web, s_api),  # the same objects
        (svc("web"), svc("api", cluster_ips=(A4("10.96.0.20"),)), s_web,
         sl("api", ep("10.1.0.7"))),  # web equal (new objects), api's slice changed
        (dup, web, api, s_web),  # dup now claims web's key; api lost its slice
        (web, s_web),  # api and dup gone
    ]
    prev = None
    for objs in passes:
        plan = plan_services(snap(*objs), NODE, (N1,), memo)
        assert plan == plan_services(snap(*objs), NODE, (N1,))
        if prev is not None and k("10.96.0.10", 80) in prev.table:
            old, new = prev.table[k("10.96.0.10", 80)], plan.table[k("10.96.0.10", 80)]
            assert (old is new) == (old == new)
        prev = plan
    assert memo.hits >= 3
    assert set(memo._last) == {"demo/web"}
    # another node or other node addresses: not the memo's entries
    other = plan_services(snap(web, s_web), "n2", (N1,), memo)
    assert other == plan_services(snap(web, s_web), "n2", (N1,))
    assert not other.table[k("10.96.0.10", 80)].backends[0].local
