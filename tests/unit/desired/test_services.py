"""The desired service table: every service type, traffic policies, endpoint semantics,
target-port resolution and per-service problems, checked against exact tables."""

from __future__ import annotations

from ipaddress import IPv4Address as A4
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from ipaddress import IPv6Address as A6

import yaml

from bpf.table import Backend, BackendState, Proto, Service, ServiceKey, validate
from controller.desired.services import PlanMemo, plan_services
from controller.model.k8s import Endpoint, EndpointPort, EndpointSlice, Node, ServicePort
from controller.model.k8s import Service as Svc
from controller.model.meta import Meta
from controller.store import Snapshot
from tests.unit.manifests import lb_service, snapshot

NODE = "n1"
N1 = A4("192.0.2.1")
N1B = A4("198.51.100.1")
R, T = BackendState.READY, BackendState.TERMINATING
NS = BackendState.NOT_SERVING
TCP, UDP = Proto.TCP, Proto.UDP
IPNetwork = IPv4Network | IPv6Network


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


# ---------------------------------------------------------------- loadBalancerSourceRanges

def net(text: str) -> IPNetwork:
    return ip_network(text)


SPEC_FIELD = "spec.loadBalancerSourceRanges"
ANN_FIELD = 'metadata.annotations["service.beta.kubernetes.io/load-balancer-source-ranges"]'


def fail_closed(family: int, field: str = SPEC_FIELD) -> str:
    return (f"{field}: no valid IPv{family} range, so no client may connect to the "
            f"service's IPv{family} load-balancer IPs")


def ranged(name: str, ranges: tuple[IPNetwork, ...] | None, **kw: object) -> Svc:
    kw.setdefault("type", "LoadBalancer")
    kw.setdefault("ports", (ServicePort(80, "TCP", "http", 8080, node_port=30080),))
    kw.setdefault("status_ingress", (A4("203.0.113.7"),))
    return svc(name, load_balancer_source_ranges=ranges, **kw)


def test_source_ranges_only_on_load_balancer_ip_entries() -> None:
    ranges = (net("10.0.0.0/8"), net("192.0.2.0/24"), net("2001:db8::/32"))
    s = ranged("lb", ranges, external_ips=(A4("203.0.113.9"),),
               ports=(ServicePort(80, "TCP", "http", 8080, node_port=30080),
                      ServicePort(53, "UDP", "dns", 8080)))
    ports = (EndpointPort(8080, "TCP", "http"), EndpointPort(8080, "UDP", "dns"))
    plan = plan_services(snap(s, sl("lb", ep("10.1.0.5"), ports=ports)), NODE, (N1,))
    bes, udp_bes = (b("10.1.0.5"),), (b("10.1.0.5"),)
    v4 = (net("10.0.0.0/8"), net("192.0.2.0/24"))
    assert dict(plan.table) == {
        k("10.96.0.10", 80): Service(bes, name="demo/lb"),
        k("192.0.2.1", 30080): Service(bes, False, True, True, name="demo/lb"),
        k("203.0.113.7", 80): Service(bes, external=True, name="demo/lb", source_ranges=v4),
        k("203.0.113.9", 80): Service(bes, external=True, name="demo/lb"),
        k("10.96.0.10", 53, UDP): Service(udp_bes, name="demo/lb"),
        k("203.0.113.7", 53, UDP): Service(udp_bes, external=True, name="demo/lb",
                                           source_ranges=v4),
        k("203.0.113.9", 53, UDP): Service(udp_bes, external=True, name="demo/lb"),
    }
    assert plan.problems == {}
    for key, entry in plan.table.items():  # what the datapath side will accept
        assert validate(key, entry) is None


def test_source_ranges_of_other_services_do_not_apply() -> None:
    ranges = (net("10.0.0.0/8"),)
    objs = (
        # not rackroute's LB: its ingress IP is not served at all, nodeport stays open
        ranged("other", ranges, load_balancer_class="example.com/other",
               cluster_ips=(A4("10.96.0.11"),)),
        # not a LoadBalancer (the field is only meaningful for one): nothing restricted
        ranged("np", ranges, type="NodePort", status_ingress=(), cluster_ips=(A4("10.96.0.12"),),
               ports=(ServicePort(80, "TCP", "http", 8080, node_port=30081),)),
        ranged("cip", ranges, type="ClusterIP", status_ingress=(A4("203.0.113.8"),),
               cluster_ips=(A4("10.96.0.13"),)),
    )
    plan = plan_services(snap(*objs), NODE, (N1,))
    assert {key: e.source_ranges for key, e in plan.table.items()} == {
        k("10.96.0.11", 80): None, k("192.0.2.1", 30080): None,
        k("10.96.0.12", 80): None, k("192.0.2.1", 30081): None,
        k("10.96.0.13", 80): None,
    }
    assert plan.problems == {}


def test_dual_stack_load_balancer_ips_get_the_ranges_of_their_family() -> None:
    ingress = (A4("203.0.113.7"), A6("2001:db8:7::7"))
    cips = (A4("10.96.0.10"), A6("fd00::10"))
    both = ranged("ds", (net("10.0.0.0/8"), net("fd00:1::/48"), net("2001:db8:1::/48"),
                         net("fd00:1::/48")),
                  cluster_ips=cips, status_ingress=ingress, ip_families=(4, 6))
    plan = plan_services(snap(both), NODE, (N1, A6("2001:db8::1")))
    assert plan.table[k("203.0.113.7", 80)].source_ranges == (net("10.0.0.0/8"),)
    # sorted and distinct, as the table wants, whatever order the model gave
    assert plan.table[k("2001:db8:7::7", 80)].source_ranges == (
        net("2001:db8:1::/48"), net("fd00:1::/48"))
    assert plan.table[k("fd00::10", 80)].source_ranges is None
    assert all(e.source_ranges is None for key, e in plan.table.items() if e.nodeport)
    assert plan.problems == {}


def test_ranges_given_but_none_of_a_family_fail_closed_with_a_problem() -> None:
    ingress = (A4("203.0.113.7"), A6("2001:db8:7::7"), A6("2001:db8:7::8"))
    two_ports = (ServicePort(80, "TCP", "http", 8080), ServicePort(443, "TCP", "https", 8080))
    v4only = ranged("v4only", (net("10.0.0.0/8"),), cluster_ips=(A4("10.96.0.10"),),
                    status_ingress=ingress, ports=two_ports)
    plan = plan_services(snap(v4only), NODE, (N1,))
    assert {key: e.source_ranges for key, e in plan.table.items() if e.external} == {
        k("203.0.113.7", 80): (net("10.0.0.0/8"),),
        k("203.0.113.7", 443): (net("10.0.0.0/8"),),
        k("2001:db8:7::7", 80): (), k("2001:db8:7::8", 80): (),
        k("2001:db8:7::7", 443): (), k("2001:db8:7::8", 443): (),
    }
    assert plan.problems == {"demo/v4only": (fail_closed(6),)}  # once, however many keys
    # none valid at all (every entry was invalid): no client of either family
    nothing = ranged("nothing", (), status_ingress=ingress[:2],
                     load_balancer_source_ranges_field=ANN_FIELD)
    plan = plan_services(snap(nothing), NODE, (N1,))
    assert plan.table[k("203.0.113.7", 80)].source_ranges == ()
    assert plan.table[k("2001:db8:7::7", 80)].source_ranges == ()
    assert plan.table[k("10.96.0.10", 80)].source_ranges is None
    assert plan.problems == {"demo/nothing": (fail_closed(4, ANN_FIELD),
                                              fail_closed(6, ANN_FIELD))}
    # no IPv6 load-balancer IP: no IPv6 entry restricted, no problem
    plan = plan_services(snap(ranged("v4", (net("10.0.0.0/8"),))), NODE, (N1,))
    assert plan.problems == {}


def test_ranges_from_manifests_annotation_and_spec_winning() -> None:
    def manifest(name: str, spec_ranges: list[str] | None, annotation: str | None) -> str:
        doc = lb_service(name, cluster_ip="10.96.0.10" if name == "a" else "10.96.0.11",
                         ingress=["203.0.113.7" if name == "a" else "203.0.113.8",
                                  "2001:db8::7" if name == "a" else "2001:db8::8"])
        if spec_ranges is not None:
            doc["spec"]["loadBalancerSourceRanges"] = spec_ranges
        if annotation is not None:
            doc["metadata"]["annotations"] = {
                "service.beta.kubernetes.io/load-balancer-source-ranges": annotation}
        return yaml.safe_dump(doc)

    text = "---\n".join([
        manifest("a", None, "198.51.100.7/24, 10.0.0.0/8"),  # the legacy annotation
        manifest("b", ["192.0.2.0/24"], "10.0.0.0/8, fd00::/8"),  # the spec field wins
    ])
    plan = plan_services(snapshot(text), NODE, (N1,))
    assert plan.table[k("203.0.113.7", 80)].source_ranges == (
        net("10.0.0.0/8"), net("198.51.100.0/24"))
    assert plan.table[k("2001:db8::7", 80)].source_ranges == ()
    assert plan.table[k("203.0.113.8", 80)].source_ranges == (net("192.0.2.0/24"),)
    assert plan.table[k("2001:db8::8", 80)].source_ranges == ()
    assert plan.problems == {"demo/a": (fail_closed(6, ANN_FIELD),),
                             "demo/b": (fail_closed(6),)}


def test_memo_reuses_entries_until_the_ranges_change() -> None:
    def lb(ranges: tuple[IPNetwork, ...] | None, field: str = "") -> Svc:
        return ranged("lb", ranges, load_balancer_source_ranges_field=field)

    s_lb = sl("lb", ep("10.1.0.5"))
    lb_key = k("203.0.113.7", 80)
    memo = PlanMemo()
    first = plan_services(snap(lb((net("10.0.0.0/8"),)), s_lb), NODE, (N1,), memo)
    # an equal Service (a new object, as a re-parse gives): the very same entries
    again = plan_services(snap(lb((net("10.0.0.0/8"),)), s_lb), NODE, (N1,), memo)
    assert again.table[lb_key] is first.table[lb_key]
    assert memo.hits == 1
    passes: list[tuple[tuple[IPNetwork, ...] | None, str]] = [
        ((net("10.0.0.0/8"), net("192.0.2.0/24")), ""),  # a range added
        ((net("192.0.2.0/24"),), ""),  # one removed
        ((net("192.0.2.0/24"),), ANN_FIELD),  # the same, from the annotation
        (None, ""),  # no restriction any more
        ((), ""),  # nothing valid
    ]
    prev = again
    for ranges, field in passes:
        objs = (lb(ranges, field), s_lb)
        plan = plan_services(snap(*objs), NODE, (N1,), memo)
        assert plan == plan_services(snap(*objs), NODE, (N1,))
        assert plan.table[lb_key].source_ranges == ranges
        assert plan.table[lb_key] is not prev.table[lb_key]
        prev = plan
    assert memo.hits == 1
    # the problem names the field the ranges came from, even when only the field changed
    fields = [plan_services(snap(lb((), f), s_lb), NODE, (N1,), memo).problems["demo/lb"]
              for f in (SPEC_FIELD, ANN_FIELD)]
    assert fields == [(fail_closed(4),), (fail_closed(4, ANN_FIELD),)]


# topology aware routing (EndpointSlice hints.forZones, the node's zone label)

def zep(addr: str, node: str, *zones: str, ready: bool = True) -> Endpoint:
    return Endpoint((ip_address(addr),), ready, True, not ready, node, "",  # (serving)
                    tuple(zones) if zones else None)


def zone_node(name: str, zone: str | None) -> Node:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return Node(Meta("Node", name, labels=labels))


def test_hinted_endpoints_keep_a_node_in_its_zone() -> None:
    eps = (zep("10.1.0.5", NODE, "rack-a"), zep("10.1.1.5", "n2", "rack-b"),
           zep("10.1.2.5", "n3", "rack-a"), zep("10.1.3.5", "n4", "rack-b", ready=False))
    s = svc("web", type="LoadBalancer", status_ingress=(A4("203.0.113.7"),))
    plan = plan_services(snap(s, sl("web", *eps), zone_node(NODE, "rack-a")), NODE, (N1,))
    want = (b("10.1.0.5"), b("10.1.2.5", local=False), b("10.1.3.5", local=False, state=T))
    assert plan.table[k("10.96.0.10", 80)].backends == want  # ClusterIP
    assert plan.table[k("203.0.113.7", 80)].backends == want  # LB IP, Cluster policy
    assert plan.table[k("10.96.0.10", 80)].eligible() == want[:2]
    other = plan_services(snap(s, sl("web", *eps), zone_node(NODE, "rack-b")), NODE, (N1,))
    assert [str(x.ip) for x in other.table[k("10.96.0.10", 80)].eligible()] == ["10.1.1.5"]


def test_hints_do_not_apply_unless_every_ready_endpoint_has_them_and_one_is_ours() -> None:
    every = {"10.1.0.5", "10.1.1.5", "10.1.2.5"}

    def used(*eps: Endpoint, zone: str | None = "rack-a", **kw: object) -> set[str]:
        plan = plan_services(snap(svc("web", **kw), sl("web", *eps), zone_node(NODE, zone)),
                             NODE, (N1,))
        return {str(x.ip) for x in plan.table[k("10.96.0.10", 80)].eligible()}

    # one ready endpoint without hints: the hints are not used
    assert used(zep("10.1.0.5", NODE, "rack-a"), zep("10.1.1.5", "n2", "rack-b"),
                zep("10.1.2.5", "n3")) == every
    # no endpoint for this node's zone
    assert used(zep("10.1.0.5", NODE, "rack-b"), zep("10.1.1.5", "n2", "rack-b"),
                zep("10.1.2.5", "n3", "rack-c")) == every
    # a node without a zone label
    assert used(zep("10.1.0.5", NODE, "rack-a"), zep("10.1.1.5", "n2", "rack-b"),
                zep("10.1.2.5", "n3", "rack-a"), zone=None) == every
    # internalTrafficPolicy Local keeps to the node: hints do not apply
    assert used(zep("10.1.0.5", NODE, "rack-b"), zep("10.1.1.5", "n2", "rack-a"),
                zep("10.1.2.5", "n3", "rack-a"), internal_traffic_policy="Local") == {
                    "10.1.0.5"}


def test_the_memo_replans_when_the_nodes_zone_changes() -> None:
    memo = PlanMemo()
    eps = (zep("10.1.0.5", NODE, "rack-a"), zep("10.1.1.5", "n2", "rack-b"))
    first = plan_services(snap(svc("web"), sl("web", *eps), zone_node(NODE, "rack-a")),
                          NODE, (N1,), memo)
    again = plan_services(snap(svc("web"), sl("web", *eps), zone_node(NODE, "rack-b")),
                          NODE, (N1,), memo)
    assert [str(x.ip) for x in first.table[k("10.96.0.10", 80)].backends] == ["10.1.0.5"]
    assert [str(x.ip) for x in again.table[k("10.96.0.10", 80)].backends] == ["10.1.1.5"]
    assert memo.misses == 2


def test_zone_hints_are_parsed() -> None:
    from controller.model.parse import parse_object

    doc = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "a", "namespace": "n",
                        "labels": {"kubernetes.io/service-name": "s"}},
           "addressType": "IPv4", "ports": [{"port": 80}],
           "endpoints": [{"addresses": ["10.0.0.1"],
                          "hints": {"forZones": [{"name": "rack-b"}, {"name": "rack-a"}]}},
                         {"addresses": ["10.0.0.2"]}]}
    got = parse_object(doc).obj
    assert isinstance(got, EndpointSlice)
    assert [e.zones for e in got.endpoints] == [("rack-a", "rack-b"), None]
    doc["endpoints"][0]["hints"] = {"forZones": [{"zone": "x"}]}  # type: ignore[index]
    assert parse_object(doc).errors == [
        "EndpointSlice n/a: endpoints[0].hints.forZones[0].name: required"]


def test_services_of_another_proxy_are_left_to_it() -> None:
    theirs = Svc(Meta("Service", "theirs", "demo",
                      labels={"service.kubernetes.io/service-proxy-name": "other"}),
                 cluster_ips=(A4("10.96.0.20"),), ports=(ServicePort(80, "TCP", "http", "web"),))
    s = snap(svc("web"), theirs, sl("web", ep("10.1.0.5")), sl("theirs", ep("10.1.0.6")))
    assert set(plan_services(s, NODE, (N1,)).table) == {k("10.96.0.10", 80)}
    assert set(plan_services(s, NODE, (N1,), proxy_name="other").table) == {
        k("10.96.0.20", 80)}
