"""Parsers for core Kubernetes kinds: Node, Service, EndpointSlice, Secret."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from bgp.types import IPAddress, IPNetwork
from controller.model.fields import (
    Reader,
    describe,
    key_path,
    parse_cidr,
    parse_ip,
    parse_loose_cidr,
    type_name,
)
from controller.model.k8s import (
    LB_SOURCE_RANGES_ANNOTATION,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    Secret,
    Service,
    ServicePort,
)
from controller.model.meta import Meta, frozen_map

LBIPAM_PREFIXES = ("lbipam.rackroute.io/", "lbipam.cilium.io/")
PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def lbipam_annotation(meta: Meta, suffix: str) -> tuple[str, str] | None:
    """(full annotation name, value) of an lbipam annotation in either spelling."""
    for prefix in LBIPAM_PREFIXES:
        key = prefix + suffix
        if key in meta.annotations:
            return key, meta.annotations[key]
    return None


def parse_node(meta: Meta, r: Reader) -> Node:
    spec, status = r.child("spec"), r.child("status")
    cidrs: list[IPNetwork] = []
    for path, raw in spec.items("podCIDRs"):
        c = parse_cidr(raw, path, r.errors)
        if c is not None:
            cidrs.append(c)
    if not cidrs and spec.has("podCIDR"):
        c = spec.cidr("podCIDR")
        if c is not None:
            cidrs.append(c)
    internal: list[IPAddress] = []
    other: list[IPAddress] = []
    for a in status.objects("addresses"):
        kind = a.text("type", required=True)
        if kind not in ("InternalIP", "ExternalIP"):
            continue
        ip = a.ip("address", required=True)
        if ip is not None:
            (internal if kind == "InternalIP" else other).append(ip)
    return Node(meta=meta, addresses=tuple(internal + other), pod_cidrs=tuple(cidrs))


def _service_ports(spec: Reader) -> tuple[ServicePort, ...]:
    ports: list[ServicePort] = []
    seen: set[tuple[int, str]] = set()
    names: set[str] = set()
    for p in spec.objects("ports"):
        port = p.integer("port", lo=1, hi=65535, required=True)
        proto = p.text("protocol", "TCP", choices=PROTOCOLS) or "TCP"
        name = p.text("name", "") or ""
        node_port = p.integer("nodePort", lo=1, hi=65535)
        raw_target = p.data.get("targetPort")
        target: int | str | None = None
        if isinstance(raw_target, bool) or not isinstance(raw_target, (int, str, type(None))):
            p.error(
                "targetPort", f"must be a port number or a port name, got {describe(raw_target)}"
            )
        elif isinstance(raw_target, int) and not 1 <= raw_target <= 65535:
            p.error("targetPort", f"must be 1..65535, got {raw_target}")
        else:
            target = raw_target
        if name and name in names:
            p.error("name", f"duplicate port name {name!r}")
        names.add(name)
        if port is None:
            continue
        if (port, proto) in seen:
            p.error("port", f"duplicate port {port}/{proto}")
            continue
        seen.add((port, proto))
        ports.append(ServicePort(port, proto, name, target, node_port))
    return tuple(ports)


def _ip_list(r: Reader, name: str) -> list[IPAddress]:
    out: list[IPAddress] = []
    for path, raw in r.items(name):
        ip = parse_ip(raw, path, r.errors)
        if ip is not None:
            out.append(ip)
    return out


def _source_ranges(meta: Meta, spec: Reader) -> tuple[tuple[IPNetwork, ...] | None, str]:
    """(the client prefixes allowed to reach the load-balancer IPs, the field they came
    from): spec.loadBalancerSourceRanges, or when that is empty the legacy annotation (a
    comma-separated list; empty parts skipped); (None, "") when neither gives any. Each
    invalid entry is an error and is left out, so the prefixes may be () (fail closed), as
    they are for a spec value that is not a list (an error too). Duplicates are dropped
    and the prefixes sorted by family, then address and length. (Like any field error, an
    invalid entry makes parse_object reject the whole Service.)"""
    name = "loadBalancerSourceRanges"
    entries: list[tuple[str, Any]]
    if spec.data.get(name) not in (None, []):
        field = spec.at(name)
        entries = list(spec.items(name))  # not a list: an error, and no entries
    else:
        value = meta.annotations.get(LB_SOURCE_RANGES_ANNOTATION, "")
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts:
            return None, ""
        field = key_path("metadata.annotations", LB_SOURCE_RANGES_ANNOTATION)
        entries = [(field, p) for p in parts]
    nets: set[IPNetwork] = set()
    for path, raw in entries:
        net = parse_loose_cidr(raw, path, spec.errors)  # leniently, as kube-proxy
        if net is not None:
            nets.add(net)
    ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return tuple(ordered), field


def parse_service(meta: Meta, r: Reader) -> Service:
    spec = r.child("spec")
    svc_type = spec.text(
        "type", "ClusterIP", choices=("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
    )
    cluster_ips: list[IPAddress] = []
    if spec.has("clusterIPs"):
        for path, raw in spec.items("clusterIPs"):
            if raw != "None":
                ip = parse_ip(raw, path, r.errors)
                if ip is not None:
                    cluster_ips.append(ip)
    elif spec.data.get("clusterIP") not in (None, "None", ""):
        ip = spec.ip("clusterIP")
        if ip is not None:
            cluster_ips.append(ip)
    families: list[int] = []
    for path, raw in spec.items("ipFamilies"):
        if raw not in ("IPv4", "IPv6"):
            r.errors.append(f"{path}: must be IPv4 or IPv6, got {raw!r}")
        else:
            families.append(4 if raw == "IPv4" else 6)
    affinity = spec.text("sessionAffinity", "None", choices=("None", "ClientIP")) or "None"
    timeout = (
        spec.child("sessionAffinityConfig")
        .child("clientIP")
        .integer("timeoutSeconds", 10800, lo=1, hi=86400)
    )
    lb_ip = spec.ip("loadBalancerIP") if spec.data.get("loadBalancerIP") else None
    requested: list[IPAddress] = []
    ann = lbipam_annotation(meta, "ips")
    if ann is not None:
        for part in (x.strip() for x in ann[1].split(",")):
            if part:
                ip = parse_ip(part, f'metadata.annotations["{ann[0]}"]', r.errors)
                if ip is not None and ip not in requested:
                    requested.append(ip)
    if lb_ip is not None and lb_ip not in requested:
        requested.append(lb_ip)
    source_ranges, source_ranges_field = _source_ranges(meta, spec)
    sharing = lbipam_annotation(meta, "sharing-key")
    cross = lbipam_annotation(meta, "sharing-cross-namespace")
    ingress: list[IPAddress] = []
    for ing in r.child("status").child("loadBalancer").objects("ingress"):
        ip = ing.ip("ip")
        if ip is not None:
            ingress.append(ip)
    return Service(
        meta=meta,
        type=svc_type or "ClusterIP",
        cluster_ips=tuple(cluster_ips),
        external_ips=tuple(_ip_list(spec, "externalIPs")),
        ports=_service_ports(spec),
        selector=frozen_map(spec.str_map("selector")),
        external_traffic_policy=spec.text(
            "externalTrafficPolicy", "Cluster", choices=("Cluster", "Local")
        )
        or "Cluster",
        internal_traffic_policy=spec.text(
            "internalTrafficPolicy", "Cluster", choices=("Cluster", "Local")
        )
        or "Cluster",
        load_balancer_class=spec.text("loadBalancerClass"),
        load_balancer_ip=lb_ip,
        ip_families=tuple(families),
        ip_family_policy=spec.text(
            "ipFamilyPolicy",
            "SingleStack",
            choices=("SingleStack", "PreferDualStack", "RequireDualStack"),
        )
        or "SingleStack",
        session_affinity=affinity,
        session_affinity_timeout=timeout or 10800,
        status_ingress=tuple(ingress),
        requested_ips=tuple(requested),
        sharing_key=sharing[1].strip() if sharing and sharing[1].strip() else None,
        sharing_cross_namespace=frozenset(
            x.strip() for x in (cross[1] if cross else "").split(",") if x.strip()
        ),
        load_balancer_source_ranges=source_ranges,
        load_balancer_source_ranges_field=source_ranges_field,
        health_check_node_port=spec.integer("healthCheckNodePort", lo=1, hi=65535),
    )


def parse_endpoint_slice(meta: Meta, r: Reader) -> EndpointSlice:
    service_name = meta.labels.get(SERVICE_NAME_LABEL, "")
    if not service_name:
        r.error(f'metadata.labels["{SERVICE_NAME_LABEL}"]', "required")
    addr_type = r.text("addressType", "IPv4", choices=("IPv4", "IPv6", "FQDN")) or "IPv4"
    want = {"IPv4": 4, "IPv6": 6}.get(addr_type)
    endpoints: list[Endpoint] = []
    for e in r.objects("endpoints"):
        addrs: list[IPAddress] = []
        if addr_type != "FQDN":
            for path, raw in e.items("addresses"):
                ip = parse_ip(raw, path, r.errors)
                if ip is not None and ip.version != want:
                    r.errors.append(
                        f"{path}: must be an {addr_type} address (addressType {addr_type}), "
                        f"got {ip}"
                    )
                elif ip is not None:
                    addrs.append(ip)
            if e.data.get("addresses") in (None, []):
                e.error("addresses", "must list at least one address")
        cond = e.child("conditions")
        ready = cond.flag("ready", True)
        serving = cond.flag("serving", ready)
        terminating = cond.flag("terminating", False)
        target = e.child("targetRef").text("name", "") or ""
        hints = e.child("hints")
        zones: tuple[str, ...] | None = None
        if hints.has("forZones"):
            zones = tuple(sorted({z.text("name", required=True) or ""
                                  for z in hints.objects("forZones")} - {""}))
        endpoints.append(
            Endpoint(tuple(addrs), ready, serving, terminating, e.text("nodeName"), target,
                     zones)
        )
    ports: list[EndpointPort] = []
    for p in r.objects("ports"):
        port = p.integer("port", lo=1, hi=65535, required=True)
        proto = p.text("protocol", "TCP", choices=PROTOCOLS) or "TCP"
        if port is not None:
            ports.append(EndpointPort(port, proto, p.text("name", "") or ""))
    return EndpointSlice(meta, service_name, addr_type, tuple(endpoints), tuple(ports))


def parse_secret(meta: Meta, r: Reader) -> Secret:
    # Secret values never appear in messages.
    data: dict[str, str] = {}
    raw = r.data.get("data")
    if raw is not None and not isinstance(raw, dict):
        r.error("data", f"must be a map of base64 strings, got {describe(raw)}")
    for k, v in raw.items() if isinstance(raw, dict) else ():
        path = key_path("data", str(k))
        if not isinstance(v, str):
            r.error(path, f"must be a base64 string, got {type_name(v)}")
            continue
        try:
            decoded = base64.b64decode(v, validate=True)
        except binascii.Error:
            r.error(path, "not valid base64")
            continue
        try:
            data[str(k)] = decoded.decode()
        except UnicodeDecodeError:
            r.error(path, "decodes to bytes that are not UTF-8 text")
    data.update(r.str_map("stringData"))
    return Secret(meta=meta, data=frozen_map(data))
