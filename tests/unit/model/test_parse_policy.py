"""Namespace, Pod and NetworkPolicy manifests: the exact model values (the API server's
defaults and fixes included), every malformed field reported by its path with the
object rejected, and the parsed objects in the snapshot."""

from __future__ import annotations

import copy
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from controller.desired.cluster import plan_allocations
from controller.kubestatus import desired_conditions
from controller.model.fields import Reader
from controller.model.meta import LabelSelector, Meta, Requirement
from controller.model.parse import IGNORED_KINDS, KINDS, parse_object
from controller.model.parse_policy import parse_network_policy, port_name_problem
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
from controller.sources.kube import AGENT_KINDS, OPERATOR_KINDS
from controller.sources.kubeapi import RESOURCES
from controller.store import ObjectError, Snapshot
from tests.unit.manifests import snapshot

NP = "networking.k8s.io/v1"
NAME_LABEL = "kubernetes.io/metadata.name"


def ok(raw: dict[str, Any]) -> Any:
    result = parse_object(raw, "t.yaml#0")
    assert result.errors == []
    assert result.obj is not None
    return result.obj


def namespace(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, **meta}}


def pod(spec: Any = None, status: Any = None, name: str = "web-7d4b9c-x2x4k",
        ns: str = "shop") -> dict[str, Any]:
    raw: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}}}
    if spec is not None:
        raw["spec"] = spec
    if status is not None:
        raw["status"] = status
    return raw


def policy(spec: Any, name: str = "web-allow", ns: str = "shop") -> dict[str, Any]:
    return {"apiVersion": NP, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


# The example of the Kubernetes documentation, with a named port, a range and SCTP added.
FULL_POLICY: dict[str, Any] = policy({
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [
        {
            "from": [
                {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                {"podSelector": {"matchLabels": {"role": "frontend"}}},
                {
                    "namespaceSelector": {"matchExpressions": [
                        {"key": "env", "operator": "In", "values": ["prod", "staging"]}]},
                    "podSelector": {},
                },
            ],
            "ports": [
                {"protocol": "TCP", "port": 6379},
                {"port": "metrics"},
                {"protocol": "SCTP", "port": 9000, "endPort": 9100},
            ],
        },
    ],
    "egress": [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "UDP"}]},
        {"to": [{"ipBlock": {"cidr": "fd00:10::/48", "except": ["fd00:10:0:1::/64"]}}]},
    ],
})


# ---------------------------------------------------------------- Namespace


def test_namespace_gets_its_name_label() -> None:
    ns = ok(namespace("shop", labels={"team": "payments"}, uid="u-9"))
    assert ns == Namespace(Meta("Namespace", "shop", "", uid="u-9"))
    assert dict(ns.meta.labels) == {"team": "payments", NAME_LABEL: "shop"}
    assert (ns.name, ns.meta.key, ns.meta.ref) == ("shop", "shop", "Namespace shop")


def test_namespace_name_label_is_the_name_whatever_the_manifest_says() -> None:
    ns = ok(namespace("shop", labels={NAME_LABEL: "other"}))
    assert dict(ns.meta.labels) == {NAME_LABEL: "shop"}
    assert dict(ok(namespace("bare")).meta.labels) == {NAME_LABEL: "bare"}


def test_namespace_is_cluster_scoped() -> None:
    ns = ok(namespace("shop", namespace="default"))
    assert (ns.meta.namespace, ns.meta.key) == ("", "shop")


# ---------------------------------------------------------------- Pod


def test_pod_every_field() -> None:
    p = ok(pod(
        spec={
            "nodeName": "rack1-n3",
            "hostNetwork": False,
            "initContainers": [
                {"name": "migrate", "image": "shop/migrate:1",
                 "ports": [{"containerPort": 5000, "name": "not-a-sidecar"}]},
                {"name": "proxy", "image": "envoy:1.30", "restartPolicy": "Always",
                 "ports": [{"containerPort": 15001, "name": "envoy-out"}]},
            ],
            "containers": [
                {"name": "web", "image": "shop/web:2", "ports": [
                    {"containerPort": 8080, "name": "http"},
                    {"containerPort": 9090, "protocol": "TCP", "name": "metrics"},
                    {"containerPort": 5353, "protocol": "UDP"},
                ]},
                {"name": "sctp", "image": "shop/sig:1",
                 "ports": [{"containerPort": 3868, "protocol": "SCTP", "name": "diameter"}]},
                {"name": "sleeper", "image": "busybox"},
            ],
        },
        status={
            "phase": "Running",
            "podIP": "10.244.3.17",
            "podIPs": [{"ip": "10.244.3.17"}, {"ip": "fd00:244:3::17"}],
            "hostIP": "10.0.0.13",
        },
    ))
    assert p == Pod(
        meta=Meta("Pod", "web-7d4b9c-x2x4k", "shop"),
        node="rack1-n3",
        ips=(ip_address("10.244.3.17"), ip_address("fd00:244:3::17")),
        ports=(
            ContainerPort(8080, "TCP", "http"),
            ContainerPort(9090, "TCP", "metrics"),
            ContainerPort(5353, "UDP", ""),
            ContainerPort(3868, "SCTP", "diameter"),
            ContainerPort(15001, "TCP", "envoy-out"),  # a sidecar's; a plain init's is not
        ),
        host_network=False,
        phase="Running",
    )
    assert dict(p.meta.labels) == {"app": "web"}
    assert p.key == "shop/web-7d4b9c-x2x4k"


def test_pod_minimal_pending_and_host_network() -> None:
    assert ok(pod()) == Pod(Meta("Pod", "web-7d4b9c-x2x4k", "shop"))
    p = ok({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending"}})
    assert p == Pod(Meta("Pod", "p", "default"), phase="Pending")
    host = ok(pod(spec={"hostNetwork": True, "nodeName": "n1"},
                  status={"phase": "Running", "podIP": "10.0.0.11",
                          "podIPs": [{"ip": "10.0.0.11"}]}))
    assert (host.host_network, host.node, host.ips) == (True, "n1", (ip_address("10.0.0.11"),))


@pytest.mark.parametrize("pod_ips", [None, []])
def test_pod_ip_falls_back_to_pod_ip(pod_ips: Any) -> None:
    status: dict[str, Any] = {"phase": "Running", "podIP": "10.244.3.17"}
    if pod_ips is not None:
        status["podIPs"] = pod_ips
    assert ok(pod(status=status)).ips == (ip_address("10.244.3.17"),)
    assert ok(pod(status={"phase": "Pending", "podIP": ""})).ips == ()


def test_pod_ips_win_over_pod_ip() -> None:
    p = ok(pod(status={"podIP": "10.244.3.17", "podIPs": [{"ip": "fd00:244:3::17"}]}))
    assert p.ips == (ip_address("fd00:244:3::17"),)


# ---------------------------------------------------------------- NetworkPolicy


def test_network_policy_every_field() -> None:
    np = ok(FULL_POLICY)
    assert np == NetworkPolicy(
        meta=Meta("NetworkPolicy", "web-allow", "shop"),
        pod_selector=LabelSelector((("role", "db"),)),
        policy_types=("Ingress", "Egress"),
        ingress=(
            PolicyRule(
                peers=(
                    PolicyPeer(ip_block=IPBlock(ip_network("172.17.0.0/16"),
                                                (ip_network("172.17.1.0/24"),))),
                    PolicyPeer(namespace_selector=LabelSelector((("project", "myproject"),))),
                    PolicyPeer(pod_selector=LabelSelector((("role", "frontend"),))),
                    PolicyPeer(
                        pod_selector=LabelSelector(),
                        namespace_selector=LabelSelector(match_expressions=(
                            Requirement("env", "In", frozenset({"prod", "staging"})),)),
                    ),
                ),
                ports=(
                    PolicyPort("TCP", 6379),
                    PolicyPort("TCP", "metrics"),
                    PolicyPort("SCTP", 9000, 9100),
                ),
            ),
        ),
        egress=(
            PolicyRule(peers=(PolicyPeer(ip_block=IPBlock(ip_network("10.0.0.0/24"))),),
                       ports=(PolicyPort("UDP", None),)),
            PolicyRule(peers=(PolicyPeer(ip_block=IPBlock(
                ip_network("fd00:10::/48"), (ip_network("fd00:10:0:1::/64"),))),)),
        ),
    )
    assert np.key == "shop/web-allow"


def test_deny_all_and_allow_all() -> None:
    deny = ok(policy({"podSelector": {}}, name="default-deny"))
    assert deny == NetworkPolicy(Meta("NetworkPolicy", "default-deny", "shop"),
                                 LabelSelector(), ("Ingress",), (), ())
    allow = ok(policy({"podSelector": {}, "ingress": [{}]}, name="allow-all"))
    assert allow.ingress == (PolicyRule(None, ()),)
    deny_egress = ok(policy({"podSelector": {}, "policyTypes": ["Egress"]}))
    assert (deny_egress.policy_types, deny_egress.egress) == (("Egress",), ())


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, ("Ingress",)),
        ({"ingress": [{}]}, ("Ingress",)),
        ({"egress": []}, ("Ingress",)),
        ({"egress": None}, ("Ingress",)),
        ({"egress": [{}]}, ("Ingress", "Egress")),
        ({"ingress": [{}], "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]},
         ("Ingress", "Egress")),
        ({"policyTypes": [], "egress": [{}]}, ("Ingress", "Egress")),  # [] is defaulted too
        ({"policyTypes": ["Egress"], "ingress": [{}]}, ("Egress",)),  # as written
        ({"policyTypes": ["Egress", "Ingress"]}, ("Egress", "Ingress")),
        ({"policyTypes": ["Ingress"], "egress": [{}]}, ("Ingress",)),
    ],
)
def test_policy_types_as_written_or_defaulted(spec: dict[str, Any], types: tuple[str, ...]
                                              ) -> None:
    assert ok(policy({"podSelector": {}, **spec})).policy_types == types


@pytest.mark.parametrize("peers", [None, [], "absent"])
def test_absent_or_empty_peers_are_every_peer(peers: Any) -> None:
    ingress: dict[str, Any] = {"ports": [{"port": 443}]}
    egress: dict[str, Any] = {}
    if peers != "absent":
        ingress["from"] = egress["to"] = peers
    np = ok(policy({"podSelector": {}, "ingress": [ingress], "egress": [egress]}))
    assert np.ingress == (PolicyRule(None, (PolicyPort("TCP", 443),)),)
    assert np.egress == (PolicyRule(None, ()),)


@pytest.mark.parametrize("ports", [None, [], "absent"])
def test_absent_or_empty_ports_are_every_port(ports: Any) -> None:
    rule: dict[str, Any] = {"from": [{"podSelector": {}}]}
    if ports != "absent":
        rule["ports"] = ports
    np = ok(policy({"podSelector": {}, "ingress": [rule]}))
    assert np.ingress == (PolicyRule((PolicyPeer(pod_selector=LabelSelector()),), ()),)


def test_ip_block_host_bits_are_cleared() -> None:
    np = ok(policy({"podSelector": {}, "egress": [{"to": [
        {"ipBlock": {"cidr": "10.1.2.3/8", "except": ["10.1.2.3/16", " 10.9.9.9/24 "]}},
        {"ipBlock": {"cidr": "fd00::1/8"}},
    ]}]}))
    peers = np.egress[0].peers
    assert peers == (
        PolicyPeer(ip_block=IPBlock(ip_network("10.0.0.0/8"),
                                    (ip_network("10.1.0.0/16"), ip_network("10.9.9.0/24")))),
        PolicyPeer(ip_block=IPBlock(ip_network("fd00::/8"))),
    )


def test_port_forms() -> None:
    np = ok(policy({"podSelector": {}, "ingress": [{"ports": [
        {"port": 1}, {"port": 65535, "endPort": 65535}, {"port": 80, "endPort": 80},
        {"port": "http"}, {"port": "grpc-web2"}, {"port": "h2c"}, {"port": "a23456789012345"},
        {"protocol": "SCTP"},
    ]}]}))
    assert np.ingress[0].ports == (
        PolicyPort("TCP", 1), PolicyPort("TCP", 65535, 65535), PolicyPort("TCP", 80, 80),
        PolicyPort("TCP", "http"), PolicyPort("TCP", "grpc-web2"), PolicyPort("TCP", "h2c"),
        PolicyPort("TCP", "a23456789012345"), PolicyPort("SCTP", None),
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("http", None),
        ("x", None),
        ("1-a", None),
        ("", "must be 1-15 characters, got 0"),
        ("a234567890123456", "must be 1-15 characters, got 16"),
        ("HTTP", "must hold only lowercase letters, digits and hyphens"),
        ("web_http", "must hold only lowercase letters, digits and hyphens"),
        ("8080", "must contain at least one letter (a port number is written without quotes)"),
        ("1-2", "must contain at least one letter"),
        ("-http", "must not begin or end with a hyphen"),
        ("http-", "must not begin or end with a hyphen"),
        ("web--http", "must not contain two hyphens in a row"),
    ],
)
def test_port_name_rules(name: str, problem: str | None) -> None:
    assert port_name_problem(name) == problem


# ---------------------------------------------------------------- malformed

REF = "NetworkPolicy shop/web-allow"
POD = "Pod shop/web-7d4b9c-x2x4k"


def rule_with(**rule: Any) -> dict[str, Any]:
    return policy({"podSelector": {}, "ingress": [rule]})


def peer(**p: Any) -> dict[str, Any]:
    return rule_with(**{"from": [{"podSelector": {"matchLabels": {"app": "lb"}}}, p]})


def port(**p: Any) -> dict[str, Any]:
    return rule_with(ports=[{"port": 443}, p])


CASES: list[tuple[str, Any, list[str]]] = [
    # ------------------------------------------------------------ Namespace, Pod
    ("namespace-no-name", {"apiVersion": "v1", "kind": "Namespace", "metadata": {}},
     ["Namespace f.yaml#3: metadata.name: required"]),
    ("namespace-wrong-api", {"apiVersion": "v2", "kind": "Namespace", "metadata": {"name": "x"}},
     ["Namespace x: apiVersion: must be v1 for Namespace, got 'v2'"]),
    ("namespace-label-not-string", namespace("shop", labels={"team": None}),
     ["Namespace shop: metadata.labels.team: must be a string, got null"]),
    ("pod-container-port-range", pod(spec={"containers": [
        {"name": "web", "ports": [{"containerPort": 8080}, {"containerPort": 0}]}]}),
     [f"{POD}: spec.containers[0].ports[1].containerPort: must be 1..65535, got 0"]),
    ("pod-container-port-missing", pod(spec={"containers": [
        {"name": "web", "ports": [{"name": "http"}]}]}),
     [f"{POD}: spec.containers[0].ports[0].containerPort: required"]),
    ("pod-container-port-protocol", pod(spec={"containers": [
        {"name": "web", "ports": [{"containerPort": 53, "protocol": "udp"}]}]}),
     [f"{POD}: spec.containers[0].ports[0].protocol: must be one of TCP, UDP, SCTP, got 'udp'"]),
    ("pod-container-port-name", pod(spec={"containers": [
        {"name": "a"}, {"name": "web", "ports": [{"containerPort": 80, "name": "Web_Http"}]}]}),
     [f"{POD}: spec.containers[1].ports[0].name: port name 'Web_Http' must hold only "
      "lowercase letters, digits and hyphens"]),
    ("pod-sidecar-port", pod(spec={"initContainers": [
        {"name": "proxy", "restartPolicy": "Always", "ports": [{"containerPort": 70000}]}]}),
     [f"{POD}: spec.initContainers[0].ports[0].containerPort: must be 1..65535, got 70000"]),
    ("pod-container-not-object", pod(spec={"containers": ["web"]}),
     [f"{POD}: spec.containers[0]: must be an object, got string 'web'"]),
    ("pod-host-network", pod(spec={"hostNetwork": "true"}),
     [f"{POD}: spec.hostNetwork: must be true or false, got string 'true'"]),
    ("pod-node-name", pod(spec={"nodeName": 7}),
     [f"{POD}: spec.nodeName: must be a string, got integer 7"]),
    ("pod-ips", pod(status={"podIPs": [{"ip": "10.244.3.17"}, {"ip": "10.244.3"}, {}]}),
     [f"{POD}: status.podIPs[1].ip: not an IP address: '10.244.3'",
      f"{POD}: status.podIPs[2].ip: required"]),
    ("pod-ip-fallback", pod(status={"podIP": "fd00::zz"}),
     [f"{POD}: status.podIP: not an IP address: 'fd00::zz'"]),
    ("pod-ips-not-list", pod(status={"podIPs": "10.244.3.17"}),
     [f"{POD}: status.podIPs: must be a list, got string '10.244.3.17'"]),
    # ------------------------------------------------------------ NetworkPolicy: spec
    ("np-wrong-api", {**policy({"podSelector": {}}), "apiVersion": "extensions/v1beta1"},
     [f"{REF}: apiVersion: must be networking.k8s.io/v1 for NetworkPolicy, "
      "got 'extensions/v1beta1'"]),
    ("np-no-spec", {k: v for k, v in policy({}).items() if k != "spec"},
     [f"{REF}: spec.podSelector: required ({{}} selects every pod in the namespace)"]),
    ("np-no-pod-selector", policy({"ingress": [{}]}),
     [f"{REF}: spec.podSelector: required ({{}} selects every pod in the namespace)"]),
    ("np-pod-selector-bad", policy({"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "In"}]}}),
     [f"{REF}: spec.podSelector.matchExpressions[0].values: must be non-empty for operator In"]),
    ("np-spec-unknown-field", policy({"podSelector": {}, "ingres": [{}]}),
     [f"{REF}: spec.ingres: unknown field, a NetworkPolicy spec has only podSelector, "
      "policyTypes, ingress and egress"]),
    ("np-policy-types", policy({"podSelector": {},
                                "policyTypes": ["Ingress", "egress", "Ingress", 1]}),
     [f"{REF}: spec.policyTypes[1]: must be Ingress or Egress, got 'egress'",
      f"{REF}: spec.policyTypes[2]: duplicate policy type 'Ingress'",
      f"{REF}: spec.policyTypes[3]: must be Ingress or Egress, got integer 1"]),
    ("np-policy-types-not-list", policy({"podSelector": {}, "policyTypes": "Ingress"}),
     [f"{REF}: spec.policyTypes: must be a list, got string 'Ingress'"]),
    ("np-ingress-not-list", policy({"podSelector": {}, "ingress": {"from": []}}),
     [f"{REF}: spec.ingress: must be a list, got object"]),
    ("np-rule-not-object", policy({"podSelector": {}, "egress": [{}, "all"]}),
     [f"{REF}: spec.egress[1]: must be an object, got string 'all'"]),
    ("np-ingress-rule-with-to", rule_with(to=[{"podSelector": {}}]),
     [f"{REF}: spec.ingress[0].to: unknown field, an ingress rule has only from and ports"]),
    ("np-egress-rule-with-from", policy({"podSelector": {}, "egress": [{"from": []}]}),
     [f"{REF}: spec.egress[0].from: unknown field, an egress rule has only to and ports"]),
    # ------------------------------------------------------------ peers
    ("np-peers-not-list", rule_with(**{"from": {"podSelector": {}}}),
     [f"{REF}: spec.ingress[0].from: must be a list, got object"]),
    ("np-peer-empty", peer(),
     [f"{REF}: spec.ingress[0].from[1]: must have podSelector, namespaceSelector or ipBlock"]),
    ("np-peer-null-selectors", peer(podSelector=None, namespaceSelector=None),
     [f"{REF}: spec.ingress[0].from[1]: must have podSelector, namespaceSelector or ipBlock"]),
    ("np-peer-not-object", rule_with(**{"from": [3]}),
     [f"{REF}: spec.ingress[0].from[0]: must be an object, got integer 3"]),
    ("np-peer-unknown-field", peer(podSelecter={"matchLabels": {"app": "x"}}),
     [f"{REF}: spec.ingress[0].from[1].podSelecter: unknown field, a peer has only "
      "podSelector, namespaceSelector and ipBlock",
      f"{REF}: spec.ingress[0].from[1]: must have podSelector, namespaceSelector or ipBlock"]),
    ("np-peer-ipblock-and-pods", peer(ipBlock={"cidr": "10.0.0.0/8"}, podSelector={}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock: must not be combined with podSelector or "
      "namespaceSelector"]),
    ("np-peer-ipblock-and-namespaces",
     peer(ipBlock={"cidr": "10.0.0.0/8"}, namespaceSelector={"matchLabels": {"a": "b"}}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock: must not be combined with podSelector or "
      "namespaceSelector"]),
    ("np-peer-selector-unknown", peer(namespaceSelector={"matchLabel": {"a": "b"}}),
     [f"{REF}: spec.ingress[0].from[1].namespaceSelector.matchLabel: unknown field, a "
      "selector has only matchLabels and matchExpressions"]),
    # ------------------------------------------------------------ ipBlock
    ("np-ipblock-not-object", peer(ipBlock="10.0.0.0/8"),
     [f"{REF}: spec.ingress[0].from[1].ipBlock: must be an object, got string '10.0.0.0/8'"]),
    ("np-ipblock-no-cidr", peer(ipBlock={"except": ["10.1.0.0/16"]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.cidr: required"]),
    ("np-ipblock-cidr-no-length", peer(ipBlock={"cidr": "10.0.0.1"}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.cidr: not a CIDR: '10.0.0.1'"]),
    ("np-ipblock-cidr-bad", peer(ipBlock={"cidr": "10.0.0.0/33"}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.cidr: not a CIDR: '10.0.0.0/33'"]),
    ("np-ipblock-cidr-not-string", peer(ipBlock={"cidr": 10}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.cidr: must be a CIDR like 10.0.0.0/24, "
      "got integer 10"]),
    ("np-ipblock-unknown-field", peer(ipBlock={"cidr": "0.0.0.0/0", "expect": ["10.0.0.0/8"]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.expect: unknown field, an ipBlock has only "
      "cidr and except"]),
    ("np-except-not-list", peer(ipBlock={"cidr": "0.0.0.0/0", "except": "10.0.0.0/8"}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.except: must be a list, got string "
      "'10.0.0.0/8'"]),
    ("np-except-bad", peer(ipBlock={"cidr": "10.0.0.0/8",
                                    "except": ["10.1.0.0/16", "10.2.0.0", None]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.except[1]: not a CIDR: '10.2.0.0'",
      f"{REF}: spec.ingress[0].from[1].ipBlock.except[2]: must be a CIDR like 10.0.0.0/24, "
      "got null"]),
    ("np-except-outside", peer(ipBlock={"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.except[0]: must be a prefix inside cidr "
      "10.0.0.0/8 and longer than /8, got 11.0.0.0/16"]),
    ("np-except-equal", peer(ipBlock={"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.except[0]: must be a prefix inside cidr "
      "10.0.0.0/8 and longer than /8, got 10.0.0.0/8"]),
    ("np-except-wider", peer(ipBlock={"cidr": "10.1.0.0/16", "except": ["10.0.0.0/8"]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.except[0]: must be a prefix inside cidr "
      "10.1.0.0/16 and longer than /16, got 10.0.0.0/8"]),
    ("np-except-host-bits-outside",
     peer(ipBlock={"cidr": "10.1.2.3/16", "except": ["10.1.9.9/12"]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.except[0]: must be a prefix inside cidr "
      "10.1.0.0/16 and longer than /16, got 10.1.9.9/12 (that is 10.0.0.0/12)"]),
    ("np-except-other-family", peer(ipBlock={"cidr": "0.0.0.0/0", "except": ["fd00::/8"]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.except[0]: must be an IPv4 prefix like cidr "
      "0.0.0.0/0, got fd00::/8"]),
    ("np-except-of-bad-cidr", peer(ipBlock={"cidr": "bogus", "except": ["10.0.0.0/33"]}),
     [f"{REF}: spec.ingress[0].from[1].ipBlock.cidr: not a CIDR: 'bogus'",
      f"{REF}: spec.ingress[0].from[1].ipBlock.except[0]: not a CIDR: '10.0.0.0/33'"]),
    ("np-egress-except", policy({"podSelector": {}, "egress": [{"to": [{"ipBlock": {
        "cidr": "fd00:10::/48", "except": ["fd00:11::/64"]}}]}]}),
     [f"{REF}: spec.egress[0].to[0].ipBlock.except[0]: must be a prefix inside cidr "
      "fd00:10::/48 and longer than /48, got fd00:11::/64"]),
    # ------------------------------------------------------------ ports
    ("np-ports-not-list", rule_with(ports={"port": 80}),
     [f"{REF}: spec.ingress[0].ports: must be a list, got object"]),
    ("np-port-not-object", rule_with(ports=[80]),
     [f"{REF}: spec.ingress[0].ports[0]: must be an object, got integer 80"]),
    ("np-port-protocol", port(protocol="ICMP"),
     [f"{REF}: spec.ingress[0].ports[1].protocol: must be one of TCP, UDP, SCTP, got 'ICMP'"]),
    ("np-port-zero", port(port=0),
     [f"{REF}: spec.ingress[0].ports[1].port: must be 1..65535, got 0"]),
    ("np-port-too-big", port(port=65536),
     [f"{REF}: spec.ingress[0].ports[1].port: must be 1..65535, got 65536"]),
    ("np-port-bool", port(port=True),
     [f"{REF}: spec.ingress[0].ports[1].port: must be a port number or a port name, "
      "got boolean true"]),
    ("np-port-float", port(port=80.0),
     [f"{REF}: spec.ingress[0].ports[1].port: must be a port number or a port name, "
      "got number 80.0"]),
    ("np-port-quoted-number", port(port="8080"),
     [f"{REF}: spec.ingress[0].ports[1].port: port name '8080' must contain at least one "
      "letter (a port number is written without quotes)"]),
    ("np-port-name-upper", port(port="HTTP"),
     [f"{REF}: spec.ingress[0].ports[1].port: port name 'HTTP' must hold only lowercase "
      "letters, digits and hyphens"]),
    ("np-port-name-long", port(port="my-metrics-port-1"),
     [f"{REF}: spec.ingress[0].ports[1].port: port name 'my-metrics-port-1' must be 1-15 "
      "characters, got 17"]),
    ("np-port-name-empty", port(port=""),
     [f"{REF}: spec.ingress[0].ports[1].port: port name '' must be 1-15 characters, got 0"]),
    ("np-port-unknown-field", port(port=80, endport=90),
     [f"{REF}: spec.ingress[0].ports[1].endport: unknown field, a port has only protocol, "
      "port and endPort"]),
    ("np-end-port-below", port(port=9100, endPort=9000),
     [f"{REF}: spec.ingress[0].ports[1].endPort: must be >= port (9100), got 9000"]),
    ("np-end-port-too-big", port(port=9000, endPort=65536),
     [f"{REF}: spec.ingress[0].ports[1].endPort: must be 1..65535, got 65536"]),
    ("np-end-port-without-port", port(protocol="UDP", endPort=100),
     [f"{REF}: spec.ingress[0].ports[1].endPort: needs a numeric port, and port is not set"]),
    ("np-end-port-with-name", port(port="http", endPort=100),
     [f"{REF}: spec.ingress[0].ports[1].endPort: needs a numeric port, got port name 'http'"]),
    ("np-end-port-not-int", port(port=80, endPort="90"),
     [f"{REF}: spec.ingress[0].ports[1].endPort: must be an integer, got string '90'"]),
    ("np-end-port-of-bad-port", port(port=0, endPort=10),  # no comparison with a bad port
     [f"{REF}: spec.ingress[0].ports[1].port: must be 1..65535, got 0"]),
    # ------------------------------------------------------------ several at once
    ("np-every-problem-at-once", policy({
        "podSelector": {"matchLabels": {"role": "db"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/4"]}}],
                     "ports": [{"port": "Redis"}]}],
        "egress": [{"to": [{}], "ports": [{"port": 53, "protocol": "DNS"}]}],
    }), [
        f"{REF}: spec.ingress[0].from[0].ipBlock.except[0]: must be a prefix inside cidr "
        "10.0.0.0/8 and longer than /8, got 10.0.0.0/4 (that is 0.0.0.0/4)",
        f"{REF}: spec.ingress[0].ports[0].port: port name 'Redis' must hold only lowercase "
        "letters, digits and hyphens",
        f"{REF}: spec.egress[0].to[0]: must have podSelector, namespaceSelector or ipBlock",
        f"{REF}: spec.egress[0].ports[0].protocol: must be one of TCP, UDP, SCTP, got 'DNS'",
    ]),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_manifest_is_rejected_with_exact_messages(raw: Any, expected: list[str]) -> None:
    result = parse_object(raw, "f.yaml#3")
    assert result.errors == expected
    assert result.obj is None
    assert not result.ignored


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_every_good_case_is_good_once_its_fault_is_fixed() -> None:
    """The malformed cases differ from good manifests only where they say: the bases
    they are built from parse cleanly."""
    for raw in (peer(podSelector={}), port(port=80), rule_with(), pod(), namespace("shop")):
        ok(copy.deepcopy(raw))


def test_the_policy_parser_itself_returns_no_part_of_a_bad_policy() -> None:
    """Used directly (not through parse_object), the parser still gives nothing for a
    policy with an error: dropping the bad peer here would leave `from` empty, which
    would read as every peer."""
    meta = Meta("NetworkPolicy", "db", "shop")
    r = Reader({"spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]}})
    assert parse_network_policy(meta, r) is None
    assert r.errors == ["spec.ingress[0].from[0].ipBlock.except[0]: must be a prefix inside "
                        "cidr 10.0.0.0/8 and longer than /8, got 192.168.0.0/16"]
    good = Reader({"spec": {"podSelector": {}}})
    assert parse_network_policy(meta, good) == NetworkPolicy(meta)


# ---------------------------------------------------------------- registration, snapshot


def test_kinds_are_registered() -> None:
    assert {k: KINDS[k][1] for k in ("Pod", "Namespace", "NetworkPolicy")} == {
        "Pod": True, "Namespace": False, "NetworkPolicy": True}
    assert not {"Pod", "Namespace", "NetworkPolicy"} & IGNORED_KINDS
    assert RESOURCES["Pod"].path("shop") == "/api/v1/namespaces/shop/pods"
    assert RESOURCES["Namespace"].path("", "shop") == "/api/v1/namespaces/shop"
    assert (RESOURCES["NetworkPolicy"].path("shop", "web-allow")
            == "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-allow")
    # nothing consumes them yet: neither role watches them (every agent would hold every pod)
    assert not {"Pod", "Namespace", "NetworkPolicy"} & set(AGENT_KINDS + OPERATOR_KINDS)


def test_round_trip_through_the_snapshot() -> None:
    raws = [
        namespace("shop", labels={"team": "payments"}),
        namespace("kube-system"),
        pod(spec={"nodeName": "n1", "containers": [
            {"name": "web", "ports": [{"containerPort": 8080, "name": "http"}]}]},
            status={"phase": "Running", "podIPs": [{"ip": "10.244.1.5"}]}),
        pod(name="dns-0", ns="kube-system",
            status={"phase": "Running", "podIP": "10.244.2.9"}),
        FULL_POLICY,
        policy({"podSelector": {}}, name="default-deny"),
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
    ]
    results = [parse_object(r) for r in raws]
    assert [r.errors for r in results] == [[]] * len(raws)
    snap = Snapshot.build([r.obj for r in results])
    assert sorted(snap.namespaces) == ["kube-system", "shop"]
    assert snap.namespaces["shop"].meta.labels[NAME_LABEL] == "shop"
    assert sorted(snap.pods) == ["kube-system/dns-0", "shop/web-7d4b9c-x2x4k"]
    assert snap.pods["shop/web-7d4b9c-x2x4k"].ports == (ContainerPort(8080, "TCP", "http"),)
    assert snap.pods["kube-system/dns-0"].ips == (ip_address("10.244.2.9"),)
    assert sorted(snap.network_policies) == ["shop/default-deny", "shop/web-allow"]
    assert snap.network_policies["shop/web-allow"] == results[4].obj
    assert list(snap.nodes) == ["n1"]
    with pytest.raises(TypeError):
        snap.pods["x"] = snap.pods["kube-system/dns-0"]  # type: ignore[index]
    assert (Snapshot().pods, Snapshot().namespaces, Snapshot().network_policies) == ({}, {}, {})


def test_yaml_manifests_into_the_snapshot() -> None:
    snap = snapshot("""
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
    ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
""")
    np = snap.network_policies["shop/allow-dns"]
    assert np.egress == (PolicyRule(
        (PolicyPeer(LabelSelector((("k8s-app", "kube-dns"),)),
                    LabelSelector(((NAME_LABEL, "kube-system"),))),),
        (PolicyPort("UDP", 53), PolicyPort("TCP", 53)),
    ),)
    assert list(snap.namespaces) == ["shop"]


def test_policy_errors_write_no_condition_on_built_in_kinds() -> None:
    """Only rackroute's own resources carry a Valid condition: a built-in kind's errors
    are reported, never patched onto the object's status."""
    snap = Snapshot.build([], [
        ObjectError("NetworkPolicy shop/bad", ("NetworkPolicy shop/bad: spec.podSelector: "
                                               "required",)),
        ObjectError("Pod shop/p", ("Pod shop/p: status.podIP: not an IP address: 'x'",)),
        ObjectError("Namespace shop", ("Namespace shop: metadata.name: required",)),
        ObjectError("BGPPeerConfig p", ("BGPPeerConfig p: spec.ebgpMultihop: bad",)),
    ])
    assert list(desired_conditions(snap, plan_allocations(snap))) == ["BGPPeerConfig p"]
