"""NetworkPolicy compiled for this node's pods: pure.

Inputs are the NetworkPolicies, every Pod (peers live on any node) and the Namespaces;
the output is, for each pod on this node that a policy selects, what the datapath needs
to decide a new connection with one longest-prefix lookup: per direction, a list of
address prefixes, each with the port ranges allowed to or from it.

Kubernetes' rules (networking.k8s.io/v1), followed to the letter:
- A pod is isolated for ingress (egress) once any policy of its namespace selects it
  with that policy type; then only what some rule of those policies allows may reach
  (leave) it. A pod no policy selects for a direction is not isolated there (None).
- Rules add up: what is allowed is the union over every rule of every selecting policy.
- A rule allows its peers (every address when it names none) on its ports (every
  protocol and port when it names none). A selector peer stands for the addresses of
  the pods it selects (the policy's namespace for a pod selector alone; the namespaces
  a namespace selector selects otherwise). An ipBlock stands for its prefix less its
  `except` prefixes. Host-network pods and pods that have ended (phase Succeeded or
  Failed) have no address of their own in policy.
- A named port is resolved on the pod the traffic goes to: for ingress, the protected
  pod; for egress, each peer pod (so a named egress port yields one entry per peer pod
  that declares it, and matches no address that is not a pod's). A name no such pod
  declares allows nothing.
- Replies to an allowed connection are allowed (the datapath's state, not this plan:
  bpf/src/policy.c records each flow it lets pass).

The longest-prefix lookup returns one entry, so an entry carries the union of the port
ranges of every grant whose prefix contains it: a packet to an address inside a narrow
grant is still allowed what a broad grant allows. An entry holds at most `max_ranges`
port ranges (merged when they overlap or touch); one that would need more is written
with none (the address is refused: fail closed, never wider than the policy) and the
policies behind it are named in `PolicyPlan.problems`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bgp.types import IPAddress, IPNetwork
from controller.model.meta import LabelSelector, selects
from controller.model.policy import (
    Namespace,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)

PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
ANY_PROTO = 0  # a rule without ports: every protocol, every port
MAX_RANGES = 8
ENDED = ("Succeeded", "Failed")
EVERYWHERE: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"),
                                     ipaddress.ip_network("::/0"))


@dataclass(frozen=True, order=True)
class PortRange:
    """Protocol number (ANY_PROTO: every protocol) and an inclusive port range."""

    proto: int
    lo: int = 0
    hi: int = 65535


ALL_TRAFFIC = PortRange(ANY_PROTO)


@dataclass(frozen=True)
class PolicyEntry:
    """One longest-prefix entry: the peer prefix and what it may use (() : nothing)."""

    prefix: IPNetwork
    ranges: tuple[PortRange, ...]


@dataclass(frozen=True)
class EndpointPolicy:
    """A pod of this node under policy. A direction is None when the pod is not isolated
    there; otherwise its entries (an address matching none of them is refused)."""

    pod: str  # ns/name
    ips: tuple[IPAddress, ...]
    ingress: tuple[PolicyEntry, ...] | None
    egress: tuple[PolicyEntry, ...] | None
    policies: tuple[str, ...]  # the selecting policies, ns/name


@dataclass(frozen=True)
class PolicyPlan:
    endpoints: Mapping[str, EndpointPolicy]  # by pod key
    problems: tuple[tuple[str, str], ...] = ()  # (policy key, message)


def _proto(name: str) -> int:
    return PROTO_NUMBERS.get(name.upper(), PROTO_NUMBERS["TCP"])


def has_address(pod: Pod) -> bool:
    """Does the pod count as a policy peer or endpoint (an address of its own)?"""
    return bool(pod.ips) and not pod.host_network and pod.phase not in ENDED


def host_prefix(addr: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")


def merge_ranges(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Distinct, sorted ranges; overlapping or touching ones of a protocol merged; every
    protocol's ranges gone when ALL_TRAFFIC is among them."""
    rs = sorted(set(ranges))
    if any(r.proto == ANY_PROTO for r in rs):
        return (ALL_TRAFFIC,)
    out: list[PortRange] = []
    for r in rs:
        if out and out[-1].proto == r.proto and r.lo <= out[-1].hi + 1:
            out[-1] = PortRange(r.proto, out[-1].lo, max(out[-1].hi, r.hi))
        else:
            out.append(r)
    return tuple(out)


def ip_block_prefixes(cidr: IPNetwork, excepts: Iterable[IPNetwork]) -> list[IPNetwork]:
    """cidr less every except prefix, as disjoint prefixes."""
    left = [cidr]
    for ex in excepts:
        nxt: list[IPNetwork] = []
        for net in left:
            if net.version != ex.version or not net.overlaps(ex):
                nxt.append(net)
            elif ex.supernet_of(net):  # type: ignore[arg-type]
                continue
            else:
                nxt.extend(net.address_exclude(ex))  # type: ignore[arg-type]
        left = nxt
    return sorted(left, key=lambda n: (n.version, n))


class _Cluster:
    """Pods and namespaces as the compiler asks them: by selector, by namespace. A peer's
    pods are found once per compile (every pod a policy selects asks for the same peers),
    looking only in the namespaces the peer can mean."""

    def __init__(self, pods: Iterable[Pod], namespaces: Mapping[str, Namespace]) -> None:
        self.pods = [p for p in pods if has_address(p)]
        self.namespaces = namespaces
        self.by_ns: dict[str, list[Pod]] = {}
        for p in self.pods:
            self.by_ns.setdefault(p.meta.namespace, []).append(p)
        self._peers: dict[tuple[PolicyPeer, str], list[Pod]] = {}

    def ns_labels(self, name: str) -> Mapping[str, str]:
        ns = self.namespaces.get(name)
        return ns.meta.labels if ns is not None else {"kubernetes.io/metadata.name": name}

    def peer_pods(self, peer: PolicyPeer, policy_ns: str) -> list[Pod]:
        key = (peer, policy_ns)
        found = self._peers.get(key)
        if found is None:
            if peer.namespace_selector is None:
                spaces = [policy_ns]
            else:
                sel = peer.namespace_selector
                spaces = [n for n in self.by_ns if sel.matches(self.ns_labels(n))]
            found = [p for n in spaces for p in self.by_ns.get(n, ())
                     if selects(peer.pod_selector, p.meta.labels)]
            self._peers[key] = found
        return found


def _named(pod: Pod, port: PolicyPort) -> list[PortRange]:
    """The ports pod declares under port's name and protocol (none: the name allows
    nothing; the API keeps names unique in a pod, every match counts all the same)."""
    proto = _proto(port.protocol)
    return [PortRange(proto, cp.port, cp.port) for cp in pod.ports
            if cp.name == port.port and _proto(cp.protocol) == proto]


def _numbered(port: PolicyPort) -> PortRange:
    proto = _proto(port.protocol)
    if port.port is None:
        return PortRange(proto)
    assert isinstance(port.port, int)
    return PortRange(proto, port.port, port.end_port or port.port)


def rule_grants(rule: PolicyRule, policy_ns: str, endpoint: Pod, direction: str,
                cluster: _Cluster) -> list[tuple[IPNetwork, PortRange]]:
    """(peer prefix, port range) pairs one rule allows the endpoint pod, in direction
    ("ingress": from the peers; "egress": to them)."""
    # the peers, as (prefix, the pod behind it or None for an ipBlock / everywhere)
    peers: list[tuple[IPNetwork, Pod | None]] = []
    if rule.peers is None:
        peers.extend((net, None) for net in EVERYWHERE)
        if direction == "egress" and any(isinstance(p.port, str) for p in rule.ports):
            # a named port to "every peer" resolves on every pod that declares it
            peers.extend((host_prefix(ip), p) for p in cluster.pods for ip in p.ips)
    else:
        for peer in rule.peers:
            if peer.ip_block is not None:
                peers.extend((net, None) for net in
                             ip_block_prefixes(peer.ip_block.cidr, peer.ip_block.excepts))
            else:
                peers.extend((host_prefix(ip), p)
                             for p in cluster.peer_pods(peer, policy_ns) for ip in p.ips)
    if not rule.ports:
        return [(net, ALL_TRAFFIC) for net, _ in peers]
    out: list[tuple[IPNetwork, PortRange]] = []
    for port in rule.ports:
        if not isinstance(port.port, str):
            out.extend((net, _numbered(port)) for net, _ in peers)
        elif direction == "ingress":
            out.extend((net, r) for r in _named(endpoint, port) for net, _ in peers)
        else:  # egress: on the pod it goes to; an address that is no pod's: nothing
            out.extend((net, r) for net, pod in peers if pod is not None
                       for r in _named(pod, port))
    return out


def lpm_entries(grants: Iterable[tuple[IPNetwork, PortRange]], max_ranges: int = MAX_RANGES
                ) -> tuple[list[PolicyEntry], list[IPNetwork]]:
    """Longest-prefix entries for grants: each distinct prefix with the merged ranges of
    every grant whose prefix contains it. Returns (entries, prefixes that needed more
    than max_ranges ranges and were written with none)."""
    by_prefix: dict[IPNetwork, set[PortRange]] = {}
    for net, r in grants:
        by_prefix.setdefault(net, set()).add(r)
    lengths: dict[int, set[int]] = {4: set(), 6: set()}
    for net in by_prefix:
        lengths[net.version].add(net.prefixlen)
    entries: list[PolicyEntry] = []
    overflow: list[IPNetwork] = []
    for net in sorted(by_prefix, key=lambda n: (n.version, n)):
        ranges: set[PortRange] = set(by_prefix[net])
        for plen in lengths[net.version]:  # every shorter granted prefix holding net
            if plen < net.prefixlen:
                ranges |= by_prefix.get(net.supernet(new_prefix=plen), set())
        merged = merge_ranges(ranges)
        if len(merged) > max_ranges:
            overflow.append(net)
            merged = ()
        entries.append(PolicyEntry(net, merged))
    return entries, overflow


def compile_policies(policies: Iterable[NetworkPolicy], pods: Iterable[Pod],
                     namespaces: Mapping[str, Namespace], node: str,
                     max_ranges: int = MAX_RANGES) -> PolicyPlan:
    """The plan for node's pods (see the module docstring)."""
    pods = list(pods)
    cluster = _Cluster(pods, namespaces)
    by_ns: dict[str, list[NetworkPolicy]] = {}
    for pol in sorted(policies, key=lambda p: p.key):
        by_ns.setdefault(pol.meta.namespace, []).append(pol)
    endpoints: dict[str, EndpointPolicy] = {}
    problems: list[tuple[str, str]] = []
    for pod in sorted(pods, key=lambda p: p.key):
        if pod.node != node or not has_address(pod):
            continue
        selecting = [pol for pol in by_ns.get(pod.meta.namespace, ())
                     if _selects(pol.pod_selector, pod)]
        if not selecting:
            continue
        dirs: dict[str, tuple[PolicyEntry, ...] | None] = {}
        for direction, kind in (("ingress", "Ingress"), ("egress", "Egress")):
            pols = [pol for pol in selecting if kind in pol.policy_types]
            if not pols:
                dirs[direction] = None
                continue
            grants: list[tuple[IPNetwork, PortRange]] = []
            for pol in pols:
                for rule in (pol.ingress if direction == "ingress" else pol.egress):
                    grants.extend(rule_grants(rule, pol.meta.namespace, pod, direction,
                                              cluster))
            entries, overflow = lpm_entries(grants, max_ranges)
            dirs[direction] = tuple(entries)
            for net in overflow:
                problems.extend(
                    (pol.key, f"pod {pod.key}: {direction} from/to {net} needs more than "
                     f"{max_ranges} port ranges; that address is refused until the "
                     "policies allow it in fewer") for pol in pols)
        endpoints[pod.key] = EndpointPolicy(pod.key, pod.ips, dirs["ingress"],
                                            dirs["egress"], tuple(p.key for p in selecting))
    return PolicyPlan(endpoints, tuple(sorted(set(problems))))


def _selects(selector: LabelSelector, pod: Pod) -> bool:
    return selector.matches(pod.meta.labels)


def matching_entry(entries: Iterable[PolicyEntry], peer: IPAddress) -> PolicyEntry | None:
    """The longest entry whose prefix holds peer (what the datapath's lookup returns)."""
    best: PolicyEntry | None = None
    for e in entries:
        if e.prefix.version == peer.version and peer in e.prefix and (
                best is None or e.prefix.prefixlen > best.prefix.prefixlen):
            best = e
    return best


def allowed(entries: tuple[PolicyEntry, ...] | None, peer: IPAddress, proto: int,
            port: int) -> bool:
    """What the datapath decides for a new connection with peer (the reference its tests
    compare with): not isolated, or the longest entry holding peer allows proto/port."""
    if entries is None:
        return True
    best = matching_entry(entries, peer)
    if best is None:
        return False
    return any(r.proto in (ANY_PROTO, proto) and r.lo <= port <= r.hi for r in best.ranges)


def range_text(r: PortRange) -> str:
    """`tcp/80`, `udp/5000-5010`, `tcp` (every port), `any` (every protocol)."""
    if r.proto == ANY_PROTO:
        return "any"
    name = next((k.lower() for k, v in PROTO_NUMBERS.items() if v == r.proto), str(r.proto))
    if (r.lo, r.hi) == (0, 65535):
        return name
    return f"{name}/{r.lo}" if r.lo == r.hi else f"{name}/{r.lo}-{r.hi}"
