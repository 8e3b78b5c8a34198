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
    ("NodeNetwork", ("spec", "podCIDRs", 0), 10),
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
