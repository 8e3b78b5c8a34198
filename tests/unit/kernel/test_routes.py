"""RoutePort fake passes the contract; learned-route planning is pure and exact."""

from __future__ import annotations

import ipaddress

from bgp.types import Route
from controller.desired.routes import desired_routes
from controller.kernel.routes import FakeRoutes, KernelRoute
from tests.unit.kernel.route_contract import (
    check_ipv6_gateways_of_ipv4_routes,
    check_onlink,
    check_replace_list_delete,
    check_sync,
    check_sync_leaves_others,
)

N = ipaddress.ip_network
A = ipaddress.ip_address


def test_fake_contract_replace_list_delete() -> None:
    check_replace_list_delete(FakeRoutes())


def test_fake_contract_sync() -> None:
    check_sync(FakeRoutes())


def test_fake_contract_onlink() -> None:
    check_onlink(FakeRoutes())


def test_fake_contract_sync_leaves_others() -> None:
    check_sync_leaves_others(FakeRoutes())


def test_fake_contract_ipv6_gateways_of_ipv4_routes() -> None:
    check_ipv6_gateways_of_ipv4_routes(FakeRoutes())


def test_fake_never_lists_foreign_routes() -> None:
    f = FakeRoutes()
    f.foreign.add(KernelRoute(N("0.0.0.0/0"), (A("10.0.0.1"),)))
    assert f.list() == set()


def test_learned_routes_ecmp_and_own_cidr_skipped() -> None:
    got = desired_routes(
        [
            Route(N("10.244.1.0/24"), A("10.0.0.12"), A("10.0.0.1"), (65000, 65012)),
            Route(N("10.244.9.0/24"), A("10.0.0.12"), A("10.0.0.1"), (65000, 65012)),
            Route(N("10.244.9.0/24"), A("10.0.0.13"), A("10.0.0.2"), (65000, 65013)),
            Route(N("10.244.9.0/24"), A("10.0.0.14"), A("10.0.0.2"), (65000, 1, 65013)),
            Route(N("10.244.0.0/24"), A("10.0.0.11"), A("10.0.0.1"), (65000, 65011)),
            Route(N("10.244.5.0/24"), None, A("10.0.0.1"), (65000,)),
        ],
        own={N("10.244.0.0/24")},
    )
    assert got == {
        KernelRoute(N("10.244.1.0/24"), (A("10.0.0.12"),)),
        KernelRoute(N("10.244.9.0/24"), (A("10.0.0.12"), A("10.0.0.13"))),
    }


def test_local_pref_beats_as_path() -> None:
    got = desired_routes(
        [
            Route(N("10.1.0.0/24"), A("10.0.0.2"), A("10.0.0.1"), (1,), local_pref=100),
            Route(N("10.1.0.0/24"), A("10.0.0.3"), A("10.0.0.1"), (1, 2, 3), local_pref=200),
        ],
        own=set(),
    )
    assert got == {KernelRoute(N("10.1.0.0/24"), (A("10.0.0.3"),))}


def test_ipv4_prefixes_through_ipv6_next_hops() -> None:
    """RFC 8950: IPv4 learned over an IPv6 session routes through its IPv6 next hop (ECMP
    too); IPv4 next hops win where both families are equally good; an IPv6 prefix with an
    IPv4 next hop, or an unspecified next hop, is no route."""
    got = desired_routes(
        [
            Route(N("10.244.1.0/24"), A("fd00:10::12"), A("fd00:10::1"), (65000, 65012)),
            Route(N("10.244.2.0/24"), A("fd00:10::12"), A("fd00:10::1"), (65000, 65012)),
            Route(N("10.244.2.0/24"), A("fd00:10::13"), A("fd00:10::2"), (65000, 65013)),
            Route(N("10.244.3.0/24"), A("fd00:10::13"), A("fd00:10::1"), (65000, 65013)),
            Route(N("10.244.3.0/24"), A("10.0.0.13"), A("10.0.0.1"), (65000, 65013)),
            Route(N("10.244.4.0/24"), A("fd00:10::14"), A("fd00:10::1"), (65000, 65014)),
            Route(N("10.244.4.0/24"), A("10.0.0.14"), A("10.0.0.1"), (65000, 1, 65014)),
            Route(N("fd00:244:5::/64"), A("10.0.0.15"), A("10.0.0.1"), (65000, 65015)),
            Route(N("10.244.6.0/24"), A("::"), A("fd00:10::1"), (65000, 65016)),
        ],
        own=set(),
    )
    assert got == {
        KernelRoute(N("10.244.1.0/24"), (A("fd00:10::12"),)),
        KernelRoute(N("10.244.2.0/24"), (A("fd00:10::12"), A("fd00:10::13"))),
        KernelRoute(N("10.244.3.0/24"), (A("10.0.0.13"),)),
        KernelRoute(N("10.244.4.0/24"), (A("fd00:10::14"),)),  # the shorter AS path
    }
