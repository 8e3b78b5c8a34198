"""The desired service table of one node: a pure function of the snapshot.

(Snapshot, node name, node addresses) → a `bpf.table` ServiceTable with one entry per
(address, port, protocol): ClusterIPs, NodePorts (one per node address), the
LoadBalancer IPs that rackroute's LB-IPAM serves, and externalIPs. As in kube-proxy, the
service's loadBalancerSourceRanges restrict the LoadBalancer IP entries only, each to the
ranges of its family (none of that family: no client at all). Backends come from
the service's EndpointSlices with their state (ready / serving-terminating /
not serving); which of them are eligible is decided in one place,
`bpf.table.Service.eligible` (kube-proxy semantics). Topology aware routing as in
kube-proxy: when every ready endpoint carries zone hints (`hints.forZones`) and one is
hinted for the node's zone (its `topology.kubernetes.io/zone` label), the node's
non-Local entries keep to the endpoints hinted for its zone (a rack, on bare metal). Bad
input is reported per service and never raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from bpf.table import Backend, BackendState, Proto, Service, ServiceKey
from controller.desired.endpoints import FAMILY_OF
from controller.model.k8s import Endpoint, EndpointSlice, ServicePort
from controller.model.k8s import Service as K8sService
from controller.store import Snapshot

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
PROTOCOLS = {"TCP": Proto.TCP, "UDP": Proto.UDP}


@dataclass(frozen=True)
class ServicePlan:
    """The node's service table and, per service `ns/name`, what could not be programmed."""

    table: Mapping[ServiceKey, Service]
    problems: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def addresses(self) -> frozenset[IPAddress]:
        """Every service address in the table."""
        return frozenset(k.vip for k in self.table)


def backend_state(ep: Endpoint) -> BackendState:
    """An endpoint's conditions as a backend state (eligibility is Service.eligible's)."""
    if ep.ready:
        return BackendState.READY
    if ep.serving and ep.terminating:
        return BackendState.TERMINATING
    return BackendState.NOT_SERVING


def _target_port(sp: ServicePort, sl: EndpointSlice) -> int | None:
    """The backend port for sp in this slice: by port name, else by number."""
    same = [p for p in sl.ports if p.protocol == sp.protocol]
    for p in same:
        if p.name == sp.name:
            return p.port
    number = sp.target_port if isinstance(sp.target_port, int) else None
    if sp.target_port is None:
        number = sp.port
    if number is not None and (not sl.ports or any(p.port == number for p in same)):
        return number
    return None


def _backends(
    svc: K8sService,
    sp: ServicePort,
    slices: Sequence[EndpointSlice],
    node: str,
    problems: list[str],
    zones: dict[tuple[IPAddress, int], tuple[str, ...] | None] | None = None,
) -> tuple[Backend, ...]:
    """The port's backends; `zones`, when given, gets each one's zone hints."""
    out: dict[tuple[IPAddress, int], Backend] = {}
    for sl in slices:
        fam = FAMILY_OF.get(sl.address_type)
        if fam is None:
            problems.append(
                f"EndpointSlice {sl.meta.key}: addressType {sl.address_type!r} "
                "is not supported (IPv4, IPv6); ignored"
            )
            continue
        port = _target_port(sp, sl)
        if port is None:
            want = sp.name or sp.target_port or sp.port
            problems.append(
                f"EndpointSlice {sl.meta.key}: no {sp.protocol} port matching "
                f"service port {want!r}; its endpoints are not used for it"
            )
            continue
        for ep in sl.endpoints:
            for addr in ep.addresses:
                if addr.version != fam:
                    problems.append(
                        f"EndpointSlice {sl.meta.key}: endpoint address {addr} is "
                        f"IPv{addr.version} in an {sl.address_type} slice; ignored"
                    )
                    continue
                b = Backend(addr, port, ep.node_name == node, backend_state(ep))
                prev = out.get((addr, port))
                if prev is None or _rank(b) < _rank(prev):
                    out[(addr, port)] = b
                    if zones is not None:
                        zones[(addr, port)] = ep.zones
    return tuple(sorted(out.values(), key=Backend.sort_key))


def _rank(b: Backend) -> int:
    """When one address appears twice (two slices), keep its most serving state."""
    return (BackendState.READY, BackendState.TERMINATING, BackendState.NOT_SERVING).index(b.state)


def _keys(
    svc: K8sService, sp: ServicePort, proto: Proto, node_addresses: Sequence[IPAddress]
) -> Iterable[tuple[ServiceKey, bool, bool, bool]]:
    """(key, external, nodeport, load-balancer IP) for every address this port is served
    on. A NodePort listens on the node's addresses of the service's IP families only
    (spec.ipFamilies, else its cluster IPs' families, else IPv4)."""
    for ip in svc.cluster_ips:
        yield ServiceKey(ip, sp.port, proto), False, False, False
    if svc.type in ("NodePort", "LoadBalancer") and sp.node_port:
        families = set(svc.ip_families) or {ip.version for ip in svc.cluster_ips} or {4}
        for ip in node_addresses:
            if ip.version in families:
                yield ServiceKey(ip, sp.node_port, proto), True, True, False
    if svc.is_managed_lb:
        for ip in svc.status_ingress:
            yield ServiceKey(ip, sp.port, proto), True, False, True
    for ip in svc.external_ips:
        yield ServiceKey(ip, sp.port, proto), True, False, False


def _source_ranges(svc: K8sService) -> dict[int, tuple[IPNetwork, ...]] | None:
    """The service's loadBalancerSourceRanges per IP version (4, 6), each sorted and
    distinct, possibly empty; None when the service gave none (clients from anywhere)."""
    given = svc.load_balancer_source_ranges
    if given is None:
        return None
    return {
        v: tuple(sorted({n for n in given if n.version == v},
                        key=lambda n: (int(n.network_address), n.prefixlen)))
        for v in (4, 6)
    }


Event = tuple[ServiceKey, Service] | str  # a candidate entry, or a problem

ZONE_LABEL = "topology.kubernetes.io/zone"
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"


def _in_zone(
    backends: Sequence[Backend],
    zones: Mapping[tuple[IPAddress, int], tuple[str, ...] | None],
    zone: str | None,
) -> list[Backend] | None:
    """Topology aware routing as kube-proxy applies it: when every ready backend carries
    zone hints and one of them is hinted for this node's zone, the node uses the ready
    backends hinted for its zone (those not ready stay for the terminating fallback);
    otherwise None: the hints do not apply."""
    if zone is None:
        return None
    ready = [b for b in backends if b.state is BackendState.READY]
    hints = [zones.get((b.ip, b.port)) for b in ready]
    if not ready or any(h is None for h in hints) or not any(zone in (h or ()) for h in hints):
        return None
    return [b for b in backends
            if b.state is not BackendState.READY or zone in (zones.get((b.ip, b.port)) or ())]


def _plan_one(
    svc: K8sService,
    slices: Sequence[EndpointSlice],
    node: str,
    node_addresses: Sequence[IPAddress],
    out: list[Event],
    zone: str | None = None,
) -> None:
    """The service's candidate entries and problems, in order; which service gets a key
    claimed twice is decided across services, in plan_services."""
    if svc.type == "ExternalName":
        return
    if not svc.ports:
        out.append("spec.ports: the service has no ports; nothing programmed")
        return
    affinity = svc.session_affinity_timeout if svc.session_affinity == "ClientIP" else 0
    ext_local = svc.external_traffic_policy == "Local"
    int_local = svc.internal_traffic_policy == "Local"
    ranges = _source_ranges(svc) if svc.is_managed_lb and svc.status_ingress else None
    ranges_field = svc.load_balancer_source_ranges_field or "spec.loadBalancerSourceRanges"
    for sp in svc.ports:
        proto = PROTOCOLS.get(sp.protocol)
        if proto is None:
            out.append(
                f"spec.ports {sp.name or sp.port}: protocol {sp.protocol} is not "
                "supported by the datapath (TCP, UDP); skipped"
            )
            continue
        problems: list[str] = []
        zones: dict[tuple[IPAddress, int], tuple[str, ...] | None] = {}
        backends = _backends(svc, sp, slices, node, problems, zones)
        out.extend(problems)
        for key, external, nodeport, lb_ip in _keys(svc, sp, proto, node_addresses):
            fam = [b for b in backends if b.ip.version == key.vip.version]
            local = ext_local if external else int_local
            if not local:  # (a Local policy keeps to the node: hints do not apply)
                fam = _in_zone(fam, zones, zone) or fam
            allowed = ranges[key[0]] if lb_ip and ranges is not None else None
            if allowed == ():  # ranges given, none of this family: fail closed
                out.append(
                    f"{ranges_field}: no valid IPv{key[0]} range, so no client may connect "
                    f"to the service's IPv{key[0]} load-balancer IPs"
                )
            out.append((key, Service(
                tuple(fam),
                local,
                external,
                nodeport,
                affinity,
                name=svc.key,
                source_ranges=allowed,
            )))


@dataclass
class _Memo:
    svc: K8sService
    slices: tuple[EndpointSlice, ...]
    node: str
    addresses: tuple[IPAddress, ...]
    events: tuple[Event, ...]
    zone: str | None = None

    def fits(self, svc: K8sService, slices: tuple[EndpointSlice, ...], node: str,
             addresses: tuple[IPAddress, ...], zone: str | None = None) -> bool:
        """Same inputs: the same objects (cheap), or equal ones."""
        if (node != self.node or addresses != self.addresses or zone != self.zone
                or len(slices) != len(self.slices)):
            return False
        if self.svc is not svc and self.svc != svc:
            return False
        return all(a is b or a == b for a, b in zip(self.slices, slices, strict=True))


class PlanMemo:
    """The previous pass's per-service planning, reused when a service's inputs (its
    Service, source ranges included, and EndpointSlices, the node and its addresses) are
    equal, so that an unchanged service yields the very same `bpf.table.Service` objects
    pass after pass and the sync recognises them by identity. Optional: planning is the
    same without."""

    def __init__(self) -> None:
        self._last: dict[str, _Memo] = {}
        self.hits = 0
        self.misses = 0

    def events(self, svc: K8sService, slices: Sequence[EndpointSlice], node: str,
               node_addresses: Sequence[IPAddress], zone: str | None = None
               ) -> tuple[Event, ...]:
        sl, addrs = tuple(slices), tuple(node_addresses)
        prev = self._last.get(svc.key)
        if prev is not None and prev.fits(svc, sl, node, addrs, zone):
            self.hits += 1
            return prev.events
        self.misses += 1
        out = _events(svc, sl, node, addrs, zone)
        self._last[svc.key] = _Memo(svc, sl, node, addrs, out, zone)
        return out

    def keep(self, names: Iterable[str]) -> None:
        """Forget services that are gone."""
        live = set(names)
        for k in [k for k in self._last if k not in live]:
            del self._last[k]


def _events(svc: K8sService, slices: Sequence[EndpointSlice], node: str,
            node_addresses: Sequence[IPAddress], zone: str | None = None
            ) -> tuple[Event, ...]:
    out: list[Event] = []
    try:
        _plan_one(svc, slices, node, node_addresses, out, zone)
    except Exception as e:  # a model we did not foresee: blame the service, go on
        out.append(f"internal error planning the service: {e!r}")
    return tuple(out)


def proxied_here(svc: K8sService, proxy_name: str = "") -> bool:
    """Is svc this proxy's? As with kube-proxy, a service labelled
    service.kubernetes.io/service-proxy-name belongs to the proxy of that name alone; an
    unlabelled one to a proxy without a name (rackroute's default)."""
    return svc.meta.labels.get(SERVICE_PROXY_NAME_LABEL, "") == proxy_name


def plan_services(
    snap: Snapshot, node: str, node_addresses: Sequence[IPAddress] = (),
    memo: PlanMemo | None = None, proxy_name: str = "",
) -> ServicePlan:
    """The service table this node programs, and the per-service problems. With a memo,
    unchanged services reuse the previous pass's entries (the result is equal). Services
    of another proxy (`proxied_here`) are left out."""
    by_service: dict[str, list[EndpointSlice]] = {}
    for sk in sorted(snap.slices):
        sl = snap.slices[sk]
        by_service.setdefault(sl.service_key, []).append(sl)
    table: dict[ServiceKey, Service] = {}
    owner: dict[ServiceKey, str] = {}
    problems: dict[str, tuple[str, ...]] = {}
    me = snap.nodes.get(node)
    zone = me.meta.labels.get(ZONE_LABEL) if me is not None else None
    for name in sorted(snap.services):
        svc = snap.services[name]
        if not proxied_here(svc, proxy_name):
            continue
        slices = by_service.get(name, [])
        if memo is not None:
            events = memo.events(svc, slices, node, node_addresses, zone)
        else:
            events = _events(svc, slices, node, node_addresses, zone)
        found: list[str] = []
        for ev in events:
            if isinstance(ev, str):
                found.append(ev)
                continue
            key, entry = ev
            other = owner.get(key)
            if other is not None:
                if other != svc.key:
                    found.append(f"{key}: already served by service {other}; skipped")
                continue
            table[key] = entry
            owner[key] = svc.key
        if found:
            problems[name] = tuple(dict.fromkeys(found))
    if memo is not None:
        memo.keep(snap.services)
    return ServicePlan(table, problems)
