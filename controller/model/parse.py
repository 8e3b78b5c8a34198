"""Raw manifest dicts → model objects, with every problem reported by kind, name and field.

`parse_object` never raises on bad input: it returns the object (or None) and the list of
messages, each shaped `<Kind> <ns/name>: <field path>: <what is wrong>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.model.fields import Reader, type_name
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

Parser = Callable[[Meta, Reader], object]

RACKROUTE_GROUP = "rackroute.io/v1alpha1"
CILIUM_VERSIONS = ("cilium.io/v2", "cilium.io/v2alpha1")

# kind -> (parser, namespaced)
KINDS: dict[str, tuple[Parser, bool]] = {
    "Node": (parse_node, False),
    "Service": (parse_service, True),
    "EndpointSlice": (parse_endpoint_slice, True),
    "Secret": (parse_secret, True),
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
}

CILIUM_KINDS = {
    "CiliumBGPClusterConfig": "BGPClusterConfig",
    "CiliumBGPPeerConfig": "BGPPeerConfig",
    "CiliumBGPAdvertisement": "BGPAdvertisement",
    "CiliumBGPNodeConfigOverride": "BGPNodeConfigOverride",
    "CiliumLoadBalancerIPPool": "LoadBalancerIPPool",
}

# Kinds we know and deliberately do not read (written by rackroute, or not ours).
IGNORED_KINDS = frozenset({"BGPNodeConfig", "Namespace", "Pod", "Deployment", "ConfigMap"})


@dataclass
class ParseResult:
    """The outcome of parsing one raw object."""

    kind: str | None
    ref: str
    obj: object | None
    errors: list[str] = field(default_factory=list)
    ignored: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(kind, ns/name): the identity an object keeps across edits."""
        return (self.kind or "", self.ref.split(" ", 1)[-1])


def resolve_kind(api_version: Any, kind: Any) -> tuple[str | None, str | None]:
    """Map (apiVersion, kind) onto a model kind; returns (kind, error)."""
    if not isinstance(kind, str) or not kind:
        return None, "kind: required"
    if not isinstance(api_version, str) or not api_version:
        return None, "apiVersion: required"
    if kind in CILIUM_KINDS:
        if api_version not in CILIUM_VERSIONS:
            return (
                None,
                f"apiVersion: must be one of {', '.join(CILIUM_VERSIONS)}, got {api_version!r}",
            )
        return CILIUM_KINDS[kind], None
    if kind in IGNORED_KINDS:
        return kind, None
    if kind not in KINDS:
        return None, f"kind: unsupported kind {kind!r}"
    want = API_VERSIONS.get(kind, (RACKROUTE_GROUP,))
    if api_version not in want:
        return None, f"apiVersion: must be {' or '.join(want)} for {kind}, got {api_version!r}"
    return kind, None


def parse_meta(kind: str, namespaced: bool, r: Reader) -> Meta | None:
    m = r.child("metadata")
    name = m.text("name", required=True)
    ns = (m.text("namespace", "default") or "default") if namespaced else ""
    if name is not None and not name.strip():
        m.error("name", "must not be empty")
        name = None
    if name is None:
        return None
    return Meta(
        kind=kind,
        name=name,
        namespace=ns,
        labels=frozen_map(m.str_map("labels")),
        annotations=frozen_map(m.str_map("annotations")),
        generation=m.integer("generation", 1, lo=0) or 1,
        creation_timestamp=m.text("creationTimestamp", "") or "",
        uid=m.text("uid", "") or "",
    )


def parse_object(raw: Any, origin: str = "") -> ParseResult:
    """Parse one manifest document; `origin` names it when it has no name (file#index)."""
    where = origin or "<unnamed>"
    if not isinstance(raw, dict):
        return ParseResult(None, where, None, [f"{where}: must be an object, got {type_name(raw)}"])
    raw_kind = raw.get("kind")
    kind, err = resolve_kind(raw.get("apiVersion"), raw_kind)
    shown_kind = raw_kind if isinstance(raw_kind, str) and raw_kind else "object"
    if kind is None:
        name = (
            (raw.get("metadata") or {}).get("name")
            if isinstance(raw.get("metadata"), dict)
            else None
        )
        ref = f"{shown_kind} {name}" if isinstance(name, str) else f"{shown_kind} {where}"
        return ParseResult(None, ref, None, [f"{ref}: {err}"])
    if kind in IGNORED_KINDS:
        return ParseResult(kind, f"{kind} {where}", None, ignored=True)
    parser, namespaced = KINDS[kind]
    r = Reader(raw)
    meta = parse_meta(kind, namespaced, r)
    if meta is None:
        ref = f"{shown_kind} {where}"
        return ParseResult(kind, ref, None, [f"{ref}: {e}" for e in r.errors])
    ref = f"{shown_kind} {meta.key}"
    obj = parser(meta, r)
    if r.errors:
        return ParseResult(kind, f"{kind} {meta.key}", None, [f"{ref}: {e}" for e in r.errors])
    return ParseResult(kind, f"{kind} {meta.key}", obj)
