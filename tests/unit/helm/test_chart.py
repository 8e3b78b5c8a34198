"""The Helm chart's data: CRDs against the parser, templates, values and RBAC.

There is no helm binary in the test environment, so these tests read the chart's files:
every CRD is a structural `apiextensions.k8s.io/v1` definition, the schemas describe
exactly the fields the parser reads (a maximal fixture parses cleanly, validates, and
the parser asks for no field the fixture leaves out), manifests the parser rejects for a
range or enum are rejected by the schema too, and the templates only use values that
values.yaml defines.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.model.parse import KINDS, parse_object
from tests.unit.helm.openapi import Schema, leaf_paths, schema_at, validate, wrap

CHART = Path(__file__).resolve().parents[3] / "helm" / "rackroute"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GROUP = "rackroute.io"
CRD_KINDS = (
    "BGPClusterConfig",
    "BGPPeerConfig",
    "BGPAdvertisement",
    "BGPNodeConfigOverride",
    "BGPNodeConfig",
    "LoadBalancerIPPool",
    "NodeNetwork",
    "RackrouteConfig",
)
PARSED_KINDS = tuple(k for k in CRD_KINDS if k in KINDS)


@cache
def crds() -> dict[str, dict[str, Any]]:
    """kind -> CRD document, one per file under crds/."""
    out: dict[str, dict[str, Any]] = {}
    for f in sorted((CHART / "crds").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert len(docs) == 1, f"{f.name}: one CRD per file"
        kind = docs[0]["spec"]["names"]["kind"]
        assert kind not in out, f"{f.name}: second CRD for {kind}"
        out[kind] = docs[0]
    return out


def schema(kind: str) -> Schema:
    version = crds()[kind]["spec"]["versions"][0]
    s: Schema = version["schema"]["openAPIV3Schema"]
    return s


@cache
def maximal() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((FIXTURES / "maximal.yaml").read_text())
    return {d["kind"]: d for d in docs if d is not None}


def manifest(kind: str) -> dict[str, Any]:
    return copy.deepcopy(maximal()[kind])


# ------------------------------------------------------------------ CRD files


def test_one_crd_file_per_kind() -> None:
    assert sorted(crds()) == sorted(CRD_KINDS)


@pytest.mark.parametrize("kind", CRD_KINDS)
def test_crd_shape(kind: str) -> None:
    doc = crds()[kind]
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["kind"] == "CustomResourceDefinition"
    spec = doc["spec"]
    names = spec["names"]
    assert doc["metadata"]["name"] == f"{names['plural']}.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["scope"] == "Cluster"
    assert names["singular"] == kind.lower()
    assert names["listKind"] == f"{kind}List"
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    version = spec["versions"][0]
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert len(columns) >= 2
    assert columns[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    for c in columns:
        assert c["type"] in ("string", "integer", "boolean", "date", "number"), c
        assert c["jsonPath"].startswith("."), c


@pytest.mark.parametrize("kind", CRD_KINDS)
def test_printer_columns_point_into_the_schema(kind: str) -> None:
    for c in crds()[kind]["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = c["jsonPath"]
        if path.startswith(".metadata."):
            continue
        parts = re.sub(r"\[\?\(@\.type==\"\w+\"\)\]|\[\*\]", ".[]", path).strip(".").split(".")
        assert schema_at(schema(kind), tuple(p for p in parts if p)) is not None, path


@pytest.mark.parametrize("kind", CRD_KINDS)
def test_status_has_standard_conditions(kind: str) -> None:
    status = schema(kind)["properties"]["status"]
    cond = status["properties"]["conditions"]
    assert cond["type"] == "array"
    assert cond["x-kubernetes-list-type"] == "map"
    assert cond["x-kubernetes-list-map-keys"] == ["type"]
    item = cond["items"]
    assert {"type", "status", "reason", "message", "observedGeneration"} <= set(item["properties"])
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["observedGeneration"]["minimum"] == 0
    assert set(item["required"]) >= {"type", "status", "reason"}


def _structural_problems(s: Schema, path: str) -> list[str]:
    """Nodes without a type, objects with neither properties nor additionalProperties."""
    out: list[str] = []
    if "type" not in s and not s.get("x-kubernetes-int-or-string"):
        out.append(f"{path}: no type")
    for k, sub in s.get("properties", {}).items():
        out += _structural_problems(sub, f"{path}.{k}")
    if isinstance(s.get("additionalProperties"), dict):
        out += _structural_problems(s["additionalProperties"], f"{path}.*")
    if s.get("type") == "array":
        if "items" not in s:
            out.append(f"{path}: array without items")
        else:
            out += _structural_problems(s["items"], f"{path}[]")
    bare = "properties" not in s and "additionalProperties" not in s
    if s.get("type") == "object" and bare and path != "<root>.metadata":
        out.append(f"{path}: object with no properties")
    if s.get("x-kubernetes-list-type") == "map":
        item = s["items"]
        for key in s["x-kubernetes-list-map-keys"]:
            prop = item["properties"].get(key)
            if prop is None or (key not in item.get("required", []) and "default" not in prop):
                out.append(f"{path}: list-map key {key} must be required or defaulted")
    return out


@pytest.mark.parametrize("kind", CRD_KINDS)
def test_schema_is_structural(kind: str) -> None:
    assert _structural_problems(schema(kind), "<root>") == []


# ------------------------------------------------------------------ schema vs parser


@pytest.mark.parametrize("kind", PARSED_KINDS)
def test_maximal_fixture_parses_and_validates(kind: str) -> None:
    doc = manifest(kind)
    result = parse_object(doc)
    assert result.errors == []
    assert result.obj is not None
    assert validate(doc, schema(kind)) == []


def test_written_bgpnodeconfig_validates() -> None:
    doc = yaml.safe_load((FIXTURES / "bgpnodeconfig.yaml").read_text())
    assert validate(doc, schema("BGPNodeConfig")) == []
    assert parse_object(doc).ignored  # written by rackroute, never read as input


@pytest.mark.parametrize("kind", PARSED_KINDS)
def test_schema_covers_every_field_the_parser_reads(kind: str) -> None:
    doc = manifest(kind)
    asked: set[tuple[str, ...]] = set()
    result = parse_object(wrap(doc, (), asked))
    assert result.errors == []
    asked = {p for p in asked if p[0] not in ("apiVersion", "kind", "metadata")}
    assert asked, "the recording dict saw no lookups"
    undescribed = sorted(p for p in asked if schema_at(schema(kind), p) is None)
    assert undescribed == [], "the parser reads fields the schema does not describe"
    # The fixture is maximal: every field the parser asks for is set somewhere, except
    # alternatives the parser only reads when the preferred spelling is absent.
    alternates = {("spec", "cidrs")}
    missing = sorted(p for p in asked - leaf_paths(doc) - alternates)
    assert missing == [], "the fixture leaves out fields the parser reads"


@pytest.mark.parametrize("kind", PARSED_KINDS)
def test_every_fixture_field_is_in_the_schema(kind: str) -> None:
    doc = manifest(kind)
    for p in leaf_paths(doc):
        if p[0] != "metadata":
            assert schema_at(schema(kind), p) is not None, p


# (kind, path to set, value): each is refused by the parser for a range or enum reason.
Path_ = tuple[str | int, ...]
REJECTED: list[tuple[str, Path_, Any]] = [
    ("BGPClusterConfig", ("spec", "bgpInstances", 0, "localASN"), 0),
    ("BGPClusterConfig", ("spec", "bgpInstances", 0, "localASN"), 4294967296),
    ("BGPClusterConfig", ("spec", "bgpInstances", 0, "peers", 0, "peerASN"), -1),
    ("BGPClusterConfig", ("spec", "bgpInstances", 0, "localPort"), 65536),
    ("BGPClusterConfig", ("spec", "bgpInstances"), []),
    ("BGPClusterConfig", ("spec", "nodeSelector", "matchExpressions", 0, "operator"), "in"),
    ("BGPPeerConfig", ("spec", "timers", "holdTimeSeconds"), 65536),
    ("BGPPeerConfig", ("spec", "timers", "keepAliveTimeSeconds"), 0),
    ("BGPPeerConfig", ("spec", "transport", "peerPort"), 0),
    ("BGPPeerConfig", ("spec", "ebgpMultihop"), 256),
    ("BGPPeerConfig", ("spec", "gracefulRestart", "restartTimeSeconds"), 4096),
    ("BGPPeerConfig", ("spec", "bfd", "minRxMs"), 5),
    ("BGPPeerConfig", ("spec", "bfd", "multiplier"), 0),
    ("BGPPeerConfig", ("spec", "families", 0, "afi"), "l2vpn"),
    ("BGPPeerConfig", ("spec", "families", 0, "safi"), "multicast"),
    ("BGPAdvertisement", ("spec", "advertisements", 0, "advertisementType"), "Pod"),
    ("BGPAdvertisement", ("spec", "advertisements", 1, "service", "addresses", 0), "NodeIP"),
    ("BGPAdvertisement", ("spec", "advertisements", 1, "service", "aggregationLengthIPv4"), 33),
    ("BGPAdvertisement", ("spec", "advertisements", 1, "service", "aggregationLengthIPv6"), -1),
    ("BGPAdvertisement", ("spec", "advertisements", 1, "attributes", "localPreference"), -1),
    ("BGPAdvertisement",
     ("spec", "advertisements", 1, "attributes", "communities", "standard", 0), "65536:1"),
    ("BGPAdvertisement",
     ("spec", "advertisements", 1, "attributes", "communities", "wellKnown", 0), "no-such"),
    ("BGPAdvertisement",
     ("spec", "advertisements", 1, "attributes", "communities", "large", 0), "1:2"),
    ("BGPNodeConfigOverride", ("spec", "bgpInstances", 0, "localASN"), 0),
    ("BGPNodeConfigOverride", ("spec", "bgpInstances", 0, "peers", 0, "localPort"), 70000),
    ("BGPNodeConfigOverride", ("spec", "bgpInstances", 0, "routerID"), "2001:db8::1"),
    ("LoadBalancerIPPool", ("spec", "allowFirstLastIPs"), "yes"),
    ("LoadBalancerIPPool", ("spec", "allowFirstLastIPs"), False),
    ("LoadBalancerIPPool", ("spec", "blocks"), []),
    ("LoadBalancerIPPool", ("spec", "serviceSelector", "matchExpressions", 0, "operator"), "Is"),
    ("RackrouteConfig", ("spec", "ipam", "mode"), "host-scope"),
    ("RackrouteConfig", ("spec", "ipam", "clusterPoolIPv4MaskSize"), 33),
    ("RackrouteConfig", ("spec", "ipam", "clusterPoolIPv6MaskSize"), 0),
    ("RackrouteConfig", ("spec", "routingMode"), "overlay"),
    ("RackrouteConfig", ("spec", "tunnelProtocol"), "gre"),
    ("RackrouteConfig", ("spec", "tunnelUnderlay"), "dual"),
    ("RackrouteConfig", ("spec", "bgpRouterIDPool"), "fd00:255::/64"),
    ("RackrouteConfig", ("spec", "bgpRouterIDPool"), "10.255.0.1/32"),
    ("RackrouteConfig", ("spec", "bgpRouterIDPool"), "10.255.0.0"),
    ("NodeNetwork", ("spec", "podCIDRs", 0), 10),
    ("NodeNetwork", ("spec", "bgpRouterID"), "fd00:255::1"),
    ("NodeNetwork", ("spec", "bgpRouterID"), "10.255.0.256"),
]


def _set(doc: Any, path: Path_, value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def test_every_parsed_kind_has_negative_cases() -> None:
    assert {k for k, _, _ in REJECTED} == set(PARSED_KINDS)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    REJECTED,
    ids=[f"{k}:{'.'.join(map(str, p))}={v!r}" for k, p, v in REJECTED],
)
def test_parser_and_schema_reject_the_same_value(kind: str, path: Path_, value: Any) -> None:
    doc = manifest(kind)
    _set(doc, path, value)
    assert parse_object(doc).errors, "the parser accepted it"
    assert validate(doc, schema(kind)), "the schema accepted it"


def test_hold_time_gap_is_a_cel_rule() -> None:
    """1 and 2 are inside minimum..maximum; only the CEL rule refuses them."""
    for bad in (1, 2):
        doc = manifest("BGPPeerConfig")
        _set(doc, ("spec", "timers", "holdTimeSeconds"), bad)
        _set(doc, ("spec", "timers", "keepAliveTimeSeconds"), 1)
        assert parse_object(doc).errors
    hold = schema_at(schema("BGPPeerConfig"), ("spec", "timers", "holdTimeSeconds"))
    assert hold is not None
    assert (hold["minimum"], hold["maximum"]) == (0, 65535)
    rules = [r["rule"] for r in hold["x-kubernetes-validations"]]
    assert rules == ["self == 0 || self >= 3"]


def test_schema_defaults_are_the_parser_defaults() -> None:
    """Defaults the API server fills in must not change what the parser would assume."""
    for kind in PARSED_KINDS:
        bare = {"apiVersion": f"{GROUP}/v1alpha1", "kind": kind, "metadata": {"name": "x"}}
        defaulted = copy.deepcopy(bare)
        defaulted["spec"] = _defaults(schema(kind)["properties"]["spec"])
        if kind in ("BGPClusterConfig", "BGPAdvertisement", "LoadBalancerIPPool"):
            continue  # their spec has required content, no default object to compare
        a, b = parse_object(bare), parse_object(defaulted)
        assert a.errors == b.errors == []
        assert a.obj == b.obj, kind


def _defaults(s: Schema) -> Any:
    """The object the API server's defaulting would build from an empty one."""
    if "default" in s:
        return s["default"]
    if s.get("type") == "object":
        out = {k: _defaults(v) for k, v in s.get("properties", {}).items()}
        return {k: v for k, v in out.items() if v is not None and v != {}}
    return None


# ------------------------------------------------------------------ chart, values, templates

TEMPLATES = CHART / "templates"
VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


@cache
def values() -> dict[str, Any]:
    v: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return v


def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "rackroute"
    assert (str(chart["version"]), str(chart["appVersion"])) == ("0.1.0", "0.1.0")
    assert (CHART / "README.md").is_file()


def test_values_defaults() -> None:
    v = values()
    assert set(v["image"]) >= {"repository", "tag", "pullPolicy"}
    assert v["agent"]["speaker"] in ("gobgp", "exabgp")
    assert v["agent"]["metricsPort"] == 9962
    assert isinstance(v["agent"]["importRoutes"], bool)
    assert v["agent"]["tolerations"] == [{"operator": "Exists"}]
    assert v["operator"]["replicas"] == 1
    assert v["ipam"]["mode"] in ("cluster-pool", "kubernetes")
    assert v["routingMode"] in ("native", "tunnel", "hybrid")
    assert v["tunnelProtocol"] in ("vxlan", "geneve")
    assert v["tunnelUnderlay"] in ("auto", "ipv4", "ipv6")
    assert v["bgpRouterIDPool"] == ""  # off: each node's own IPv4 address
    assert isinstance(v["rackrouteConfig"]["create"], bool)
    assert v["watchCiliumCRDs"] is False  # opt-in


def test_every_values_reference_exists() -> None:
    refs: set[str] = set()
    for f in TEMPLATES.iterdir():
        refs |= set(VALUES_REF.findall(f.read_text()))
    assert len(refs) > 20, "the regex found too few references"
    missing = []
    for ref in sorted(refs):
        node: Any = values()
        for part in ref.strip(".").split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(ref)
                break
            node = node[part]
    assert missing == []


def test_every_included_helper_is_defined() -> None:
    defined = set(re.findall(r'define "([^"]+)"', template("_helpers.tpl")))
    used: set[str] = set()
    for f in TEMPLATES.iterdir():
        used |= set(re.findall(r'include "([^"]+)"', f.read_text()))
    assert used and used <= defined


def test_expected_templates_exist() -> None:
    names = {f.name for f in TEMPLATES.iterdir()}
    assert {
        "_helpers.tpl",
        "NOTES.txt",
        "agent-daemonset.yaml",
        "operator-deployment.yaml",
        "serviceaccounts.yaml",
        "rbac-agent.yaml",
        "rbac-operator.yaml",
        "metrics-service.yaml",
        "rackrouteconfig.yaml",
        "install-cni-configmap.yaml",
    } <= names


def test_agent_daemonset() -> None:
    t = template("agent-daemonset.yaml")
    assert "kind: DaemonSet" in t
    assert 'command: ["rackroute"]' in t
    assert re.search(r"- agent\n\s+- --node\n\s+- \$\(NODE_NAME\)", t)
    assert "fieldPath: spec.nodeName" in t
    for flag in ("--in-cluster", "--manifests", "--speaker", "--metrics-port", "--resync",
                 "--import-routes"):
        assert f"- {flag}" in t, flag
    assert "hostNetwork: true" in t
    assert "privileged: true" in t
    assert "priorityClassName: {{ .Values.agent.priorityClassName }}" in t
    assert values()["agent"]["priorityClassName"] == "system-node-critical"
    for path in ("/sys/fs/bpf", "/sys/fs/cgroup", "/run/netns", "/var/lib/rackroute",
                 "/run/rackroute", "/etc/cni/net.d", "/opt/cni/bin"):
        assert f"mountPath: {path}\n" in t, path
    assert "readinessProbe" in t and "livenessProbe" in t
    assert t.count("port: {{ .Values.agent.metricsPort }}") >= 2
    assert "install-cni" in t and "initContainers" in t



def test_agent_probes_ask_the_agent_whether_it_has_done_its_work() -> None:
    """Readiness is the agent's /readyz (200 once its first full reconcile pass is done,
    not merely once the metrics server listens), liveness its /healthz (the reconcile
    loop comes round); both on the metrics port, on the host's loopback."""
    t = template("agent-daemonset.yaml")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert re.search(rf"\n\s+{probe}:\n\s+httpGet:\n\s+path: {path}\n"
                         r"\s+port: \{\{ \.Values\.agent\.metricsPort \}\}\n"
                         r"\s+host: 127\.0\.0\.1\n", t), probe
    assert "path: /metrics" not in t
    readme = (CHART / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `agent.metricsPort`"))
    assert "/readyz" in row and "/healthz" in row

def test_agent_flags_are_ones_the_cli_accepts() -> None:
    from controller.cli import build_parser

    t = template("agent-daemonset.yaml")
    flags = set(re.findall(r"^\s+- (--[a-z0-9-]+)$", t, re.M))
    args = build_parser().parse_args(
        ["agent", "--node", "n1", "--manifests", "/m", "--speaker", "exabgp",
         "--metrics-port", "9962", "--resync", "30", "--import-routes"]
    )
    assert (args.node, args.speaker, args.metrics_port, args.import_routes) == (
        "n1", "exabgp", 9962, "pods")  # the flag alone: the cluster's pod addresses
    assert flags == {"--node", "--in-cluster", "--manifests", "--cni-conf", "--cni-mtu",
                     "--cni-network-name", "--cni-host-ports", "--speaker",
                     "--metrics-port", "--resync", "--import-routes", "--datapath", "--uplink",
                     "--bpf-pin-root", "--socket-lb-cgroup", "--per-packet-lb", "--host-routing",
                     "--service-loopback-ipv4", "--service-loopback-ipv6", "--network-policy",
                     "--cni-policy-wait", "--watch-cilium-crds"}
    dp = build_parser().parse_args(
        ["agent", "--node", "n1", "--manifests", "/m", "--datapath", "--uplink", "bond0",
         "--bpf-pin-root", "/sys/fs/bpf/rackroute", "--socket-lb-cgroup", "/sys/fs/cgroup/k",
         "--per-packet-lb", "off", "--host-routing", "kernel",
         "--service-loopback-ipv4", "169.254.77.1", "--service-loopback-ipv6", "fd00:77::1",
         "--network-policy", "--cni-policy-wait", "2.5", "--cni-conf", "/c",
         "--cni-mtu", "9000", "--cni-network-name", "rr"])
    assert dp.cni_policy_wait == 2.5
    assert (dp.cni_conf, dp.cni_mtu, dp.cni_network_name) == ("/c", 9000, "rr")
    assert (dp.cni_host_ports, dp.cni_bin_dir) == ("on", "/opt/cni/bin")  # the defaults
    assert (dp.datapath, dp.uplink, dp.bpf_pin_root, dp.socket_lb_cgroup, dp.per_packet_lb,
            dp.host_routing, str(dp.service_loopback_ipv4), str(dp.service_loopback_ipv6),
            dp.network_policy) \
        == (True, "bond0", "/sys/fs/bpf/rackroute", "/sys/fs/cgroup/k", "off", "kernel",
            "169.254.77.1", "fd00:77::1", True)
    op = template("operator-deployment.yaml")
    op_flags = set(re.findall(r"^\s+- (--[a-z-]+)$", op, re.M))
    assert op_flags == {"--in-cluster", "--leader-elect", "--manifests", "--interval",
                        "--watch-cilium-crds", "--metrics-port"}
    parsed = build_parser().parse_args(["operator", "--manifests", "/m", "--interval", "1",
                                        "--metrics-port", "9963"])
    assert (parsed.interval, parsed.metrics_port) == (1.0, 9963)
    # the operator's probes ask its metrics port, where it answers them
    assert "path: /readyz" in op and "path: /healthz" in op
    assert "port: {{ .Values.operator.metricsPort }}" in op
    for cmd in (["operator"], ["agent", "--node", "n1"]):
        assert build_parser().parse_args([*cmd, "--in-cluster"]).in_cluster


def test_operator_deployment() -> None:
    t = template("operator-deployment.yaml")
    assert "kind: Deployment" in t
    assert "replicas: {{ .Values.operator.replicas }}" in t
    assert re.search(r'command: \["rackroute"\]\n\s+args:\n\s+- operator\n', t)


# A tiny renderer for the template forms the data-only templates use.
def render(text: str, v: dict[str, Any]) -> str:
    def lookup(ref: str) -> Any:
        node: Any = v
        for part in ref.strip(".").split("."):
            node = node[part]
        return node

    # `{{- if .Values.x }}` blocks are kept or dropped by the value's truth; any other
    # condition (None) keeps both branches (those hold only `fail` checks)
    kept: list[str] = []
    stack: list[bool | None] = []
    for line in text.splitlines(keepends=True):
        simple = re.fullmatch(r"\s*\{\{-? if \.Values([.\w]+) -?\}\}\s*", line)
        if simple or re.fullmatch(r"\s*\{\{-? if .*\}\}\s*", line):
            stack.append(bool(lookup(simple.group(1))) if simple else None)
        elif re.fullmatch(r"\s*\{\{-? else -?\}\}\s*", line):
            stack[-1] = None if stack[-1] is None else not stack[-1]
        elif re.fullmatch(r"\s*\{\{-? end -?\}\}\s*", line):
            stack.pop()
        elif all(b is not False for b in stack):
            kept.append(line)
    text = "".join(kept)
    def to_yaml(m: re.Match[str]) -> str:
        dumped = yaml.safe_dump(lookup(m.group(1)), default_flow_style=False).rstrip("\n")
        pad = " " * int(m.group(2))
        return "".join("\n" + pad + line for line in dumped.splitlines())

    text = re.sub(r"\n?[ \t]*\{\{- toYaml \.Values([.\w]+) \| nindent (\d+) \}\}", to_yaml, text)
    text = re.sub(r"\n?[ \t]*\{\{- include [^}]*\}\}", "", text)
    text = re.sub(r"\{\{ \.Values([.\w]+) \| quote \}\}",
                  lambda m: '"' + str(lookup(m.group(1))) + '"', text)
    text = re.sub(r"\{\{ \.Values([.\w]+) \}\}", lambda m: str(lookup(m.group(1))), text)
    text = re.sub(r"\{\{ \.Release\.Namespace \}\}", "rackroute-system", text)
    text = re.sub(r"\{\{ include [^}]*\}\}", "included", text)
    lines = [ln for ln in text.splitlines() if not re.fullmatch(r"\s*\{\{-?[^}]*\}\}\s*", ln)]
    assert not any("{{" in ln for ln in lines), [ln for ln in lines if "{{" in ln]
    return "\n".join(lines) + "\n"


def test_rendered_rackrouteconfig_parses_and_validates() -> None:
    for routing, underlay in (("native", "auto"), ("tunnel", "ipv6"), ("hybrid", "ipv4")):
        v = copy.deepcopy(values())
        v["routingMode"] = routing
        v["tunnelUnderlay"] = underlay
        v["ipam"]["clusterPoolIPv6PodCIDRList"] = ["fd00:10:244::/56"]
        doc = yaml.safe_load(render(template("rackrouteconfig.yaml"), v))
        assert doc["kind"] == "RackrouteConfig" and doc["metadata"]["name"] == "default"
        result = parse_object(doc)
        assert result.errors == []
        assert getattr(result.obj, "routing_mode", None) == routing
        assert getattr(result.obj, "tunnel_underlay", None) == underlay
        assert validate({k: doc[k] for k in ("apiVersion", "kind", "spec")},
                        schema("RackrouteConfig")) == []
        assert "bgpRouterIDPool" not in doc["spec"]  # empty: not rendered at all
        assert getattr(result.obj, "bgp_router_id_pool", "?") is None


def test_rendered_rackrouteconfig_carries_the_router_id_pool() -> None:
    v = copy.deepcopy(values())
    v["bgpRouterIDPool"] = "10.255.0.0/24"
    doc = yaml.safe_load(render(template("rackrouteconfig.yaml"), v))
    assert doc["spec"]["bgpRouterIDPool"] == "10.255.0.0/24"
    result = parse_object(doc)
    assert result.errors == []
    assert str(getattr(result.obj, "bgp_router_id_pool", None)) == "10.255.0.0/24"
    assert validate({k: doc[k] for k in ("apiVersion", "kind", "spec")},
                    schema("RackrouteConfig")) == []
    # the template refuses what is not shaped like an IPv4 CIDR before the API server does
    t = template("rackrouteconfig.yaml")
    check = re.search(r'if and \.Values\.bgpRouterIDPool \(not \(regexMatch "([^"]+)"', t)
    assert check is not None
    assert 'fail (printf "bgpRouterIDPool must be an IPv4 CIDR' in t[check.end():]
    shape = re.compile(check.group(1))
    assert shape.search("10.255.0.0/24") and shape.search("192.0.2.0/31")
    assert not any(shape.search(x) for x in ("fd00::/64", "10.255.0.0", "10.255.0.0/24 x"))


def _rbac(name: str, v: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    docs = yaml.safe_load_all(render(template(name), v or values()))
    return [d for d in docs if d is not None]


def _with_cilium() -> dict[str, Any]:
    v = copy.deepcopy(values())
    v["watchCiliumCRDs"] = True
    return v


WRITE = {"create", "update", "patch", "delete", "deletecollection", "*"}


def _writes(rules: list[dict[str, Any]]) -> set[str]:
    return {f"{g}/{r}" for rule in rules if WRITE & set(rule["verbs"])
            for g in rule["apiGroups"] for r in rule["resources"]}


def test_rbac_is_least_privilege() -> None:
    plurals = {d["spec"]["names"]["plural"] for d in crds().values()}
    docs = _rbac("rbac-agent.yaml") + _rbac("rbac-operator.yaml")
    for d in docs:
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            if "rackroute.io" in rule["apiGroups"]:
                assert {r.split("/")[0] for r in rule["resources"]} <= plurals, rule
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    agent = by[("ClusterRole", "rackroute-agent")]["rules"]
    assert _writes(agent) == {"rackroute.io/bgpnodeconfigs", "rackroute.io/bgpnodeconfigs/status",
                              "rackroute.io/nodenetworks/status", "/events",
                              "events.k8s.io/events"}
    assert not any("secrets" in r["resources"] for r in agent), "secrets only in the namespace"
    secrets = by[("Role", "rackroute-agent-secrets")]
    assert secrets["metadata"]["namespace"] == "rackroute-system"
    assert secrets["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                                 "verbs": ["get", "list", "watch"]}]
    op_secrets = by[("Role", "rackroute-operator-secrets")]
    assert op_secrets["metadata"]["namespace"] == "rackroute-system"
    assert op_secrets["rules"] == secrets["rules"]  # read, in the namespace alone
    operator = by[("ClusterRole", "rackroute-operator")]["rules"]
    assert not any("secrets" in r["resources"] for r in operator)
    assert _writes(operator) == {
        "/services/status", "rackroute.io/nodenetworks", "/events", "events.k8s.io/events",
        *(f"rackroute.io/{p}/status" for p in plurals - {"bgpnodeconfigs"}),
    }
    assert "/services" not in _writes(operator) and "/nodes" not in _writes(operator)
    # reading Cilium's objects adds no write
    cil = {(d["kind"], d["metadata"]["name"]): d
           for d in _rbac("rbac-agent.yaml", _with_cilium()) + _rbac("rbac-operator.yaml",
                                                                      _with_cilium())}
    assert _writes(cil[("ClusterRole", "rackroute-agent")]["rules"]) == _writes(agent)
    assert _writes(cil[("ClusterRole", "rackroute-operator")]["rules"]) == _writes(operator)


def test_cilium_crds_are_read_only_and_only_with_watch_cilium_crds() -> None:
    from controller.sources.kube import WATCH_CILIUM_KINDS
    from controller.sources.kubeapi import RESOURCES

    plurals = sorted(RESOURCES[k].plural for k in WATCH_CILIUM_KINDS)
    assert len(plurals) == 5
    for name in ("rbac-agent.yaml", "rbac-operator.yaml"):
        role = f"rackroute-{name.split('-')[1].split('.')[0]}"
        off = {(d["kind"], d["metadata"]["name"]): d for d in _rbac(name)}
        assert "cilium" not in yaml.safe_dump(list(off.values())).lower()
        on = {(d["kind"], d["metadata"]["name"]): d for d in _rbac(name, _with_cilium())}
        [rule] = [r for d in on.values() for r in d.get("rules", [])
                  if "cilium.io" in r["apiGroups"]]
        assert rule in on[("ClusterRole", role)]["rules"]
        assert dict(rule, resources=sorted(rule["resources"])) == {
            "apiGroups": ["cilium.io"], "resources": plurals, "verbs": ["get", "list", "watch"]}
    # the flag goes with it, where the commands read the API server
    # (helm itself renders them in tests/kube/test_chart_install.py)
    for t in (template("agent-daemonset.yaml"), template("operator-deployment.yaml")):
        assert t.count("--watch-cilium-crds") == 1
        block = t[t.index('{{- if eq (include "rackroute.source" .) "kubernetes" }}'):]
        flag = block.index("{{- if .Values.watchCiliumCRDs }}\n")
        assert re.match(r"\{\{- if \.Values\.watchCiliumCRDs \}\}\n\s+- --watch-cilium-crds\n"
                        r"\s+\{\{- end \}\}\n", block[flag:])
        assert flag < block.index("{{- else }}")  # not with source manifests


# ------------------------------------------------------------------ install-cni.py


def _install_cni() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_cni", CHART / "files" / "install-cni.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_datapath_values_drive_the_agent_flags_and_the_cni_pin_dir() -> None:
    v = values()["datapath"]
    assert (v["enabled"], v["perPacketLB"], v["socketLBCgroup"], v["hostRouting"]) == (
        False, True, "", "bpf")
    assert v["pinRoot"] == "/sys/fs/bpf/rackroute"
    t = template("agent-daemonset.yaml")
    block = t[t.index("{{- if .Values.datapath.enabled }}"):t.index("{{- range .Values.agent")]
    for flag in ("--datapath", "--uplink", "--bpf-pin-root", "--socket-lb-cgroup",
                 "--per-packet-lb", "--host-routing", "--service-loopback-ipv4",
                 "--service-loopback-ipv6"):
        assert f"- {flag}\n" in block, flag
    # the service loopback addresses: passed on only when set (empty: the agent's)
    assert (v["serviceLoopbackIPv4"], v["serviceLoopbackIPv6"]) == ("", "")
    for fam in ("IPv4", "IPv6"):
        lb = block[block.index(f"{{{{- if .Values.datapath.serviceLoopback{fam} }}}}"):]
        assert lb.index(f"- --service-loopback-{fam.lower()}\n") < lb.index("{{- end }}")
    assert 'fail "datapath.perPacketLB false needs datapath.socketLBCgroup' in block
    # the CNI plugin's wait for a new pod's policy: with network policy only
    assert v["networkPolicyWait"] == 10
    pol = block[block.index("{{- if .Values.datapath.networkPolicy }}"):]
    assert pol.index("- --cni-policy-wait\n") < pol.index("{{- end }}")
    # the agent's default is bpf: only kernel is passed on, and anything else refused
    hr = block[block.index('{{- if ne .Values.datapath.hostRouting "bpf" }}'):]
    assert hr.index('fail "datapath.hostRouting must be bpf or kernel"') \
        < hr.index("- --host-routing\n            - kernel\n")
    # the plugin's pin dir is the agent's (<pinRoot>/<node>, as --bpf-instance defaults to
    # the node name), whenever the plugin has programs to attach: the pod programs (with
    # per-packet LB, or without it to forward in BPF), or the network policy ones alone
    # (then CNI_BPF_POD_PROGRAMS=0: the veths carry none), as the agent's
    # DatapathSettings.cni_pin_dir decides
    env = t[t.index("{{- if and .Values.datapath.enabled (or .Values.datapath.perPacketLB "
                    '(eq .Values.datapath.hostRouting "bpf") .Values.datapath.networkPolicy) }}'):]
    assert env.index("- name: CNI_BPF_PIN_DIR") < env.index("{{- end }}")
    assert 'value: "{{ .Values.datapath.pinRoot }}/$(NODE_NAME)"' in env
    assert t.index("- name: NODE_NAME") < t.index("- name: CNI_BPF_PIN_DIR")  # $(..) order
    bare = env[env.index("{{- if not (or .Values.datapath.perPacketLB "
                         '(eq .Values.datapath.hostRouting "bpf")) }}'):]
    assert re.match(r"\{\{[^}]+\}\}\n\s+- name: CNI_BPF_POD_PROGRAMS[^\n]*\n"
                    r'\s+value: "0"\n\s+\{\{- end \}\}\n', bare)
    wait = env[env.index("{{- if .Values.datapath.networkPolicy }}"):]
    assert re.match(r"\{\{[^}]+\}\}\n\s+- name: CNI_BPF_POLICY_WAIT\n"
                    r"\s+value: \{\{ \.Values\.datapath\.networkPolicyWait \| quote \}\}\n"
                    r"\s+\{\{- end \}\}\n\s+\{\{- end \}\}\n", wait)



def test_network_policy_without_the_datapath_is_refused() -> None:
    """--network-policy is rendered only inside the datapath block: networkPolicy without
    datapath.enabled would install a cluster that enforces no policy, silently. The chart
    fails the render instead, naming both values, before any object is rendered."""
    t = template("agent-daemonset.yaml")
    check = re.search(r"\{\{- if and \.Values\.datapath\.networkPolicy "
                      r"\(not \.Values\.datapath\.enabled\) \}\}\n"
                      r"\{\{- fail \"([^\"]+)\" \}\}\n\{\{- end \}\}\n", t)
    assert check is not None
    assert "datapath.networkPolicy" in check.group(1)
    assert "datapath.enabled" in check.group(1)
    assert check.end() <= t.index("apiVersion: apps/v1")
    # the flag itself stays inside the datapath block
    block = t[t.index("{{- if .Values.datapath.enabled }}"):t.index("{{- range .Values.agent")]
    assert "- --network-policy\n" in block and t.count("- --network-policy\n") == 1
    readme = (CHART / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `datapath.networkPolicy`"))
    assert "datapath.enabled" in row and "refuses" in row


def enclosing(text: str, needle: str) -> list[str]:
    """The template conditions around the one line holding needle, outermost first
    (an `else` branch as "not <condition>")."""
    stack: list[str] = []
    found: list[list[str]] = []
    for line in text.splitlines():
        tag = re.fullmatch(r"\s*\{\{-? (if|with|range|else|end)\b ?(.*?) ?-?\}\}\s*", line)
        if tag and tag.group(1) in ("if", "with", "range"):
            stack.append(tag.group(2) if tag.group(1) == "if" else tag.group(0).strip())
        elif tag and tag.group(1) == "else":
            stack[-1] = f"not {stack[-1]}"
        elif tag:
            stack.pop()
        elif needle in line:
            found.append(list(stack))
    assert len(found) == 1, (needle, found)
    return found[0]


def test_the_agent_keeps_the_conflist_with_either_source() -> None:
    """--cni-conf (and the pod MTU and network name the conflist carries) reach the agent
    from the API server too, not with manifests alone: it keeps the conflist the init
    container wrote first (pod CIDR changes, the MTU while tunnelling, the policy wait, a
    deleted or edited file)."""
    t = template("agent-daemonset.yaml")
    assert enclosing(t, "- --in-cluster") == ['eq (include "rackroute.source" .) "kubernetes"']
    for flag in ("- --cni-conf", "- --cni-mtu", "- --cni-network-name"):
        assert enclosing(t, flag) == [".Values.cni.install"], flag
    args = t[t.index("- --cni-conf\n"):]
    assert re.match(r'- --cni-conf\n\s+- \{\{ printf "/etc/cni/net\.d/%s" '
                    r"\.Values\.cni\.confName \| quote \}\}\n\s+- --cni-mtu\n"
                    r"\s+- \{\{ \.Values\.cni\.mtu \| quote \}\}\n\s+- --cni-network-name\n"
                    r"\s+- \{\{ \.Values\.cni\.networkName \| quote \}\}\n", args)
    assert "mountPath: /etc/cni/net.d\n" in t  # the host's conf dir, where the agent sees it
    # the init container still writes the first conflist from the API server (the node
    # goes Ready before the agent runs), with the same MTU
    assert enclosing(t, "- name: CNI_CONF_BY_AGENT") == [
        ".Values.cni.install", 'eq (include "rackroute.source" .) "manifests"']
    readme = (CHART / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `cni.mtu`"))
    assert "by hand" not in row and "subtract" not in row and "lowers" in row

def test_install_cni_conflist() -> None:
    mod = _install_cni()
    doc = mod.conflist("rackroute", ["10.244.1.0/24"], 9000, "/var/lib/rackroute/cni", "/p")
    assert doc["cniVersion"] == "1.0.0" and doc["name"] == "rackroute"
    assert doc["cniVersions"] == ["1.0.0", "1.1.0"]  # GC and STATUS where the runtime can
    (plugin,) = doc["plugins"]
    assert plugin == {"type": "rackroute-cni", "podCIDRs": ["10.244.1.0/24"], "mtu": 9000,
                      "dataDir": "/var/lib/rackroute/cni", "bpf": {"pinDir": "/p"}}
    assert "bpf" not in mod.conflist("n", ["10.0.0.0/24"], 1500, "/d", "")["plugins"][0]
    # the network policy programs alone (the veths carry none), and the policy wait: the
    # document the agent writes for the same settings
    from controller.reconcile.cniconf import conflist

    alone = mod.conflist("rackroute", ["10.244.1.0/24"], 1500, "/d", "/p", False, 10.0)
    assert alone["plugins"][0]["bpf"] == {"pinDir": "/p", "policyWait": 10.0,
                                          "podPrograms": False}
    assert alone == conflist(["10.244.1.0/24"], 1500, Path("/d"), Path("/p"), 10.0, False)


def test_host_ports_reach_the_agent_and_the_init_container() -> None:
    """cni.hostPorts (default true) reaches both writers of the conflist: the agent as
    --cni-host-ports on|off, the init container as CNI_HOST_PORTS 1|0; both look for
    portmap in the host's CNI bin dir (mounted where the agent's --cni-bin-dir defaults)."""
    assert values()["cni"]["hostPorts"] is True
    t = template("agent-daemonset.yaml")
    assert enclosing(t, "- --cni-host-ports") == [".Values.cni.install"]
    assert re.search(r"- --cni-host-ports\n\s+- \{\{ ternary \"on\" \"off\" "
                     r"\.Values\.cni\.hostPorts \| quote \}\}\n", t)
    assert enclosing(t, "- name: CNI_HOST_PORTS") == [".Values.cni.install"]
    assert re.search(r"- name: CNI_HOST_PORTS[^\n]*\n\s+value: \{\{ ternary \"1\" \"0\" "
                     r"\.Values\.cni\.hostPorts \| quote \}\}\n", t)
    assert "mountPath: /opt/cni/bin\n" in t
    from controller.cli import build_parser

    base = ["agent", "--node", "n1", "--manifests", "/m"]
    assert build_parser().parse_args(base).cni_host_ports == "on"
    assert build_parser().parse_args([*base, "--cni-host-ports", "off"]).cni_host_ports \
        == "off"
    readme = (CHART / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `cni.hostPorts`"))
    assert "`true`" in row and "portmap" in row and "warning" in row


def test_install_cni_conflist_with_host_ports_is_the_agents(tmp_path: Path) -> None:
    """The init container's conflist chains portmap exactly as the agent's does (with
    host ports, and the plugin in the bin dir), so the agent does not rewrite it."""
    from controller.reconcile.cniconf import conflist

    mod = _install_cni()
    doc = mod.conflist("rackroute", ["10.244.1.0/24"], 1500, "/d", "/p", True, None, True)
    assert [p["type"] for p in doc["plugins"]] == ["rackroute-cni", "portmap"]
    assert doc == conflist(["10.244.1.0/24"], 1500, Path("/d"), Path("/p"), None, True,
                           "rackroute", True)
    assert mod.conflist("n", ["10.0.0.0/24"], 1500, "/d", "") == conflist(
        ["10.0.0.0/24"], 1500, Path("/d"), None, name="n", host_ports=False)
    (tmp_path / "portmap").write_text("")
    assert mod.chain_portmap(True, tmp_path)
    assert not mod.chain_portmap(False, tmp_path)
    assert not mod.chain_portmap(True, tmp_path / "empty")


@pytest.mark.parametrize("installed", [True, False])
def test_install_cni_chains_portmap_when_asked_and_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    installed: bool,
) -> None:
    """CNI_HOST_PORTS=1 (the chart's default): portmap chained when it is in the bin
    dir, else left out with a warning naming it (CNI_HOST_PORTS=0: chain_portmap above)."""
    import json

    mod = _install_env(tmp_path, monkeypatch, IPAM_MODE="kubernetes", CNI_HOST_PORTS="1")
    if installed:
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "portmap").write_text("#!/bin/sh\n")
    monkeypatch.setattr(mod, "api_get", lambda path: {"spec": {"podCIDRs": ["10.244.0.0/24"]}})
    assert mod.main() == 0
    conf = json.loads((tmp_path / "net.d" / "05-rackroute.conflist").read_text())
    assert [p["type"] for p in conf["plugins"]] == (
        ["rackroute-cni", "portmap"] if installed else ["rackroute-cni"])
    missing = f"{tmp_path / 'bin' / 'portmap'} is missing"
    assert (missing in capsys.readouterr().err) == (not installed)


def test_install_cni_writes_a_policy_only_conflist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    mod = _install_env(tmp_path, monkeypatch, IPAM_MODE="kubernetes", CNI_BPF_PIN_DIR="/p/n1",
                       CNI_BPF_POD_PROGRAMS="0", CNI_BPF_POLICY_WAIT="7")
    monkeypatch.setattr(mod, "api_get", lambda path: {"spec": {"podCIDRs": ["10.244.0.0/24"]}})
    assert mod.main() == 0
    conf = json.loads((tmp_path / "net.d" / "05-rackroute.conflist").read_text())
    assert conf["plugins"][0]["bpf"] == {"pinDir": "/p/n1", "policyWait": 7.0,
                                         "podPrograms": False}


def test_install_cni_reads_the_ipam_mode_source(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _install_cni()
    asked: list[str] = []

    def fake_get(path: str) -> dict[str, Any] | None:
        asked.append(path)
        return {"spec": {"podCIDRs": ["10.244.7.0/24"]}} if "nodenetworks" in path else None

    monkeypatch.setattr(mod, "api_get", fake_get)
    assert mod.pod_cidrs("n7", "cluster-pool") == ["10.244.7.0/24"]
    assert mod.pod_cidrs("n7", "kubernetes") == []
    assert asked == ["/apis/rackroute.io/v1alpha1/nodenetworks/n7", "/api/v1/nodes/n7"]


def _install_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Any:
    """The install-cni module, with a plugin to copy and the DaemonSet's environment
    (plus `extra`) pointing into tmp_path."""
    mod = _install_cni()
    src = tmp_path / "rackroute-cni"
    src.write_text("#!/bin/sh\n")
    env = {"NODE_NAME": "n1", "CNI_SOURCE": str(src), "CNI_BIN_DIR": str(tmp_path / "bin"),
           "CNI_CONF_DIR": str(tmp_path / "net.d"), **extra}
    for k, val in env.items():
        monkeypatch.setenv(k, val)
    return mod


def test_install_cni_writes_binary_and_conflist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    mod = _install_env(tmp_path, monkeypatch, IPAM_MODE="kubernetes", CNI_MTU="1400")
    monkeypatch.setattr(mod, "api_get", lambda path: {"spec": {"podCIDRs": ["10.244.0.0/24"]}})
    assert mod.main() == 0
    assert (tmp_path / "bin" / "rackroute-cni").stat().st_mode & 0o111
    conf = json.loads((tmp_path / "net.d" / "05-rackroute.conflist").read_text())
    assert conf["plugins"][0]["podCIDRs"] == ["10.244.0.0/24"]
    assert conf["plugins"][0]["mtu"] == 1400
    assert sorted(p.name for p in (tmp_path / "net.d").iterdir()) == ["05-rackroute.conflist"]


def test_install_cni_leaves_the_conflist_to_the_agent_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _install_env(tmp_path, monkeypatch, CNI_CONF_BY_AGENT="1")

    def no_api(path: str) -> None:
        raise AssertionError(f"asked the API server for {path}")

    monkeypatch.setattr(mod, "api_get", no_api)
    assert mod.main() == 0
    assert (tmp_path / "bin" / "rackroute-cni").exists()
    assert not (tmp_path / "net.d").exists() or not any((tmp_path / "net.d").iterdir())


def test_the_datapath_gets_the_kernel_headers_bcc_compiles_against() -> None:
    """With the datapath the agent compiles its programs at start: the host's /lib/modules
    and /usr/src are mounted read-only then, and only then."""
    t = template("agent-daemonset.yaml")
    mounts = t[t.index("- name: xtables-lock\n              mountPath"):t.index("volumes:")]
    block = mounts[mounts.index("{{- if .Values.datapath.enabled }}"):]
    for name, path in (("lib-modules", "/lib/modules"), ("usr-src", "/usr/src")):
        assert re.search(rf"- name: {name}\n\s+mountPath: {path}\n\s+readOnly: true", block)
        vol = t[t.index(f"- name: {name}\n          hostPath:"):]
        assert vol.index(f"path: {path}") < vol.index("type: Directory")
    assert block.index("usr-src") < block.index("{{- end }}")
