"""LB-IPAM: LoadBalancer IPs for managed services from LoadBalancerIPPools, as a pure function.

`plan_lbipam(services, pools)` decides every managed LoadBalancer service's IPs and
condition, and every pool's conditions. It runs in three passes over services sorted by
(creation timestamp, ns/name), so the result does not depend on input order:

1. keep: every IP already in a service's status stays while it lies inside a
   non-conflicting pool (disabled ones included) that selects the service, and no
   earlier service holds it incompatibly. This runs before anything new is handed
   out, so a new service never takes an IP from an existing one (never-renumber).
2. request: IPs asked for by annotation / spec.loadBalancerIP.
3. allocate: the families the service still lacks, sharing an IP of the same sharing
   key first, else the lowest free address of the enabled, non-conflicting pools that
   select it.

Requested IPs replace automatic allocation: a service that requests IPs gets exactly
those it can have, whatever its ipFamilyPolicy. A kept IP only needs to lie in a block
(a later allowFirstLastIPs "No" does not renumber it); disabled and conflicting pools
report 0 available. Service keys (ns/name) are assumed unique in the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bgp.types import IPAddress
from controller.desired.lbipam_pools import OwnerIndex, PoolSpace, build_spaces, to_ip
from controller.desired.lbipam_rules import (
    PREFER_DUAL_STACK,
    REQUIRE_DUAL_STACK,
    family_rank,
    same_key,
    wanted_families,
)
from controller.desired.lbipam_share import Holders, SharingIndex, new_holders
from controller.model.crds import LoadBalancerIPPool
from controller.model.k8s import Service
from controller.model.meta import Condition, selects

SERVICE_CONDITION = "rackroute.io/IPAMRequestSatisfied"
POOL_CONFLICT = "PoolConflict"  # the names API.md gives (and the CRD's printer columns read)
IPS_TOTAL = "IPsTotal"
IPS_AVAILABLE = "IPsAvailable"
IPS_USED = "IPsUsed"

SATISFIED = "satisfied"
NO_POOL = "no_pool"
POOL_SELECTOR_MISMATCH = "pool_selector_mismatch"
ALREADY_ALLOCATED = "already_allocated"
ALREADY_ALLOCATED_INCOMPATIBLE = "already_allocated_incompatible_service"
OUT_OF_IPS = "out_of_ips"


@dataclass(frozen=True)
class ServiceAllocation:
    """The IPs of one managed LoadBalancer service and its IPAMRequestSatisfied condition."""

    service: str  # "ns/name"
    ips: tuple[IPAddress, ...]  # in family order
    pools: tuple[str, ...]  # pool name of each ip
    condition: Condition


@dataclass(frozen=True)
class LBIPAMResult:
    """Every managed LB service's allocation, and every pool's conditions."""

    services: Mapping[str, ServiceAllocation]
    pools: Mapping[str, tuple[Condition, ...]]


@dataclass(frozen=True)
class _Failure:
    """Why a service is not satisfied; `taken` defers the message to the final holders."""

    reason: str
    message: str
    taken: IPAddress | None = None


@dataclass
class _Plan:
    """The mutable state of one planning pass."""

    spaces: list[PoolSpace]
    index: OwnerIndex
    used: dict[int, set[int]] = field(default_factory=lambda: {4: set(), 6: set()})
    holders: dict[IPAddress, Holders] = field(default_factory=dict)
    pool_of: dict[IPAddress, PoolSpace] = field(default_factory=dict)
    sharing: SharingIndex = field(default_factory=SharingIndex)
    got: dict[str, dict[IPAddress, str]] = field(default_factory=dict)
    failures: dict[str, _Failure] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def selects(self, space: PoolSpace, svc: Service) -> bool:
        labels = self.labels.get(svc.key)
        if labels is None:
            labels = self.labels[svc.key] = svc.selector_labels()
        return selects(space.pool.service_selector, labels)

    def blocker(self, svc: Service, ip: IPAddress) -> tuple[Service, str] | None:
        """A holder of `ip` that `svc` may not share with, and why."""
        holders = self.holders.get(ip)
        return holders.blocker(svc) if holders is not None else None

    def take(self, svc: Service, ip: IPAddress, space: PoolSpace) -> None:
        self.got.setdefault(svc.key, {})[ip] = space.name
        holders = self.holders.get(ip)
        if holders is None:
            self.holders[ip] = new_holders(svc)
        else:
            holders.add(svc)
        self.pool_of[ip] = space
        self.used[ip.version].add(int(ip))
        self.sharing.add(svc, ip)

    def fail(self, svc: Service, failure: _Failure) -> None:
        self.failures.setdefault(svc.key, failure)


def _service_order(svc: Service) -> tuple[str, str]:
    return svc.meta.creation_timestamp, svc.key


# ---------------------------------------------------------------- pass 1: keep


def _keep_existing(plan: _Plan, svc: Service) -> None:
    """Honour the service's status IPs that are still valid."""
    families = wanted_families(svc)
    kept: set[int] = set()
    for ip in svc.status_ingress:
        if svc.requested_ips:
            if ip not in svc.requested_ips:
                continue
        elif ip.version not in families or ip.version in kept:
            continue
        if ip in plan.got.get(svc.key, {}):
            continue
        space = plan.index.owner(ip)
        if space is None or not plan.selects(space, svc) or plan.blocker(svc, ip):
            continue
        plan.take(svc, ip, space)
        kept.add(ip.version)


# ---------------------------------------------------------------- pass 2: request


def _not_in_pool(plan: _Plan, svc: Service, ip: IPAddress) -> _Failure:
    losers = [s.name for s in plan.spaces if s.conflict is not None and s.holds(ip)]
    why = "in no pool"
    if losers:
        why = f"only in pool {losers[0]}, which conflicts with an older pool"
    return _Failure(NO_POOL, f"service {svc.key}: requested IP {ip} is {why}")


def _taken(plan: _Plan, svc: Service, ip: IPAddress) -> _Failure | None:
    """A placeholder failure when `ip` is held by a service `svc` may not share with."""
    if plan.blocker(svc, ip) is None:
        return None
    return _Failure(ALREADY_ALLOCATED, "", taken=ip)


def _render_taken(plan: _Plan, svc: Service, ip: IPAddress) -> _Failure:
    """The already-allocated failure, judged against the final holders in service order.

    Holders that joined after the request was refused are included, so the message
    does not depend on when the request was looked at, and re-planning repeats it.
    """
    holders = new_holders(*sorted(plan.holders[ip].members, key=_service_order))
    found = holders.blocker(svc)
    assert found is not None, "a refused IP is held incompatibly"
    other, why = found
    reason = ALREADY_ALLOCATED_INCOMPATIBLE if same_key(svc, other) else ALREADY_ALLOCATED
    return _Failure(
        reason,
        f"service {svc.key}: requested IP {ip} is already allocated to service "
        f"{other.key}, which cannot share it: {why}",
    )


def _check_request(plan: _Plan, svc: Service, ip: IPAddress) -> PoolSpace | _Failure:
    space = plan.index.owner(ip)
    if space is None:
        return _not_in_pool(plan, svc, ip)
    where = f"service {svc.key}: requested IP {ip} is in pool {space.name}"
    if not plan.selects(space, svc):
        return _Failure(
            POOL_SELECTOR_MISMATCH, f"{where}, whose serviceSelector does not select the service"
        )
    if space.pool.disabled:
        return _Failure(NO_POOL, f"{where}, which is disabled")
    if not space.can_allocate(ip):
        return _Failure(NO_POOL, f"{where} but is a first or last address (allowFirstLastIPs: No)")
    return _taken(plan, svc, ip) or space


def _request(plan: _Plan, svc: Service) -> None:
    """Allocate the requested IPs the service does not hold yet."""
    for ip in svc.requested_ips:
        if ip in plan.got.get(svc.key, {}):
            continue
        checked = _check_request(plan, svc, ip)
        if isinstance(checked, _Failure):
            plan.fail(svc, checked)
        else:
            plan.take(svc, ip, checked)


# ---------------------------------------------------------------- pass 3: allocate


def _shared(plan: _Plan, svc: Service, version: int, names: set[str]) -> IPAddress | None:
    """The lowest IP of the service's sharing key it may join, in a pool it may use."""
    for ip in plan.sharing.candidates(svc, version):
        if plan.pool_of[ip].name in names and plan.blocker(svc, ip) is None:
            return ip
    return None


def _find(plan: _Plan, svc: Service, version: int) -> tuple[IPAddress, PoolSpace] | _Failure:
    """An address of `version` for the service, or why there is none."""
    spaces = [
        s
        for s in plan.spaces
        if s.accepts_new and version in s.allocatable and plan.selects(s, svc)
    ]
    if not spaces:
        return _Failure(
            NO_POOL, f"service {svc.key}: no enabled pool with IPv{version} addresses selects it"
        )
    shared = _shared(plan, svc, version, {s.name for s in spaces})
    if shared is not None:
        return shared, plan.pool_of[shared]
    best: tuple[int, PoolSpace] | None = None
    for space in spaces:
        free = space.lowest_free(version, plan.used[version])
        if free is not None and (best is None or free < best[0]):
            best = (free, space)
    if best is None:
        names = ", ".join(s.name for s in spaces)
        return _Failure(
            OUT_OF_IPS, f"service {svc.key}: no free IPv{version} address in pool(s) {names}"
        )
    return to_ip(version, best[0]), best[1]


def _dual_stack_failure(plan: _Plan, svc: Service, failures: list[_Failure]) -> _Failure:
    """RequireDualStack's failure, worded from the pools alone so re-planning repeats it."""
    missing = [f for f in failures if f.reason == NO_POOL]
    if missing:
        return _Failure(OUT_OF_IPS, f"{missing[0].message} (RequireDualStack needs both)")
    names = ", ".join(s.name for s in plan.spaces if s.accepts_new and plan.selects(s, svc))
    return _Failure(
        OUT_OF_IPS,
        f"service {svc.key}: pool(s) {names} have no free address for one of its families "
        "(RequireDualStack needs both)",
    )


def _allocate(plan: _Plan, svc: Service) -> None:
    """Fill the families the service still lacks, per its ipFamilyPolicy."""
    have: set[int] = {ip.version for ip in plan.got.get(svc.key, {})}
    picks: list[tuple[IPAddress, PoolSpace]] = []
    failures: list[_Failure] = []
    for version in wanted_families(svc):
        if version in have:
            continue
        found = _find(plan, svc, version)
        if isinstance(found, _Failure):
            failures.append(found)
        else:
            picks.append(found)
            have.add(version)
    policy = svc.ip_family_policy
    if failures and policy == REQUIRE_DUAL_STACK:
        plan.fail(svc, _dual_stack_failure(plan, svc, failures))
        return
    for ip, space in picks:
        plan.take(svc, ip, space)
    if failures and not (policy == PREFER_DUAL_STACK and have):
        plan.fail(svc, failures[0])


# ---------------------------------------------------------------- results


def _allocation(plan: _Plan, svc: Service) -> ServiceAllocation:
    got = plan.got.get(svc.key, {})
    order = sorted(got, key=lambda ip: family_rank(svc, ip.version))
    failure = plan.failures.get(svc.key)
    if failure is not None and failure.taken is not None:
        failure = _render_taken(plan, svc, failure.taken)
    if failure is None:
        shown = ", ".join(f"{ip} from pool {got[ip]}" for ip in order)
        status, reason, message = "True", SATISFIED, f"service {svc.key}: {shown}"
    else:
        status, reason, message = "False", failure.reason, failure.message
    condition = Condition(SERVICE_CONDITION, status, reason, message, svc.meta.generation)
    return ServiceAllocation(svc.key, tuple(order), tuple(got[ip] for ip in order), condition)


def _pool_conditions(plan: _Plan) -> dict[str, tuple[Condition, ...]]:
    used: dict[str, int] = {}
    used_allocatable: dict[str, int] = {}
    for ip, space in plan.pool_of.items():
        used[space.name] = used.get(space.name, 0) + 1
        if space.can_allocate(ip):
            used_allocatable[space.name] = used_allocatable.get(space.name, 0) + 1
    out: dict[str, tuple[Condition, ...]] = {}
    for space in plan.spaces:
        gen = space.pool.meta.generation
        total = space.total()
        free = total - used_allocatable.get(space.name, 0) if space.accepts_new else 0
        if space.conflict is not None:
            conflict = Condition(POOL_CONFLICT, "True", "conflict", space.conflict, gen)
        else:
            message = f"pool {space.name} overlaps no older pool"
            conflict = Condition(POOL_CONFLICT, "False", "no_conflict", message, gen)
        out[space.name] = (
            conflict,
            Condition(IPS_TOTAL, "True", "counted", str(total), gen),
            Condition(IPS_AVAILABLE, "True", "counted", str(free), gen),
            Condition(IPS_USED, "True", "counted", str(used.get(space.name, 0)), gen),
        )
    return out


def plan_lbipam(services: Iterable[Service], pools: Iterable[LoadBalancerIPPool]) -> LBIPAMResult:
    """Allocate LoadBalancer IPs for every managed service; see the module docstring."""
    managed = sorted((s for s in services if s.is_managed_lb), key=_service_order)
    spaces, index = build_spaces(pools)
    plan = _Plan(spaces, index)
    for svc in managed:
        _keep_existing(plan, svc)
    for svc in managed:
        if svc.requested_ips:
            _request(plan, svc)
    for svc in managed:
        if not svc.requested_ips:
            _allocate(plan, svc)
    allocations = {svc.key: _allocation(plan, svc) for svc in managed}
    return LBIPAMResult(
        services=MappingProxyType(allocations),
        pools=MappingProxyType(_pool_conditions(plan)),
    )
