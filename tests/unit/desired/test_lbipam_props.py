"""Property tests of LB-IPAM over random pools and services in a small address space.

The small space (a /26 and a /122) makes overlaps, exhaustion and sharing frequent.
The checks re-derive the rules here rather than calling the planner's helpers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.types import IPAddress
from controller.desired.lbipam import IPS_USED, POOL_CONFLICT, LBIPAMResult, plan_lbipam
from controller.model.crds import LoadBalancerIPPool, PoolBlock
from controller.model.k8s import Service, ServicePort
from controller.model.meta import LabelSelector, Meta, frozen_map, selects

V4 = ipaddress.IPv4Network("10.0.0.0/26")
V6 = ipaddress.IPv6Network("fd00::/122")
NAMESPACES = ("a", "b")
STAMPS = ("", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z")
PORTS = (ServicePort(80), ServicePort(443), ServicePort(53, "UDP"), ServicePort(53))

# LBIPAM_EXAMPLES raises the budget for a deeper local search; CI keeps it bounded.
PROPS = settings(max_examples=int(os.environ.get("LBIPAM_EXAMPLES", "150")), deadline=None)


# ---------------------------------------------------------------- strategies


@st.composite
def addresses(draw: st.DrawFn) -> IPAddress:
    """Mostly the first few addresses, so requests and status entries collide often."""
    net = draw(st.sampled_from((V4, V4, V6)))
    top = draw(st.sampled_from((3, 3, net.num_addresses - 1)))
    return net[draw(st.integers(0, top))]


@st.composite
def blocks(draw: st.DrawFn) -> PoolBlock:
    net = draw(st.sampled_from((V4, V4, V6)))
    size = net.num_addresses
    if draw(st.booleans()):
        prefix = draw(st.integers(net.max_prefixlen - 4, net.max_prefixlen))
        subnets = list(net.subnets(new_prefix=prefix))
        return PoolBlock(cidr=draw(st.sampled_from(subnets)))
    start = draw(st.integers(0, size - 1))
    stop = draw(st.integers(start, min(size - 1, start + 12)))
    return PoolBlock(start=net[start], stop=net[stop])


SELECTORS = st.sampled_from(
    (
        None,
        LabelSelector(),
        LabelSelector(match_labels=(("team", "x"),)),
        LabelSelector(match_labels=(("io.kubernetes.service.namespace", "a"),)),
    )
)


@st.composite
def pools(draw: st.DrawFn, name: str) -> LoadBalancerIPPool:
    return LoadBalancerIPPool(
        meta=Meta("LoadBalancerIPPool", name, creation_timestamp=draw(st.sampled_from(STAMPS))),
        blocks=tuple(draw(st.lists(blocks(), min_size=1, max_size=3))),
        service_selector=draw(SELECTORS),
        allow_first_last=draw(st.booleans()),
        disabled=draw(st.sampled_from((False, False, False, True))),
    )


@st.composite
def services(draw: st.DrawFn, name: str, fresh: bool = False) -> Service:
    ns = draw(st.sampled_from(NAMESPACES))
    labels = draw(st.sampled_from(({}, {"team": "x"}, {"team": "y"})))
    families = draw(st.sampled_from(((), (4,), (6,), (4, 6), (6, 4))))
    few_ips = st.lists(addresses(), max_size=2, unique=True).map(tuple)
    return Service(
        meta=Meta(
            "Service",
            name,
            ns,
            labels=frozen_map(labels),
            creation_timestamp=draw(st.sampled_from(STAMPS)),
        ),
        type=draw(st.sampled_from(("LoadBalancer",) * 6 + ("ClusterIP",))),
        load_balancer_class=draw(st.sampled_from((None,) * 6 + ("other.io/lb",))),
        ports=tuple(draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=2, unique=True))),
        selector=frozen_map(draw(st.sampled_from(({}, {"app": "p"}, {"app": "q"})))),
        external_traffic_policy=draw(st.sampled_from(("Cluster", "Cluster", "Local"))),
        ip_families=families,
        ip_family_policy=draw(
            st.sampled_from(("SingleStack", "PreferDualStack", "RequireDualStack"))
        ),
        requested_ips=draw(st.one_of(st.just(()), st.just(()), few_ips)),
        status_ingress=() if fresh else draw(st.one_of(st.just(()), few_ips)),
        sharing_key=draw(st.sampled_from((None, "k", "k", "j"))),
        sharing_cross_namespace=draw(
            st.sampled_from((frozenset(), frozenset(), frozenset({"a", "b"}), frozenset({"*"})))
        ),
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Service], list[LoadBalancerIPPool]]:
    n_pools = draw(st.integers(0, 4))
    n_services = draw(st.integers(0, 12))
    return (
        [draw(services(f"s{i}")) for i in range(n_services)],
        [draw(pools(f"p{i}")) for i in range(n_pools)],
    )


# ---------------------------------------------------------------- independent checks


def _ports(svc: Service) -> set[tuple[int, str]]:
    return {(p.port, p.protocol) for p in svc.ports}


def _allows(svc: Service, ns: str) -> bool:
    cross = svc.sharing_cross_namespace
    return ns == svc.meta.namespace or ns in cross or "*" in cross


def may_share(a: Service, b: Service) -> bool:
    return (
        a.sharing_key is not None
        and a.sharing_key == b.sharing_key
        and not _ports(a) & _ports(b)
        and a.external_traffic_policy == b.external_traffic_policy
        and (
            a.external_traffic_policy == "Cluster"
            or (bool(a.selector) and dict(a.selector) == dict(b.selector))
        )
        and _allows(a, b.meta.namespace)
        and _allows(b, a.meta.namespace)
    )


def in_block(ip: IPAddress, block: PoolBlock) -> bool:
    if block.cidr is not None:
        return ip.version == block.cidr.version and ip in block.cidr
    assert block.start is not None and block.stop is not None
    return ip.version == block.start.version and int(block.start) <= int(ip) <= int(block.stop)


def conflicting(result: LBIPAMResult, name: str) -> bool:
    cond = result.pools[name][0]
    assert cond.type == POOL_CONFLICT
    return cond.status == "True"


def valid_home(
    ip: IPAddress, svc: Service, pools: Sequence[LoadBalancerIPPool], result: LBIPAMResult
) -> bool:
    """`ip` lies in a non-conflicting pool that selects `svc`."""
    return any(
        not conflicting(result, p.meta.name)
        and any(in_block(ip, b) for b in p.blocks)
        and selects(p.service_selector, svc.selector_labels())
        for p in pools
    )


def written_back(result: LBIPAMResult, svcs: Sequence[Service]) -> list[Service]:
    return [
        dataclasses.replace(s, status_ingress=result.services[s.key].ips)
        if s.key in result.services
        else s
        for s in svcs
    ]


# ---------------------------------------------------------------- properties


@PROPS
@given(worlds())
def test_every_managed_service_is_planned_and_no_ip_is_shared_unless_allowed(
    world: tuple[list[Service], list[LoadBalancerIPPool]],
) -> None:
    svcs, pool_list = world
    result = plan_lbipam(svcs, pool_list)
    assert set(result.services) == {s.key for s in svcs if s.is_managed_lb}
    by_key = {s.key: s for s in svcs}
    holders: dict[IPAddress, list[Service]] = {}
    for key, alloc in result.services.items():
        assert len(alloc.ips) == len(set(alloc.ips)) == len(alloc.pools)
        assert (alloc.condition.reason == "satisfied") == (alloc.condition.status == "True")
        if alloc.condition.reason == "satisfied":
            assert alloc.ips
        for ip in alloc.ips:
            holders.setdefault(ip, []).append(by_key[key])
    for ip, group in holders.items():
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                assert may_share(a, b), (ip, a.key, b.key)


@PROPS
@given(worlds())
def test_every_ip_is_inside_a_pool_that_selects_its_service(
    world: tuple[list[Service], list[LoadBalancerIPPool]],
) -> None:
    svcs, pool_list = world
    result = plan_lbipam(svcs, pool_list)
    by_name = {p.meta.name: p for p in pool_list}
    by_key = {s.key: s for s in svcs}
    used: dict[str, set[IPAddress]] = {name: set() for name in by_name}
    for key, alloc in result.services.items():
        svc = by_key[key]
        for ip, name in zip(alloc.ips, alloc.pools, strict=True):
            pool = by_name[name]
            assert not conflicting(result, name)
            assert any(in_block(ip, b) for b in pool.blocks), (ip, name)
            assert selects(pool.service_selector, svc.selector_labels())
            used[name].add(ip)
    for name, ips in used.items():
        counts = {c.type: c.message for c in result.pools[name]}
        assert counts[IPS_USED] == str(len(ips))


@PROPS
@given(worlds(), st.randoms(use_true_random=False))
def test_shuffled_input_gives_the_same_result(
    world: tuple[list[Service], list[LoadBalancerIPPool]], rng: object
) -> None:
    svcs, pool_list = world
    expected = plan_lbipam(svcs, pool_list)
    shuffled_svcs, shuffled_pools = list(svcs), list(pool_list)
    rng.shuffle(shuffled_svcs)  # type: ignore[attr-defined]
    rng.shuffle(shuffled_pools)  # type: ignore[attr-defined]
    assert plan_lbipam(shuffled_svcs, shuffled_pools) == expected


@PROPS
@given(worlds())
def test_plan_is_idempotent(world: tuple[list[Service], list[LoadBalancerIPPool]]) -> None:
    svcs, pool_list = world
    first = plan_lbipam(svcs, pool_list)
    assert plan_lbipam(written_back(first, svcs), pool_list) == first


@st.composite
def churn(
    draw: st.DrawFn,
) -> tuple[
    list[Service], list[LoadBalancerIPPool], list[Service], list[LoadBalancerIPPool], set[str]
]:
    """A world, then another one: some services and pools gone, new ones added."""
    svcs, pool_list = draw(worlds())
    kept_svcs = [s for s in svcs if draw(st.booleans())]
    kept_pools = [p for p in pool_list if draw(st.integers(0, 3)) > 0]
    new_svcs = [draw(services(f"new{i}", fresh=True)) for i in range(draw(st.integers(0, 6)))]
    new_pools = [draw(pools(f"newp{i}")) for i in range(draw(st.integers(0, 2)))]
    watched = {s.key for s in kept_svcs}
    return svcs, pool_list, kept_svcs + new_svcs, kept_pools + new_pools, watched


@PROPS
@given(churn())
def test_an_allocation_never_moves_while_valid(
    case: tuple[
        list[Service], list[LoadBalancerIPPool], list[Service], list[LoadBalancerIPPool], set[str]
    ],
) -> None:
    svcs, pool_list, later_svcs, later_pools, watched = case
    first = plan_lbipam(svcs, pool_list)
    live = {s.key: s for s in written_back(first, svcs)}
    later = [live.get(s.key, s) for s in later_svcs]
    second = plan_lbipam(later, later_pools)
    for key in watched:
        if key not in first.services:
            continue
        svc = live[key]
        for ip in first.services[key].ips:
            if valid_home(ip, svc, later_pools, second):
                assert ip in second.services[key].ips, (key, ip)
