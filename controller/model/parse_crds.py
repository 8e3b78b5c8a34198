"""Parsers for the rackroute CRDs (and their Cilium spellings)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from bgp.types import (
    WELL_KNOWN_COMMUNITIES,
    Afi,
    Family,
    IPNetwork,
    Safi,
    community_text,
    community_value,
    large_community_parts,
)
from controller.model.crds import (
    ADDR_LB,
    DEFAULT_FAMILIES,
    SERVICE_ADDRESS_TYPES,
    Advertisement,
    Attributes,
    Bfd,
    BGPAdvertisement,
    BGPClusterConfig,
    BGPInstance,
    BGPNodeConfigOverride,
    BGPPeer,
    BGPPeerConfig,
    ClusterNetworkConfig,
    FamilyConfig,
    GracefulRestart,
    InstanceOverride,
    LoadBalancerIPPool,
    NodeNetwork,
    PeerOverride,
    PoolBlock,
    Timers,
)
from controller.model.fields import Reader, describe, key_path, parse_cidr
from controller.model.meta import LabelSelector, Meta, Requirement

MAX_ASN = 4294967295


def parse_selector(r: Reader, name: str) -> LabelSelector | None:
    """A LabelSelector field; None when absent."""
    if not r.has(name):
        return None
    s = r.child(name)
    for k in s.data:
        if k not in ("matchLabels", "matchExpressions"):
            s.errors.append(
                f"{key_path(s.path, str(k))}: unknown field, "
                "a selector has only matchLabels and matchExpressions"
            )
    labels = s.str_map("matchLabels")
    reqs: list[Requirement] = []
    for e in s.objects("matchExpressions"):
        key = e.text("key", required=True)
        op = e.text("operator", required=True, choices=("In", "NotIn", "Exists", "DoesNotExist"))
        values = e.str_list("values")
        if op in ("In", "NotIn") and not values:
            e.error("values", f"must be non-empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and values:
            e.error("values", f"must be empty for operator {op}")
        if key and op:
            reqs.append(Requirement(key, op, frozenset(values)))
    return LabelSelector(tuple(sorted(labels.items())), tuple(reqs))


def _accepted(r: Reader, name: str, value: int | None) -> bool:
    """Whether an integer field was absent or read as written (not replaced by its default
    after an error): cross-field rules only compare values the user actually wrote."""
    raw = r.data.get(name)
    return raw is None or (type(raw) is int and raw == value)


def _asn(r: Reader, name: str, *, required: bool = False, allow_zero: bool = False) -> int | None:
    return r.integer(name, lo=0 if allow_zero else 1, hi=MAX_ASN, required=required)


def parse_cluster_config(meta: Meta, r: Reader) -> BGPClusterConfig:
    spec = r.child("spec")
    instances: list[BGPInstance] = []
    names: set[str] = set()
    for inst in spec.objects("bgpInstances"):
        name = inst.text("name", required=True) or ""
        if name and name in names:
            inst.error("name", f"duplicate instance name {name!r}")
        names.add(name)
        peers: list[BGPPeer] = []
        peer_names: set[str] = set()
        for p in inst.objects("peers"):
            pname = p.text("name", required=True) or ""
            if pname and pname in peer_names:
                p.error("name", f"duplicate peer name {pname!r}")
            peer_names.add(pname)
            addr = p.ip("peerAddress", required=True)
            asn = _asn(p, "peerASN", allow_zero=True)
            ref = (
                p.child("peerConfigRef").text("name", required=True)
                if p.has("peerConfigRef")
                else None
            )
            if addr is not None:
                peers.append(BGPPeer(pname, addr, asn or 0, ref))
        instances.append(
            BGPInstance(
                name,
                _asn(inst, "localASN"),
                inst.integer("localPort", lo=1, hi=65535),
                tuple(peers),
            )
        )
    if not spec.has("bgpInstances"):
        spec.error("bgpInstances", "required")
    elif isinstance(spec.data["bgpInstances"], list) and not 1 <= len(instances) <= 16:
        spec.error("bgpInstances", f"must have 1..16 instances, got {len(instances)}")
    return BGPClusterConfig(meta, parse_selector(spec, "nodeSelector"), tuple(instances))


def _families(spec: Reader) -> tuple[FamilyConfig, ...]:
    if not spec.has("families"):
        return DEFAULT_FAMILIES
    out: list[FamilyConfig] = []
    for f in spec.objects("families"):
        afi = f.text("afi", required=True, choices=("ipv4", "ipv6"))
        safi = f.text("safi", "unicast", choices=("unicast",))
        sel = parse_selector(f, "advertisements")
        if afi and safi:
            fam = Family(Afi(afi), Safi(safi))
            if any(x.family == fam for x in out):
                f.error("afi", f"duplicate family {fam}")
            out.append(FamilyConfig(fam, sel))
    return tuple(out)


def parse_peer_config(meta: Meta, r: Reader) -> BGPPeerConfig:
    spec = r.child("spec")
    t = spec.child("timers")
    hold = t.integer(
        "holdTimeSeconds", 90, check=lambda v: v == 0 or 3 <= v <= 65535, rule="0 or 3..65535"
    )
    keepalive = t.integer("keepAliveTimeSeconds", 30, lo=1, hi=65535)
    retry = t.integer("connectRetryTimeSeconds", 120, lo=1, hi=2147483647)
    valid = _accepted(t, "holdTimeSeconds", hold) and _accepted(
        t, "keepAliveTimeSeconds", keepalive
    )
    if valid and hold and keepalive and keepalive > hold:
        t.error(
            "keepAliveTimeSeconds", f"must not exceed holdTimeSeconds ({hold}), got {keepalive}"
        )
    gr = spec.child("gracefulRestart")
    b = spec.child("bfd")
    auth = spec.data.get("authSecretRef")
    if isinstance(auth, dict):  # tolerate {name: x}
        auth = auth.get("name")
    if auth is not None and (not isinstance(auth, str) or not auth):
        spec.error("authSecretRef", f"must be a Secret name, got {describe(auth)}")
        auth = None
    return BGPPeerConfig(
        meta=meta,
        peer_port=spec.child("transport").integer("peerPort", 179, lo=1, hi=65535) or 179,
        timers=Timers(retry or 120, hold if hold is not None else 90, keepalive or 30),
        auth_secret_ref=auth,
        graceful_restart=GracefulRestart(
            gr.flag("enabled", False), gr.integer("restartTimeSeconds", 120, lo=1, hi=4095) or 120
        ),
        ebgp_multihop=spec.integer("ebgpMultihop", 1, lo=1, hi=255) or 1,
        bfd=Bfd(
            b.flag("enabled", False),
            b.integer("minRxMs", 300, lo=10, hi=60000) or 300,
            b.integer("minTxMs", 300, lo=10, hi=60000) or 300,
            b.integer("multiplier", 3, lo=1, hi=255) or 3,
        ),
        families=_families(spec),
    )


def _attributes(r: Reader) -> Attributes:
    if not r.has("attributes"):
        return Attributes()
    a = r.child("attributes")
    c = a.child("communities")
    comms: set[str] = set()
    for path, raw in c.items("standard"):
        try:
            if not isinstance(raw, (str, int)) or isinstance(raw, bool):
                raise ValueError("must be A:B")
            text = str(raw)
            if text.strip().lower() in WELL_KNOWN_COMMUNITIES:
                raise ValueError("well-known names go under wellKnown")
            comms.add(community_text(community_value(text)))
        except ValueError as e:
            r.errors.append(
                f"{path}: not a standard community (A:B, each 0..65535): {raw!r}"
                if "well-known" not in str(e)
                else f"{path}: {e}: {raw!r}"
            )
    for path, raw in c.items("wellKnown"):
        if not isinstance(raw, str) or raw.lower() not in WELL_KNOWN_COMMUNITIES:
            r.errors.append(f"{path}: unknown well-known community {raw!r}")
        else:
            comms.add(community_text(WELL_KNOWN_COMMUNITIES[raw.lower()]))
    large: set[str] = set()
    for path, raw in c.items("large"):
        try:
            large.add(":".join(str(x) for x in large_community_parts(str(raw))))
        except ValueError:
            r.errors.append(f"{path}: not a large community (A:B:C, each 0..4294967295): {raw!r}")
    return Attributes(
        frozenset(comms), frozenset(large), a.integer("localPreference", lo=0, hi=MAX_ASN)
    )


def parse_advertisement(meta: Meta, r: Reader) -> BGPAdvertisement:
    spec = r.child("spec")
    out: list[Advertisement] = []
    if not spec.has("advertisements"):
        spec.error("advertisements", "required")
    for a in spec.objects("advertisements"):
        kind = a.text("advertisementType", required=True, choices=("PodCIDR", "Service"))
        svc = a.child("service")
        addresses = svc.str_list("addresses")
        for i, x in enumerate(addresses):
            if x not in SERVICE_ADDRESS_TYPES:
                svc.error(
                    f"addresses[{i}]",
                    f"must be one of {', '.join(SERVICE_ADDRESS_TYPES)}, got {x!r}",
                )
        if kind == "Service" and not addresses:
            a.error("service.addresses", "required for advertisementType Service")
        agg4 = svc.integer("aggregationLengthIPv4", 32, lo=0, hi=32)
        agg6 = svc.integer("aggregationLengthIPv6", 128, lo=0, hi=128)
        if kind:
            out.append(
                Advertisement(
                    kind,
                    tuple(x for x in addresses if x in SERVICE_ADDRESS_TYPES),
                    32 if agg4 is None else agg4,
                    128 if agg6 is None else agg6,
                    parse_selector(a, "selector"),
                    _attributes(a),
                )
            )
    return BGPAdvertisement(meta, tuple(out))


def parse_node_override(meta: Meta, r: Reader) -> BGPNodeConfigOverride:
    spec = r.child("spec")
    out: list[InstanceOverride] = []
    names: set[str] = set()
    for inst in spec.objects("bgpInstances"):
        name = inst.text("name", required=True) or ""
        if name and name in names:
            inst.error("name", f"duplicate instance name {name!r}")
        names.add(name)
        rid = inst.ip("routerID")
        if rid is not None and rid.version != 4:
            inst.error("routerID", f"must be an IPv4 address, got {rid}")
        peers: list[PeerOverride] = []
        peer_names: set[str] = set()
        for p in inst.objects("peers"):
            pname = p.text("name", required=True) or ""
            if pname and pname in peer_names:
                p.error("name", f"duplicate peer name {pname!r}")
            peer_names.add(pname)
            peers.append(
                PeerOverride(pname, p.ip("localAddress"), p.integer("localPort", lo=1, hi=65535))
            )
        out.append(
            InstanceOverride(
                name,
                rid,
                _asn(inst, "localASN"),
                inst.integer("localPort", lo=1, hi=65535),
                tuple(peers),
            )
        )
    return BGPNodeConfigOverride(meta, tuple(out))


def parse_pool(meta: Meta, r: Reader) -> LoadBalancerIPPool:
    spec = r.child("spec")
    blocks: list[PoolBlock] = []
    field_name = "blocks" if spec.has("blocks") or not spec.has("cidrs") else "cidrs"
    for b in spec.objects(field_name):
        has_cidr = b.has("cidr")
        has_range = b.has("start") or b.has("stop")
        if has_cidr and has_range:
            b.error("", "set either cidr or start/stop, not both")
            continue
        if has_cidr:
            c = b.cidr("cidr")
            if c is not None:
                blocks.append(PoolBlock(cidr=c))
        elif has_range:
            start, stop = b.ip("start", required=True), b.ip("stop")
            stop = stop or start
            if start is not None and stop is not None:
                if start.version != stop.version:
                    b.error(
                        "stop",
                        f"must be the same address family as start {start}, got {stop}",
                    )
                elif int(stop) < int(start):
                    b.error("stop", f"must not be below start {start}, got {stop}")
                else:
                    blocks.append(PoolBlock(start=start, stop=stop))
        else:
            b.error("", "must set cidr or start")
    if spec.data.get(field_name) in (None, []):
        spec.error(field_name, "must list at least one block")
    allow = spec.data.get("allowFirstLastIPs")
    if isinstance(allow, bool):
        spec.error(
            "allowFirstLastIPs",
            f'must be the string "Yes" or "No" (quote it in YAML), got {describe(allow)}',
        )
    elif allow is not None and allow not in ("Yes", "No"):
        spec.error("allowFirstLastIPs", f'must be "Yes" or "No", got {describe(allow)}')
    return LoadBalancerIPPool(
        meta=meta,
        blocks=tuple(blocks),
        service_selector=parse_selector(spec, "serviceSelector"),
        allow_first_last=allow != "No",
        disabled=spec.flag("disabled", False),
    )


def parse_node_network(meta: Meta, r: Reader) -> NodeNetwork:
    spec = r.child("spec")
    cidrs: list[IPNetwork] = []
    for path, raw in spec.items("podCIDRs"):
        c = parse_cidr(raw, path, r.errors)
        if c is not None:
            cidrs.append(c)
    rid = spec.ip("bgpRouterID")
    if rid is not None and not isinstance(rid, IPv4Address):
        spec.error("bgpRouterID", f"must be an IPv4 address, got {rid}")
    return NodeNetwork(meta, tuple(cidrs), rid if isinstance(rid, IPv4Address) else None)


def _router_id_pool(spec: Reader) -> IPv4Network | None:
    """spec.bgpRouterIDPool: an IPv4 network (no host bits) with an address to give out."""
    pool = spec.cidr("bgpRouterIDPool")
    if pool is None:
        return None
    if not isinstance(pool, IPv4Network):
        spec.error("bgpRouterIDPool", f"must be an IPv4 CIDR, got {pool}")
        return None
    if pool.prefixlen > 31:
        spec.error(
            "bgpRouterIDPool",
            f"must be /31 or shorter (its network address is never given out), got {pool}",
        )
        return None
    return pool


def _cidr_list(r: Reader, name: str, version: int) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for path, raw in r.items(name):
        c = parse_cidr(raw, path, r.errors)
        if c is not None and c.version != version:
            r.errors.append(f"{path}: must be an IPv{version} CIDR, got {c}")
        elif c is not None:
            out.append(c)
    return tuple(out)


def parse_network_config(meta: Meta, r: Reader) -> ClusterNetworkConfig:
    spec = r.child("spec")
    ipam = spec.child("ipam")
    v4 = _cidr_list(ipam, "clusterPoolIPv4PodCIDRList", 4)
    v6 = _cidr_list(ipam, "clusterPoolIPv6PodCIDRList", 6)
    m4 = ipam.integer("clusterPoolIPv4MaskSize", 24, lo=1, hi=32) or 24
    m6 = ipam.integer("clusterPoolIPv6MaskSize", 112, lo=1, hi=128) or 112
    for name, pools, mask in (
        ("clusterPoolIPv4MaskSize", v4, m4),
        ("clusterPoolIPv6MaskSize", v6, m6),
    ):
        if not _accepted(ipam, name, mask):
            continue  # the mask itself is invalid and already reported
        for c in pools:
            if c.prefixlen > mask:
                ipam.error(
                    name,
                    f"must be at least the prefix length of pool {c} ({c.prefixlen}), got {mask}",
                )
    return ClusterNetworkConfig(
        meta=meta,
        ipam_mode=ipam.text("mode", "cluster-pool", choices=("cluster-pool", "kubernetes"))
        or "cluster-pool",
        cluster_pool_v4=v4,
        cluster_pool_v4_mask=m4,
        cluster_pool_v6=v6,
        cluster_pool_v6_mask=m6,
        routing_mode=spec.text("routingMode", "native", choices=("native", "tunnel", "hybrid"))
        or "native",
        auto_direct_node_routes=spec.flag("autoDirectNodeRoutes", False),
        masquerade=spec.text("masquerade", "auto", choices=("auto", "always", "never"))
        or "auto",
        tunnel_protocol=spec.text("tunnelProtocol", "vxlan", choices=("vxlan", "geneve"))
        or "vxlan",
        tunnel_underlay=spec.text("tunnelUnderlay", "auto", choices=("auto", "ipv4", "ipv6"))
        or "auto",
        bgp_router_id_pool=_router_id_pool(spec),
    )


__all__ = ["ADDR_LB", "parse_selector"]
