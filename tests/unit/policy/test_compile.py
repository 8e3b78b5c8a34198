"""The NetworkPolicy compiler: isolation per direction, rules adding up, selector peers in
their namespaces, ipBlock less its excepts, named ports on the right pod, nested prefixes
carrying the broad grants, ranges merged, fail closed past the range limit. And, over
random clusters and policies, the compiled longest-prefix entries decide every probe as a
direct reading of the Kubernetes rules does."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.desired.policy import (
    ALL_TRAFFIC,
    PROTO_NUMBERS,
    PolicyEntry,
    PortRange,
    allowed,
    compile_policies,
    has_address,
    ip_block_prefixes,
    merge_ranges,
)
from controller.model.meta import LabelSelector, Meta, Requirement, frozen_map
from controller.model.policy import (
    ContainerPort,
    IPBlock,
    Namespace,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)

A = ipaddress.ip_address
N = ipaddress.ip_network
TCP, UDP = PROTO_NUMBERS["TCP"], PROTO_NUMBERS["UDP"]


def ns(name: str, **labels: str) -> Namespace:
    return Namespace(Meta("Namespace", name, labels=frozen_map(
        {"kubernetes.io/metadata.name": name, **labels})))


def pod(name: str, namespace: str, ip: str, node: str = "n1", ports: Iterable[ContainerPort] = (),
        **labels: str) -> Pod:
    return Pod(Meta("Pod", name, namespace, labels=frozen_map(labels)), node, (A(ip),),
               tuple(ports))


def sel(**labels: str) -> LabelSelector:
    return LabelSelector(tuple(sorted(labels.items())))


def policy(name: str, namespace: str, selector: LabelSelector,
           ingress: Iterable[PolicyRule] | None = None,
           egress: Iterable[PolicyRule] | None = None,
           types: tuple[str, ...] | None = None) -> NetworkPolicy:
    t = types or (("Ingress",) if ingress is not None else ()) + (
        ("Egress",) if egress is not None else ())
    return NetworkPolicy(Meta("NetworkPolicy", name, namespace), selector, t,
                         tuple(ingress or ()), tuple(egress or ()))


NAMESPACES = {n.name: n for n in (ns("web", team="a"), ns("db", team="b"), ns("ops"))}
FRONT = pod("front", "web", "10.0.1.10", app="front")
API = pod("api", "web", "10.0.1.11", ports=[ContainerPort(8080, "TCP", "http")], app="api")
DB = pod("db", "db", "10.0.2.20", node="n2", ports=[ContainerPort(5432, "TCP", "pg")],
         app="db")
OPS = pod("probe", "ops", "10.0.3.30", node="n2", app="probe")
PODS = [FRONT, API, DB, OPS]


def plan(*policies: NetworkPolicy, pods: list[Pod] = PODS,
         namespaces: Mapping[str, Namespace] = NAMESPACES, node: str = "n1",
         max_ranges: int = 8):  # noqa: ANN201
    return compile_policies(policies, pods, namespaces, node, max_ranges)


def test_no_policy_no_isolation_and_a_policy_without_rules_denies_all() -> None:
    assert plan().endpoints == {}
    got = plan(policy("deny", "web", sel(app="api"), ingress=[]))
    ep = got.endpoints["web/api"]
    assert ep.ingress == () and ep.egress is None and ep.policies == ("web/deny",)
    assert not allowed(ep.ingress, A("10.0.1.10"), TCP, 8080)
    assert allowed(ep.egress, A("192.0.2.1"), UDP, 53)  # egress not isolated
    assert "web/front" not in got.endpoints  # not selected: not isolated at all


def test_selector_peers_resolve_in_their_namespaces() -> None:
    same_ns = PolicyRule((PolicyPeer(pod_selector=sel(app="front")),))
    by_ns = PolicyRule((PolicyPeer(namespace_selector=sel(team="b")),))
    both = PolicyRule((PolicyPeer(pod_selector=sel(app="probe"),
                                  namespace_selector=LabelSelector()),))
    ep = plan(policy("p", "web", sel(app="api"), ingress=[same_ns, by_ns, both])
              ).endpoints["web/api"]
    assert {e.prefix for e in ep.ingress or ()} == {N("10.0.1.10/32"), N("10.0.2.20/32"),
                                                    N("10.0.3.30/32")}
    assert all(e.ranges == (ALL_TRAFFIC,) for e in ep.ingress or ())
    # a pod selector alone looks in the policy's namespace only: the db pod's labels in
    # another namespace do not count
    only = plan(policy("p", "web", sel(app="api"),
                       ingress=[PolicyRule((PolicyPeer(pod_selector=sel(app="db")),))]))
    assert only.endpoints["web/api"].ingress == ()


def test_ip_blocks_less_their_excepts_and_ports() -> None:
    rule = PolicyRule((PolicyPeer(ip_block=IPBlock(N("10.0.0.0/8"), (N("10.0.2.0/24"),))),),
                      (PolicyPort("TCP", 443), PolicyPort("UDP", 5000, 5010)))
    ep = plan(policy("p", "web", sel(app="api"), egress=[rule])).endpoints["web/api"]
    assert ep.ingress is None
    assert allowed(ep.egress, A("10.9.9.9"), TCP, 443)
    assert allowed(ep.egress, A("10.9.9.9"), UDP, 5005)
    assert not allowed(ep.egress, A("10.9.9.9"), UDP, 5011)
    assert not allowed(ep.egress, A("10.9.9.9"), TCP, 80)
    assert not allowed(ep.egress, A("10.0.2.20"), TCP, 443)  # the except
    assert not allowed(ep.egress, A("192.0.2.1"), TCP, 443)
    assert ip_block_prefixes(N("10.0.0.0/30"), [N("10.0.0.1/32")]) == [
        N("10.0.0.0/32"), N("10.0.0.2/31")]


def test_named_ports_resolve_on_the_pod_the_traffic_goes_to() -> None:
    ingress = PolicyRule(None, (PolicyPort("TCP", "http"), PolicyPort("TCP", "pg")))
    ep = plan(policy("p", "web", sel(app="api"), ingress=[ingress])).endpoints["web/api"]
    # the api pod declares http (8080), not pg
    assert allowed(ep.ingress, A("203.0.113.5"), TCP, 8080)
    assert not allowed(ep.ingress, A("203.0.113.5"), TCP, 5432)
    egress = PolicyRule(None, (PolicyPort("TCP", "pg"),))
    ep = plan(policy("p", "web", sel(app="api"), egress=[egress])).endpoints["web/api"]
    assert allowed(ep.egress, A("10.0.2.20"), TCP, 5432)  # the db pod's pg
    assert not allowed(ep.egress, A("10.0.3.30"), TCP, 5432)  # declares no pg
    assert not allowed(ep.egress, A("192.0.2.1"), TCP, 5432)  # no pod: no name


def test_rules_and_policies_add_up_and_nested_prefixes_keep_the_broad_grant() -> None:
    broad = PolicyRule((PolicyPeer(ip_block=IPBlock(N("10.0.0.0/8"))),), (PolicyPort("TCP", 80),))
    narrow = PolicyRule((PolicyPeer(pod_selector=sel(app="front")),), (PolicyPort("TCP", 22),))
    got = plan(policy("a", "web", sel(app="api"), ingress=[broad]),
               policy("b", "web", LabelSelector(), ingress=[narrow]))
    ep = got.endpoints["web/api"]
    assert ep.policies == ("web/a", "web/b")
    front = next(e for e in ep.ingress or () if e.prefix == N("10.0.1.10/32"))
    assert front.ranges == (PortRange(TCP, 22, 22), PortRange(TCP, 80, 80))
    assert allowed(ep.ingress, A("10.0.1.10"), TCP, 80)  # the /8's grant holds in the /32
    assert allowed(ep.ingress, A("10.0.1.10"), TCP, 22)
    assert not allowed(ep.ingress, A("10.0.1.11"), TCP, 22)
    # the front pod: selected by b only
    assert got.endpoints["web/front"].policies == ("web/b",)


def test_ranges_merge_and_too_many_fail_closed_with_a_problem() -> None:
    assert merge_ranges([PortRange(TCP, 10, 20), PortRange(TCP, 21, 30),
                         PortRange(UDP, 1, 2), PortRange(TCP, 5, 12)]) == (
        PortRange(TCP, 5, 30), PortRange(UDP, 1, 2))
    assert merge_ranges([PortRange(TCP, 1, 2), ALL_TRAFFIC]) == (ALL_TRAFFIC,)
    ports = tuple(PolicyPort("TCP", p) for p in range(100, 120, 2))  # 10 ranges
    rule = PolicyRule((PolicyPeer(pod_selector=sel(app="front")),), ports)
    got = plan(policy("many", "web", sel(app="api"), ingress=[rule]), max_ranges=8)
    (entry,) = got.endpoints["web/api"].ingress or ()
    assert entry == PolicyEntry(N("10.0.1.10/32"), ())  # refused, never wider
    ((key, msg),) = got.problems
    assert key == "web/many" and "10.0.1.10/32" in msg and "more than 8" in msg
    assert plan(policy("many", "web", sel(app="api"), ingress=[rule]),
                max_ranges=10).problems == ()


def test_host_network_and_ended_pods_are_neither_endpoints_nor_peers() -> None:
    host = Pod(Meta("Pod", "h", "web", labels=frozen_map({"app": "front"})), "n1",
               (A("10.0.0.5"),), host_network=True)
    done = Pod(Meta("Pod", "d", "web", labels=frozen_map({"app": "front"})), "n1",
               (A("10.0.1.99"),), phase="Succeeded")
    assert not has_address(host) and not has_address(done)
    rule = PolicyRule((PolicyPeer(pod_selector=sel(app="front")),))
    got = plan(policy("p", "web", LabelSelector(), ingress=[rule]),
               pods=[*PODS, host, done])
    assert set(got.endpoints) == {"web/api", "web/front"}
    assert {e.prefix for e in got.endpoints["web/api"].ingress or ()} == {
        N("10.0.1.10/32")}


def test_ipv6_peers_and_expressions() -> None:
    v6 = pod("v6", "web", "fd00::10", app="front", tier="x")
    rule = PolicyRule((PolicyPeer(pod_selector=LabelSelector(
        (), (Requirement("tier", "In", frozenset({"x"})),))),))
    ep = plan(policy("p", "web", sel(app="api"), ingress=[rule]),
              pods=[*PODS, v6]).endpoints["web/api"]
    assert allowed(ep.ingress, A("fd00::10"), UDP, 1)
    assert not allowed(ep.ingress, A("fd00::11"), UDP, 1)
    assert not allowed(ep.ingress, A("10.0.1.10"), UDP, 1)


# ------------------------------------------------- against a direct reading of the rules


def reference(policies: list[NetworkPolicy], pods: list[Pod],
              namespaces: Mapping[str, Namespace], endpoint: Pod, direction: str,
              peer: ipaddress.IPv4Address | ipaddress.IPv6Address, proto: int,
              port: int) -> bool:
    kind = "Ingress" if direction == "ingress" else "Egress"
    selecting = [p for p in policies if p.meta.namespace == endpoint.meta.namespace
                 and p.pod_selector.matches(endpoint.meta.labels) and kind in p.policy_types]
    if not selecting:
        return True
    peer_pod = next((p for p in pods if has_address(p) and peer in p.ips), None)

    def ns_labels(name: str) -> Mapping[str, str]:
        n = namespaces.get(name)
        return n.meta.labels if n else {"kubernetes.io/metadata.name": name}

    def peer_matches(pp: PolicyPeer, pol: NetworkPolicy) -> bool:
        if pp.ip_block is not None:
            b = pp.ip_block
            return (peer.version == b.cidr.version and peer in b.cidr
                    and not any(peer.version == e.version and peer in e for e in b.excepts))
        if peer_pod is None:
            return False
        if pp.namespace_selector is None:
            if peer_pod.meta.namespace != pol.meta.namespace:
                return False
        elif not pp.namespace_selector.matches(ns_labels(peer_pod.meta.namespace)):
            return False
        return pp.pod_selector is None or pp.pod_selector.matches(peer_pod.meta.labels)

    for pol in selecting:
        for rule in pol.ingress if direction == "ingress" else pol.egress:
            if rule.peers is not None and not any(peer_matches(pp, pol) for pp in rule.peers):
                continue
            if not rule.ports:
                return True
            for pp in rule.ports:
                if PROTO_NUMBERS[pp.protocol] != proto:
                    continue
                if pp.port is None:
                    return True
                if isinstance(pp.port, int):
                    if pp.port <= port <= (pp.end_port or pp.port):
                        return True
                    continue
                target = endpoint if direction == "ingress" else peer_pod
                if target is not None and any(
                        c.name == pp.port and PROTO_NUMBERS[c.protocol] == proto
                        and c.port == port for c in target.ports):
                    return True
    return False


LABELS = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]),
                         max_size=2)
SELECTOR = st.builds(lambda d: LabelSelector(tuple(sorted(d.items()))), LABELS)
NS_NAMES = ["red", "blue"]
PORT = st.one_of(
    st.builds(PolicyPort, st.sampled_from(["TCP", "UDP"]), st.none()),
    st.builds(lambda pr, p, w: PolicyPort(pr, p, p + w if w else None),
              st.sampled_from(["TCP", "UDP"]), st.integers(1, 30), st.integers(0, 5)),
    st.builds(PolicyPort, st.sampled_from(["TCP", "UDP"]), st.sampled_from(["web", "dns"])),
)
PEER = st.one_of(
    st.builds(PolicyPeer, st.one_of(st.none(), SELECTOR), st.one_of(st.none(), st.builds(
        lambda n: LabelSelector((("kubernetes.io/metadata.name", n),)),
        st.sampled_from(NS_NAMES)))),
    st.builds(lambda plen, ex: PolicyPeer(ip_block=IPBlock(
        N(f"10.0.0.0/{plen}"), (N("10.0.0.4/30"),) if ex and plen < 30 else ())),
        st.integers(24, 32), st.booleans()),
)
RULE = st.builds(PolicyRule, st.one_of(st.none(), st.lists(PEER, min_size=1, max_size=2)
                                       .map(tuple)),
                 st.lists(PORT, max_size=2).map(tuple))
POLICY = st.builds(
    lambda name, ns_, s, ing, eg, types: NetworkPolicy(
        Meta("NetworkPolicy", name, ns_), s, types, tuple(ing), tuple(eg)),
    st.sampled_from(["p1", "p2", "p3"]), st.sampled_from(NS_NAMES), SELECTOR,
    st.lists(RULE, max_size=2), st.lists(RULE, max_size=2),
    st.sampled_from([("Ingress",), ("Egress",), ("Ingress", "Egress")]))
CPORTS = st.lists(st.builds(ContainerPort, st.integers(1, 30), st.sampled_from(["TCP", "UDP"]),
                            st.sampled_from(["web", "dns"])), max_size=2).map(tuple)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[NetworkPolicy], list[Pod]]:
    pods = []
    for i in range(draw(st.integers(1, 6))):
        pods.append(Pod(Meta("Pod", f"pod{i}", draw(st.sampled_from(NS_NAMES)),
                             labels=frozen_map(draw(LABELS))),
                        draw(st.sampled_from(["n1", "n2"])), (A(f"10.0.0.{i + 1}"),),
                        draw(CPORTS)))
    pols = {(p.meta.namespace, p.meta.name): p for p in draw(st.lists(POLICY, max_size=4))}
    return list(pols.values()), pods


@settings(max_examples=300, deadline=None)
@given(clusters(), st.integers(0, 12), st.sampled_from([TCP, UDP]), st.integers(0, 36))
def test_the_compiled_entries_decide_as_the_rules_read(
        c: tuple[list[NetworkPolicy], list[Pod]], host: int, proto: int, port: int) -> None:
    policies, pods = c
    namespaces = {n: ns(n) for n in NS_NAMES}
    got = compile_policies(policies, pods, namespaces, "n1", max_ranges=64)
    assert got.problems == ()
    peer = A(f"10.0.0.{host}")
    for p in pods:
        ep = got.endpoints.get(p.key)
        for direction in ("ingress", "egress"):
            want = reference(policies, pods, namespaces, p, direction, peer, proto, port)
            if p.node != "n1":
                assert ep is None
                continue
            entries = None if ep is None else getattr(ep, direction)
            assert allowed(entries, peer, proto, port) == want, (p.key, direction)
