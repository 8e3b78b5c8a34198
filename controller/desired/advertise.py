"""Advertisement planning: per node and peer, the exact paths to announce, and why (pure).

For each peer family the peer's BGPPeerConfig selects BGPAdvertisements by label; each
advertisement contributes the node's pod CIDRs or service addresses (LoadBalancerIP,
ClusterIP, ExternalIP) of the services it selects, subject to the traffic policies:
LoadBalancerIP/ExternalIP follow externalTrafficPolicy, ClusterIP follows
internalTrafficPolicy. Every candidate that is not advertised is listed with its reason.

Two Node markings drain a node without stopping its agent (`NodeDrain`): the label
node.kubernetes.io/exclude-from-external-load-balancers withdraws its LoadBalancerIP and
ExternalIP paths (pod CIDRs and ClusterIPs stay), and the annotation
bgp.rackroute.io/graceful-shutdown: "true" keeps every path but tags it with the RFC 8326
GRACEFUL_SHUTDOWN community (and LOCAL_PREF 0 towards iBGP peers), so routers prefer
other paths before the node goes away.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bgp.types import Family, IPAddress, IPNetwork, Path
from controller.desired.bgpconfig import NodeBGP, ResolvedPeer
from controller.desired.endpoints import EndpointSummary, summarize
from controller.model.crds import ADDR_CLUSTER, ADDR_EXTERNAL, ADDR_LB, Advertisement
from controller.model.k8s import (
    EXCLUDE_FROM_LB_LABEL,
    GRACEFUL_SHUTDOWN_ANNOTATION,
    Node,
    Service,
)
from controller.store import Snapshot

# RFC 8326 GRACEFUL_SHUTDOWN (0xFFFF0000): receivers lower the path's LOCAL_PREF (to 0)
GRACEFUL_SHUTDOWN_COMMUNITY = "65535:0"
GRACEFUL_SHUTDOWN_LOCAL_PREF = 0
# the addresses that bring load-balancer traffic from outside the cluster
EXTERNAL_ADDRESSES = (ADDR_LB, ADDR_EXTERNAL)


@dataclass(frozen=True)
class NodeDrain:
    """What a node's own Node object asks of its advertisements while it is drained."""

    exclude_lb: bool = False  # no LoadBalancerIP / ExternalIP paths (the well-known label)
    graceful_shutdown: bool = False  # every path tagged GRACEFUL_SHUTDOWN (annotation)

    @staticmethod
    def of(node: Node | None) -> NodeDrain:
        """The drain a Node asks for (none for a node that is not in the snapshot)."""
        if node is None:
            return NodeDrain()
        return NodeDrain(node.excluded_from_load_balancers, node.graceful_shutdown)

    def describe(self) -> str:
        """The drain in words, for log lines: "none" when the node is not drained."""
        parts = []
        if self.exclude_lb:
            parts.append(f"label {EXCLUDE_FROM_LB_LABEL}: service addresses withdrawn")
        if self.graceful_shutdown:
            parts.append(f"annotation {GRACEFUL_SHUTDOWN_ANNOTATION}: paths tagged "
                         f"{GRACEFUL_SHUTDOWN_COMMUNITY}")
        return "; ".join(parts) or "none"


@dataclass(frozen=True)
class NotAdvertised:
    """A candidate that is not announced: to which peer, what, and why not."""

    peer: str  # "instance/peer"
    subject: str  # e.g. "Service demo/web LoadBalancerIP 10.96.100.1"
    reason: str


@dataclass(frozen=True)
class PeerPlan:
    """The paths one peer gets, with the reasons each prefix is there."""

    instance: str
    peer: str
    address: IPAddress
    paths: frozenset[Path]
    reasons: Mapping[IPNetwork, tuple[str, ...]] = field(hash=False, compare=False)


@dataclass(frozen=True)
class NodePlan:
    node: str
    peers: tuple[PeerPlan, ...]
    not_advertised: tuple[NotAdvertised, ...]
    drain: NodeDrain = NodeDrain()

    def all_paths(self) -> frozenset[Path]:
        return frozenset(p for pp in self.peers for p in pp.paths)


@dataclass
class _Acc:
    """Attributes of one prefix merged over every advertisement that yields it."""

    communities: set[str] = field(default_factory=set)
    large: set[str] = field(default_factory=set)
    local_pref: int | None = None
    reasons: list[str] = field(default_factory=list)

    def add(self, adv: Advertisement, reason: str) -> None:
        a = adv.attributes
        self.communities |= a.communities
        self.large |= a.large_communities
        if a.local_pref is not None:
            self.local_pref = max(self.local_pref or 0, a.local_pref)
        if reason not in self.reasons:
            self.reasons.append(reason)


@dataclass(frozen=True)
class PlanContext:
    """Per-snapshot indexes shared by every node's plan (computed once)."""

    snap: Snapshot
    endpoints: Mapping[str, EndpointSummary]
    services: tuple[Service, ...]
    _selected: dict[int, tuple[Service, ...]] = field(default_factory=dict, compare=False)
    _prefixes: dict[tuple[IPAddress, int], IPNetwork] = field(default_factory=dict, compare=False)
    _texts: dict[tuple[object, ...], str] = field(default_factory=dict, compare=False)

    def prefix(self, ip: IPAddress, adv: Advertisement, local: bool) -> IPNetwork:
        """The prefix announced for a service address (memoized: nodes share them)."""
        length = adv.aggregation_v4 if ip.version == 4 else adv.aggregation_v6
        if local:  # aggregating a Local service would attract traffic for other nodes
            length = ip.max_prefixlen
        got = self._prefixes.get((ip, length))
        if got is None:
            got = self._prefixes[(ip, length)] = ipaddress.ip_network((ip, length), strict=False)
        return got

    def host(self, ip: IPAddress) -> IPNetwork:
        """ip as a host prefix (/32, /128), memoized like prefix()."""
        got = self._prefixes.get((ip, ip.max_prefixlen))
        if got is None:
            got = self._prefixes[(ip, ip.max_prefixlen)] = ipaddress.ip_network(
                (ip, ip.max_prefixlen))
        return got

    def text(self, *parts: object) -> str:
        """Interned " "-joined text: reasons repeat across nodes and peers."""
        got = self._texts.get(parts)
        if got is None:
            got = self._texts[parts] = " ".join(map(str, parts))
        return got

    @staticmethod
    def of(snap: Snapshot) -> PlanContext:
        svcs = tuple(sorted(snap.services.values(), key=lambda s: s.key))
        return PlanContext(snap, summarize(snap.slices), svcs)

    def selected(self, adv: Advertisement) -> tuple[Service, ...]:
        """Services an advertisement's selector picks (nil selector: none), memoized."""
        got = self._selected.get(id(adv))
        if got is None:
            sel = adv.selector
            got = (
                ()
                if sel is None
                else tuple(s for s in self.services if sel.matches(s.selector_labels()))
            )
            self._selected[id(adv)] = got
        return got


def _addresses(svc: Service, kind: str) -> tuple[IPAddress, ...]:
    if kind == ADDR_LB:
        return svc.status_ingress if svc.is_managed_lb else ()
    if kind == ADDR_CLUSTER:
        return svc.cluster_ips if svc.type != "ExternalName" else ()
    return svc.external_ips


def _policy(svc: Service, kind: str) -> tuple[str, str]:
    if kind == ADDR_CLUSTER:
        return svc.internal_traffic_policy, "internalTrafficPolicy"
    return svc.external_traffic_policy, "externalTrafficPolicy"


def _service_candidates(
    ctx: PlanContext,
    node: str,
    fam: Family,
    adv: Advertisement,
    peer_name: str,
    acc: dict[IPNetwork, _Acc],
    skipped: list[NotAdvertised],
    exclude_lb: bool = False,
) -> None:
    """Adds the addresses of the services `adv` selects to `acc`, or to `skipped` with the
    reason; `exclude_lb`: the node takes no load-balancer traffic (NodeDrain)."""
    version = 4 if fam.afi.value == "ipv4" else 6
    for svc in ctx.selected(adv):
        summ = ctx.endpoints.get(svc.key) or EndpointSummary()
        for kind in adv.addresses:
            if kind == ADDR_LB and svc.type == "LoadBalancer" and not svc.is_managed_lb:
                continue  # another controller's service
            addrs = [a for a in _addresses(svc, kind) if a.version == version]
            if not addrs:
                if kind == ADDR_LB and svc.is_managed_lb and not svc.status_ingress:
                    skipped.append(
                        NotAdvertised(
                            peer_name,
                            f"Service {svc.key} {kind}",
                            "no LoadBalancer IP allocated (see the service's "
                            "rackroute.io/IPAMRequestSatisfied condition)",
                        )
                    )
                continue
            if exclude_lb and kind in EXTERNAL_ADDRESSES:
                skipped.extend(
                    NotAdvertised(
                        peer_name,
                        ctx.text("Service", svc.key, kind, a),
                        ctx.text("node", node, "has the label", EXCLUDE_FROM_LB_LABEL,
                                 "(it takes no load-balancer traffic)"),
                    )
                    for a in addrs
                )
                continue
            policy, pname = _policy(svc, kind)
            if policy == "Local":
                why = summ.local_reason(node, version)
                if why is None:
                    for a in addrs:
                        skipped.append(
                            NotAdvertised(
                                peer_name,
                                ctx.text("Service", svc.key, kind, a),
                                ctx.text(
                                    f"{pname}=Local and node",
                                    node,
                                    "has no ready or serving-terminating local endpoint",
                                ),
                            )
                        )
                    continue
            elif not summ.cluster_has_endpoints(version):
                for a in addrs:
                    skipped.append(
                        NotAdvertised(
                            peer_name,
                            ctx.text("Service", svc.key, kind, a),
                            ctx.text(
                                f"{pname}=Cluster and the service has no ready or "
                                "serving-terminating endpoint anywhere"
                            ),
                        )
                    )
                continue
            else:
                why = "endpoints in the cluster"
            for a in addrs:
                pfx = ctx.prefix(a, adv, policy == "Local")
                acc.setdefault(pfx, _Acc()).add(
                    adv, ctx.text("Service", svc.key, kind, a, f"({pname}={policy}: {why})")
                )


def _peer_plan(
    ctx: PlanContext,
    node: str,
    pod_cidrs: tuple[IPNetwork, ...],
    peer: ResolvedPeer,
    skipped: list[NotAdvertised],
    drain: NodeDrain = NodeDrain(),
) -> PeerPlan:
    """The paths `peer` gets from `node`, with the attributes `drain` asks for."""
    peer_name = f"{peer.instance}/{peer.name}"
    acc: dict[IPNetwork, _Acc] = {}
    adverts = sorted(ctx.snap.advertisements.values(), key=lambda a: a.meta.name)
    for fc in peer.families:
        if fc.advertisements is None:
            continue
        version = 4 if fc.family.afi.value == "ipv4" else 6
        for ba in adverts:
            if not fc.advertisements.matches(ba.meta.labels):
                continue
            for adv in ba.advertisements:
                if adv.type == "PodCIDR":
                    cidrs = [c for c in pod_cidrs if c.version == version]
                    if not cidrs:
                        skipped.append(
                            NotAdvertised(
                                peer_name,
                                f"PodCIDR {fc.family}",
                                f"node {node} has no IPv{version} pod CIDR",
                            )
                        )
                    for c in cidrs:
                        acc.setdefault(c, _Acc()).add(
                            adv, f"PodCIDR of node {node} (BGPAdvertisement {ba.meta.name})"
                        )
                else:
                    _service_candidates(ctx, node, fc.family, adv, peer_name, acc, skipped,
                                        drain.exclude_lb)
    paths = frozenset(_path(pfx, a, peer.ibgp, drain.graceful_shutdown) for pfx, a in acc.items())
    return PeerPlan(
        peer.instance,
        peer.name,
        peer.spec.address,
        paths,
        {pfx: tuple(a.reasons) for pfx, a in acc.items()},
    )


def _path(pfx: IPNetwork, a: _Acc, ibgp: bool, graceful_shutdown: bool) -> Path:
    """The path of one prefix with its merged attributes (LOCAL_PREF to iBGP peers only);
    in graceful shutdown tagged GRACEFUL_SHUTDOWN, with LOCAL_PREF 0 (RFC 8326)."""
    communities = frozenset(a.communities)
    local_pref = a.local_pref if ibgp else None
    if graceful_shutdown:
        communities |= {GRACEFUL_SHUTDOWN_COMMUNITY}
        local_pref = GRACEFUL_SHUTDOWN_LOCAL_PREF if ibgp else None
    return Path(prefix=pfx, communities=communities, large_communities=frozenset(a.large),
                local_pref=local_pref)


def plan_node(ctx: PlanContext, bgp: NodeBGP, pod_cidrs: tuple[IPNetwork, ...]) -> NodePlan:
    """Paths per peer of one node, and what is not advertised and why; the node's own Node
    object may drain it (NodeDrain)."""
    skipped: list[NotAdvertised] = []
    drain = NodeDrain.of(ctx.snap.nodes.get(bgp.node))
    peers = tuple(
        _peer_plan(ctx, bgp.node, pod_cidrs, p, skipped, drain)
        for inst in bgp.instances
        for p in inst.peers
    )
    advertised = {p.prefix for pp in peers for p in pp.paths}
    aggregates = [p for p in advertised if p.prefixlen not in (32, 128)]
    mentioned = {s.subject.split(" ")[1] for s in skipped if s.subject.startswith("Service ")}
    for svc in ctx.services:
        if not svc.is_managed_lb or svc.key in mentioned:
            continue
        for ip in svc.status_ingress:
            host = ctx.host(ip)
            if host in advertised or any(ip in p for p in aggregates if p.version == ip.version):
                continue
            skipped.append(
                NotAdvertised(
                    "*",
                    f"Service {svc.key} {ADDR_LB} {ip}",
                    f"no BGPAdvertisement of node {bgp.node}'s peers selects this service",
                )
            )
    return NodePlan(bgp.node, peers, tuple(dict.fromkeys(skipped)), drain)


def merge_paths(paths: Iterable[Path]) -> dict[IPNetwork, Path]:
    """One path per prefix: communities united, the highest local preference kept.

    A speaker announces one path per prefix to all its peers; when peers of one instance
    were planned different attributes for a prefix, the union is announced.
    """
    out: dict[IPNetwork, Path] = {}
    for p in paths:
        old = out.get(p.prefix)
        if old is None or old == p:
            out[p.prefix] = p
            continue
        lps = [x for x in (old.local_pref, p.local_pref) if x is not None]
        out[p.prefix] = Path(
            p.prefix,
            p.next_hop or old.next_hop,
            old.communities | p.communities,
            old.large_communities | p.large_communities,
            max(lps) if lps else None,
        )
    return out


def shared_plan_problems(plan: NodePlan, bgp: NodeBGP) -> dict[str, str]:
    """Instance → what goes wrong if it sends the same paths to all its peers (each of the
    families it carries) where its peers were planned different paths or attributes
    (their BGPPeerConfigs select different BGPAdvertisements): each gets the union. Names
    what a peer gets beyond its own plan. Instances whose peers share one plan are not
    listed (a speaker with per-neighbor exports needs them for the others)."""
    families = {(i.name, p.name): set(p.spec.families) for i in bgp.instances for p in i.peers}
    by_inst: dict[str, list[PeerPlan]] = {}
    for pp in plan.peers:
        by_inst.setdefault(pp.instance, []).append(pp)
    out: dict[str, str] = {}
    for inst, pps in sorted(by_inst.items()):
        merged = merge_paths(p for pp in pps for p in pp.paths)
        told = []
        for pp in sorted(pps, key=lambda x: x.peer):
            fams = families.get((inst, pp.peer), set())
            mine = {p.prefix: p for p in pp.paths}
            more = sorted((k for k, p in merged.items() if p.family in fams and k not in mine),
                          key=str)
            changed = sorted((k for k, p in mine.items() if merged[k] != p), key=str)
            if more:
                shown = ", ".join(map(str, more[:3]))
                told.append(f"{pp.peer} also gets {shown}"
                            + (f" and {len(more) - 3} more" if len(more) > 3 else ""))
            if changed:
                told.append(f"{pp.peer} gets {changed[0]}"
                            + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")
                            + " with the other peers' communities or local preference")
        if told:
            out[inst] = (f"BGP instance {inst}: its peers' BGPPeerConfigs (spec.families[]."
                         "advertisements) select different advertisements, and this speaker "
                         f"sends the same paths to all its peers: {'; '.join(told)}. Give a "
                         "peer that needs other advertisements a bgpInstance of its own, or "
                         "use a speaker with per-peer exports (gobgp, exabgp)")
    return out


__all__ = ["ADDR_EXTERNAL", "GRACEFUL_SHUTDOWN_COMMUNITY", "NodeDrain", "NodePlan", "PeerPlan",
           "NotAdvertised", "PlanContext", "merge_paths", "plan_node", "shared_plan_problems"]
