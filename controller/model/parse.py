"""Raw manifest dicts → model objects, with every problem reported by kind, name and field.

`parse_object` never raises on bad input: it returns the object (or None) and the list of
messages, each shaped `<Kind> <ns/name>: <field path>: <what is wrong>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from controller.model.fields import Reader, describe
from controller.model.meta import Meta, frozen_map
from controller.model.parse_crds import (
    parse_advertisement,
    parse_cluster_config,
    parse_network_config,
    parse_node_network,
    parse_node_override,
    parse_peer_config,
    parse_pool,
)
from controller.model.parse_k8s import (
    parse_endpoint_slice,
    parse_node,
    parse_secret,
    parse_service,
)
from controller.model.parse_policy import parse_namespace, parse_network_policy, parse_pod

Parser = Callable[[Meta, Reader], object]

RACKROUTE_GROUP = "rackroute.io/v1alpha1"
CILIUM_VERSIONS = ("cilium.io/v2", "cilium.io/v2alpha1")

# kind -> (parser, namespaced)
KINDS: dict[str, tuple[Parser, bool]] = {
    "Node": (parse_node, False),
    "Service": (parse_service, True),
    "EndpointSlice": (parse_endpoint_slice, True),
    "Secret": (parse_secret, True),
    "Namespace": (parse_namespace, False),
    "Pod": (parse_pod, True),
    "NetworkPolicy": (parse_network_policy, True),
    "BGPClusterConfig": (parse_cluster_config, False),
    "BGPPeerConfig": (parse_peer_config, False),
    "BGPAdvertisement": (parse_advertisement, False),
    "BGPNodeConfigOverride": (parse_node_override, False),
    "LoadBalancerIPPool": (parse_pool, False),
    "NodeNetwork": (parse_node_network, False),
    "RackrouteConfig": (parse_network_config, False),
}

API_VERSIONS: dict[str, tuple[str, ...]] = {
    "Node": ("v1",),
    "Service": ("v1",),
    "Secret": ("v1",),
    "EndpointSlice": ("discovery.k8s.io/v1",),
    "Namespace": ("v1",),
    "Pod": ("v1",),
    "NetworkPolicy": ("networking.k8s.io/v1",),
}

CILIUM_KINDS = {
    "CiliumBGPClusterConfig": "BGPClusterConfig",
    "CiliumBGPPeerConfig": "BGPPeerConfig",
    "CiliumBGPAdvertisement": "BGPAdvertisement",
    "CiliumBGPNodeConfigOverride": "BGPNodeConfigOverride",
    "CiliumLoadBalancerIPPool": "LoadBalancerIPPool",
}

# Kinds we know and deliberately do not read (written by rackroute, or not ours).
IGNORED_KINDS = frozenset({"BGPNodeConfig", "Deployment", "ConfigMap"})


@dataclass
class ParseResult:
    """The outcome of parsing one raw object."""

    kind: str | None  # the model's kind (a Cilium spelling's is ours)
    ref: str  # `Kind ns/name` with the kind as the object spells it
    obj: object | None
    errors: list[str] = field(default_factory=list)
    ignored: bool = False
    generation: int = 0  # metadata.generation of an object that does not parse (0: none)

    @property
    def key(self) -> tuple[str, str]:
        """(kind as written, ns/name): the identity an object keeps across edits. A Cilium
        spelling and a rackroute object of the same name are two objects."""
        written, _, name = self.ref.partition(" ")
        return (written if self.kind else "", name)


def _want_versions(kind: str) -> tuple[str, ...]:
    if kind in CILIUM_KINDS:
        return CILIUM_VERSIONS
    return API_VERSIONS.get(kind, (RACKROUTE_GROUP,))


def resolve_kind(api_version: Any, kind: Any) -> tuple[str | None, str | None]:
    """Map (apiVersion, kind) onto a model kind; returns (kind, error)."""
    if kind is None or kind == "":
        return None, "kind: required"
    if not isinstance(kind, str):
        return None, f"kind: must be a string, got {describe(kind)}"
    if kind in IGNORED_KINDS:
        return kind, None
    if kind not in KINDS and kind not in CILIUM_KINDS:
        return None, f"kind: unsupported kind {kind!r}"
    want = _want_versions(kind)
    if api_version is None or api_version == "":
        return None, f"apiVersion: required ({' or '.join(want)} for {kind})"
    if api_version not in want:
        shown = repr(api_version) if isinstance(api_version, str) else describe(api_version)
        return None, f"apiVersion: must be {' or '.join(want)} for {kind}, got {shown}"
    return CILIUM_KINDS.get(kind, kind), None


def _read_meta(kind: str, namespaced: bool, r: Reader, written_kind: str = ""
               ) -> tuple[Meta, bool]:
    """The object's metadata, and whether it has a usable name (errors are recorded);
    `written_kind`: the kind as spelled, when that is not `kind`."""
    m = r.child("metadata")
    name = m.text("name", required=True)
    ns = (m.text("namespace", "default") or "default") if namespaced else ""
    meta = Meta(
        kind=kind,
        name=name or "",
        namespace=ns,
        labels=frozen_map(m.str_map("labels")),
        annotations=frozen_map(m.str_map("annotations")),
        generation=m.integer("generation", 1, lo=0) or 1,
        creation_timestamp=_timestamp(m),
        uid=m.text("uid", "") or "",
        written_kind=written_kind,
    )
    return meta, name is not None


def parse_meta(kind: str, namespaced: bool, r: Reader) -> Meta | None:
    """The object's metadata; None when it has no usable name."""
    meta, named = _read_meta(kind, namespaced, r)
    return meta if named else None


def _raw_ref(raw: dict[str, Any], shown_kind: str, where: str) -> str:
    """`Kind ns/name` from a raw object that could not be resolved to a model kind."""
    md = raw.get("metadata")
    name = md.get("name") if isinstance(md, dict) else None
    if not isinstance(name, str) or not name.strip():
        return f"{shown_kind} {where}"
    ns = md.get("namespace") if isinstance(md, dict) else None
    entry = KINDS.get(CILIUM_KINDS.get(shown_kind, shown_kind))
    if entry is not None and entry[1]:
        ns = ns if isinstance(ns, str) and ns else "default"
    elif entry is not None:
        ns = None
    return f"{shown_kind} {ns}/{name}" if isinstance(ns, str) and ns else f"{shown_kind} {name}"


def _timestamp(m: Reader) -> str:
    """creationTimestamp normalized to UTC `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` so that text
    order is time order whatever offset or precision the manifest used; "" if unset."""
    raw = m.data.get("creationTimestamp")
    if raw is None:
        return ""
    if isinstance(raw, datetime):  # YAML parses unquoted timestamps itself
        ts = raw
    elif isinstance(raw, date):
        ts = datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw.strip())
        except ValueError:
            m.error("creationTimestamp", f"not an RFC 3339 timestamp: {raw!r}")
            return ""
    else:
        m.error("creationTimestamp", f"not an RFC 3339 timestamp: {raw!r}")
        return ""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_object(raw: Any, origin: str = "") -> ParseResult:
    """Parse one manifest document; `origin` names it when it has no name (file#index)."""
    where = origin or "<unnamed>"
    if not isinstance(raw, dict):
        return ParseResult(None, where, None, [f"{where}: must be an object, got {describe(raw)}"])
    raw_kind = raw.get("kind")
    kind, err = resolve_kind(raw.get("apiVersion"), raw_kind)
    shown_kind = raw_kind if isinstance(raw_kind, str) and raw_kind else "object"
    if kind is None:
        ref = _raw_ref(raw, shown_kind, where)
        return ParseResult(None, ref, None, [f"{ref}: {err}"])
    if kind in IGNORED_KINDS:
        return ParseResult(kind, _raw_ref(raw, kind, where), None, ignored=True)
    parser, namespaced = KINDS[kind]
    r = Reader(raw)
    meta, named = _read_meta(kind, namespaced, r, shown_kind if shown_kind != kind else "")
    # Without a name the object is rejected, but its other fields are still checked so that
    # every problem is reported at once.
    obj = parser(meta, r)
    ref = f"{shown_kind} {meta.key}" if named else f"{shown_kind} {where}"
    if r.errors:
        return ParseResult(kind, ref, None, [f"{ref}: {e}" for e in r.errors],
                           generation=meta.generation)
    return ParseResult(kind, ref, obj)
