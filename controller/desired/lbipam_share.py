"""LB-IPAM sharing bookkeeping: who holds each IP, and an index of shareable IPs.

Both exist so that checking or finding a sharing partner costs about the size of the
newcomer's ports, not the number of services already holding IPs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bgp.types import IPAddress
from controller.desired.lbipam_rules import (
    WILDCARD_NAMESPACE,
    Port,
    allows,
    namespace_conflict,
    ports_of,
    share_conflict,
)
from controller.model.k8s import Service


@dataclass
class Holders:
    """The services holding one IP, summarised for fast compatibility checks.

    Holders are pairwise compatible, so they agree on sharing key, traffic policy and
    (for Local) selector: one of them stands for all on those rules. Namespaces and
    ports are kept per holder.
    """

    first: Service
    members: list[Service] = field(default_factory=list)
    namespaces: dict[str, Service] = field(default_factory=dict)  # first holder per namespace
    restricted: dict[tuple[str, frozenset[str]], Service] = field(default_factory=dict)
    ports: dict[Port, Service] = field(default_factory=dict)

    def add(self, svc: Service) -> None:
        self.members.append(svc)
        self.namespaces.setdefault(svc.meta.namespace, svc)
        if WILDCARD_NAMESPACE not in svc.sharing_cross_namespace:
            policy = (svc.meta.namespace, svc.sharing_cross_namespace)
            self.restricted.setdefault(policy, svc)
        for port in ports_of(svc):
            self.ports.setdefault(port, svc)

    def blocker(self, svc: Service) -> tuple[Service, str] | None:
        """A holder `svc` may not share with, and why; `svc` must not be a holder."""
        why = share_conflict(svc, self.first, ports=False, namespaces=False)
        if why is not None:
            return self.first, why
        if WILDCARD_NAMESPACE not in svc.sharing_cross_namespace:
            # at most 1 + len(allowed) namespaces pass, so this stops early
            for namespace, other in self.namespaces.items():
                if not allows(svc, namespace):
                    return other, namespace_conflict(svc, other)
        for other in self.restricted.values():
            if not allows(other, svc.meta.namespace):
                return other, namespace_conflict(svc, other)
        for port in sorted(ports_of(svc)):
            user = self.ports.get(port)
            if user is not None:
                return user, f"both use port {port[0]}/{port[1]}"
        return None


def new_holders(*members: Service) -> Holders:
    """The holders of an IP, the first of `members` taking it first."""
    holders = Holders(members[0])
    for svc in members:
        holders.add(svc)
    return holders


BucketKey = tuple[str, int, str, frozenset[tuple[str, str]] | None, str | None]


def _bucket_keys(svc: Service, version: int) -> tuple[BucketKey, BucketKey] | None:
    """(this namespace, every namespace) buckets; None when the service shares nothing."""
    if svc.sharing_key is None:
        return None
    selector: frozenset[tuple[str, str]] | None = None
    if svc.external_traffic_policy == "Local":
        if not svc.selector:
            return None
        selector = frozenset(svc.selector.items())
    common = (svc.sharing_key, version, svc.external_traffic_policy, selector)
    return (*common, svc.meta.namespace), (*common, None)


@dataclass
class _Bucket:
    """Shared IPs indexed by the ports their holders here leave free."""

    ips: set[IPAddress] = field(default_factory=set)
    free_for: dict[Port, set[IPAddress]] = field(default_factory=dict)

    def add(self, ip: IPAddress, ports: set[Port]) -> None:
        if ip not in self.ips:
            self.ips.add(ip)
            for free in self.free_for.values():
                free.add(ip)
        for port in ports:
            if port not in self.free_for:
                self.free_for[port] = set(self.ips)
            self.free_for[port].discard(ip)

    def candidates(self, ports: set[Port]) -> set[IPAddress]:
        """IPs none of whose holders here use one of `ports`."""
        known = sorted((self.free_for[p] for p in ports if p in self.free_for), key=len)
        return set.intersection(*known) if known else set(self.ips)


@dataclass
class SharingIndex:
    """IPs held by services with a sharing key, so a newcomer finds a partner fast.

    Candidates are a pre-filter (same key, policy, selector; ports free among holders of
    the namespaces looked at); callers still confirm with `Holders.blocker`.
    """

    buckets: dict[BucketKey, _Bucket] = field(default_factory=dict)

    def add(self, svc: Service, ip: IPAddress) -> None:
        keys = _bucket_keys(svc, ip.version)
        for key in keys or ():
            self.buckets.setdefault(key, _Bucket()).add(ip, ports_of(svc))

    def candidates(self, svc: Service, version: int) -> list[IPAddress]:
        """IPs `svc` might join, lowest first."""
        keys = _bucket_keys(svc, version)
        if keys is None:
            return []
        own, anywhere = keys
        allowed = svc.sharing_cross_namespace
        looked: Iterable[BucketKey]
        if WILDCARD_NAMESPACE in allowed:
            looked = (anywhere,)
        else:
            looked = [own, *((*own[:4], ns) for ns in sorted(allowed - {svc.meta.namespace}))]
        found: set[IPAddress] = set()
        ports = ports_of(svc)
        for key in looked:
            bucket = self.buckets.get(key)
            if bucket is not None:
                found |= bucket.candidates(ports)
        return sorted(found, key=int)
