"""Parsers for what network policy reads: Namespace, Pod (v1) and NetworkPolicy
(networking.k8s.io/v1).

Like the other parsers they record every problem on the Reader (field path and what is
wrong) and never raise; `parse_object` then rejects an object with any error as a whole.

A NetworkPolicy is checked more strictly than other kinds, and its parser returns None as
soon as anything in it is wrong, so that no caller can ever use part of one: a policy
applied without the parts that failed could allow what it was written to deny (a peer
list whose entries were all dropped would read as "every peer", a dropped `ports` entry
as "every port", a dropped `except` would widen an ipBlock). For the same reason fields
the API does not define (`ingres`, a rule's `to` under ingress, an ipBlock's `expect`)
are errors rather than silently ignored. The values the API server fills in or fixes are
taken as it does: policyTypes defaulted from the rules, host bits of an ipBlock prefix
cleared.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

from bgp.types import IPAddress, IPNetwork
from controller.model.fields import Reader, describe, key_path, parse_loose_cidr
from controller.model.meta import LabelSelector, Meta, frozen_map
from controller.model.parse_crds import parse_selector
from controller.model.policy import (
    PROTOCOLS,
    ContainerPort,
    IPBlock,
    Namespace,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
POLICY_TYPES = ("Ingress", "Egress")
_PORT_NAME_CHARS = re.compile(r"[a-z0-9-]+")


def port_name_problem(name: str) -> str | None:
    """Why `name` is not an IANA service name (a valid port name), or None when it is:
    1-15 lowercase letters, digits and hyphens, at least one letter, no hyphen at either
    end or next to another."""
    if not 1 <= len(name) <= 15:
        return f"must be 1-15 characters, got {len(name)}"
    if not _PORT_NAME_CHARS.fullmatch(name):
        return "must hold only lowercase letters, digits and hyphens"
    if not any("a" <= c <= "z" for c in name):
        hint = " (a port number is written without quotes)" if name.isdigit() else ""
        return f"must contain at least one letter{hint}"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with a hyphen"
    if "--" in name:
        return "must not contain two hyphens in a row"
    return None


def _one_of(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _known_fields(r: Reader, what: str, known: tuple[str, ...]) -> None:
    """An error for each key of r that is not one of `known`."""
    for k in r.data:
        if k not in known:
            r.errors.append(f"{key_path(r.path, str(k))}: unknown field, {what} has only "
                            f"{_one_of(known)}")


def _objects(r: Reader, name: str) -> Iterator[Reader]:
    """Readers for the entries of a list field; an entry that is not an object is an
    error (and skipped, so it is not reported a second time for what it lacks)."""
    for path, item in r.items(name):
        if isinstance(item, dict):
            yield Reader(item, path, r.errors)
        else:
            r.errors.append(f"{path}: must be an object, got {describe(item)}")


# ------------------------------------------------------------------ Namespace


def parse_namespace(meta: Meta, r: Reader) -> Namespace:
    """A Namespace; its labels always carry kubernetes.io/metadata.name = its name (the
    API server sets that label on every namespace, overriding any other value)."""
    if meta.name:
        labels = {**meta.labels, NAMESPACE_NAME_LABEL: meta.name}
        meta = dataclasses.replace(meta, labels=frozen_map(labels))
    return Namespace(meta)


# ------------------------------------------------------------------ Pod


def _container_ports(c: Reader) -> list[ContainerPort]:
    out: list[ContainerPort] = []
    for p in _objects(c, "ports"):
        port = p.integer("containerPort", lo=1, hi=65535, required=True)
        proto = p.text("protocol", "TCP", choices=PROTOCOLS) or "TCP"
        name = p.text("name", "") or ""
        problem = port_name_problem(name) if name else None
        if problem is not None:
            p.error("name", f"port name {name!r} {problem}")
            continue
        if port is not None:
            out.append(ContainerPort(port, proto, name))
    return out


def _pod_ips(status: Reader) -> list[IPAddress]:
    ips: list[IPAddress] = []
    if status.data.get("podIPs") in (None, []):
        ip = status.ip("podIP") if status.data.get("podIP") not in (None, "") else None
        return [ip] if ip is not None else []
    for e in _objects(status, "podIPs"):
        ip = e.ip("ip", required=True)
        if ip is not None:
            ips.append(ip)
    return ips


def parse_pod(meta: Meta, r: Reader) -> Pod:
    """A Pod: node, host networking, the ports its containers declare (sidecars, init
    containers with restartPolicy Always, included: named ports resolve against them too)
    and its addresses (status.podIPs, or status.podIP when that list is absent or empty).
    A pod with no address or no port is fine (not yet scheduled, or serving nothing)."""
    spec, status = r.child("spec"), r.child("status")
    ports: list[ContainerPort] = []
    for c in _objects(spec, "containers"):
        ports.extend(_container_ports(c))
    for c in _objects(spec, "initContainers"):
        if c.text("restartPolicy") == "Always":
            ports.extend(_container_ports(c))
    node = spec.text("nodeName", "") or ""
    host_network = spec.flag("hostNetwork", False)
    return Pod(
        meta=meta,
        node=node,
        ips=tuple(_pod_ips(status)),
        ports=tuple(ports),
        host_network=host_network,
        phase=status.text("phase", "") or "",
    )


# ------------------------------------------------------------------ NetworkPolicy


def _ip_block(b: Reader) -> IPBlock | None:
    _known_fields(b, "an ipBlock", ("cidr", "except"))
    cidr: IPNetwork | None = None
    if b.has("cidr"):
        cidr = parse_loose_cidr(b.data["cidr"], b.at("cidr"), b.errors)
    else:
        b.error("cidr", "required")
    excepts: list[IPNetwork] = []
    for path, raw in b.items("except"):
        net = parse_loose_cidr(raw, path, b.errors)
        if net is None or cidr is None:
            continue
        written = str(raw).strip()
        shown = written if written == str(net) else f"{written} (that is {net})"
        if net.version != cidr.version:
            b.errors.append(
                f"{path}: must be an IPv{cidr.version} prefix like cidr {cidr}, got {shown}")
        elif not (net.prefixlen > cidr.prefixlen and net.network_address in cidr):
            b.errors.append(f"{path}: must be a prefix inside cidr {cidr} and longer than "
                            f"/{cidr.prefixlen}, got {shown}")
        else:
            excepts.append(net)
    return IPBlock(cidr, tuple(excepts)) if cidr is not None else None


def _peers(rule: Reader, name: str) -> tuple[PolicyPeer, ...] | None:
    """A rule's `from`/`to`: None (every peer) when absent or empty."""
    if rule.data.get(name) in (None, []):
        return None
    peers: list[PolicyPeer] = []
    for p in _objects(rule, name):
        _known_fields(p, "a peer", ("podSelector", "namespaceSelector", "ipBlock"))
        pods = parse_selector(p, "podSelector")
        namespaces = parse_selector(p, "namespaceSelector")
        block: IPBlock | None = None
        if p.has("ipBlock"):
            b = p.child("ipBlock")  # not an object: an error, and nothing more to check
            block = _ip_block(b) if isinstance(p.data["ipBlock"], dict) else None
        if p.has("ipBlock") and (p.has("podSelector") or p.has("namespaceSelector")):
            p.error("ipBlock", "must not be combined with podSelector or namespaceSelector")
        elif not (p.has("ipBlock") or p.has("podSelector") or p.has("namespaceSelector")):
            p.error("", "must have podSelector, namespaceSelector or ipBlock")
        peers.append(PolicyPeer(pods, namespaces, block))
    return tuple(peers)


def _policy_port(p: Reader) -> PolicyPort:
    _known_fields(p, "a port", ("protocol", "port", "endPort"))
    proto = p.text("protocol", "TCP", choices=PROTOCOLS) or "TCP"
    raw = p.data.get("port")
    port: int | str | None = None
    if raw is None:
        pass
    elif isinstance(raw, bool) or not isinstance(raw, (int, str)):
        p.error("port", f"must be a port number or a port name, got {describe(raw)}")
    elif isinstance(raw, int):
        port = p.integer("port", lo=1, hi=65535)
    elif (problem := port_name_problem(raw)) is not None:
        p.error("port", f"port name {raw!r} {problem}")
    else:
        port = raw
    end = p.integer("endPort", lo=1, hi=65535)
    if end is not None:
        if raw is None:
            p.error("endPort", "needs a numeric port, and port is not set")
        elif isinstance(port, str):
            p.error("endPort", f"needs a numeric port, got port name {port!r}")
        elif isinstance(port, int) and end < port:
            p.error("endPort", f"must be >= port ({port}), got {end}")
    return PolicyPort(proto, port, end)


def _rules(spec: Reader, name: str, peers_field: str) -> tuple[PolicyRule, ...]:
    rules: list[PolicyRule] = []
    for rule in _objects(spec, name):
        _known_fields(rule, f"an {name} rule", (peers_field, "ports"))
        peers = _peers(rule, peers_field)
        ports = tuple(_policy_port(p) for p in _objects(rule, "ports"))
        rules.append(PolicyRule(peers, ports))
    return tuple(rules)


def _policy_types(spec: Reader) -> tuple[str, ...]:
    """spec.policyTypes as written, or when absent or empty the API server's default:
    Ingress, and Egress too when there are egress rules."""
    if spec.data.get("policyTypes") in (None, []):
        egress = spec.data.get("egress")
        return ("Ingress", "Egress") if isinstance(egress, list) and egress else ("Ingress",)
    types: list[str] = []
    for path, raw in spec.items("policyTypes"):
        if raw not in POLICY_TYPES:
            shown = repr(raw) if isinstance(raw, str) else describe(raw)
            spec.errors.append(f"{path}: must be Ingress or Egress, got {shown}")
        elif raw in types:
            spec.errors.append(f"{path}: duplicate policy type {raw!r}")
        else:
            types.append(raw)
    return tuple(types)


def parse_network_policy(meta: Meta, r: Reader) -> NetworkPolicy | None:
    """A NetworkPolicy, or None when anything in it is wrong (see the module docstring:
    a policy is used whole or not at all). spec.podSelector is required, as the API
    server requires it ({} selects every pod of the namespace)."""
    spec = r.child("spec")
    _known_fields(spec, "a NetworkPolicy spec", ("podSelector", "policyTypes", "ingress",
                                                "egress"))
    selector = parse_selector(spec, "podSelector")
    if selector is None:
        spec.error("podSelector", "required ({} selects every pod in the namespace)")
    policy = NetworkPolicy(
        meta=meta,
        pod_selector=selector or LabelSelector(),
        policy_types=_policy_types(spec),
        ingress=_rules(spec, "ingress", "from"),
        egress=_rules(spec, "egress", "to"),
    )
    return None if r.errors else policy

