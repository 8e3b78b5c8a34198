"""The RoutePort contract: run against the fake (unit) and netlink in a netns (integration)."""

from __future__ import annotations

import ipaddress

from controller.kernel.routes import KernelRoute, RoutePort, sync_routes

N = ipaddress.ip_network
A = ipaddress.ip_address

# The real port needs these gateways on a connected subnet: 10.77.0.0/24 and fd77::/64.
R1 = KernelRoute(N("10.60.1.0/24"), (A("10.77.0.2"),))
R2 = KernelRoute(N("10.60.2.0/24"), (A("10.77.0.2"), A("10.77.0.3")))
R6 = KernelRoute(N("fd60:1::/64"), (A("fd77::2"),))


def check_replace_list_delete(port: RoutePort) -> None:
    assert port.list() == set()
    port.replace(R1)
    port.replace(R2)
    port.replace(R6)
    assert port.list() == {R1, R2, R6}
    moved = KernelRoute(R1.dst, (A("10.77.0.3"),))
    port.replace(moved)
    assert port.list() == {moved, R2, R6}
    port.delete(moved)
    port.delete(moved)  # idempotent
    assert port.list() == {R2, R6}


def check_sync(port: RoutePort) -> None:
    assert sync_routes(port, {R1, R2}) == (2, 0, [])
    assert sync_routes(port, {R1, R2}) == (0, 0, [])
    assert sync_routes(port, {R2, R6}) == (1, 1, [])
    assert port.list() == {R2, R6}
    assert sync_routes(port, set()) == (0, 2, [])
    assert port.list() == set()


def check_onlink(port: RoutePort, dev: str = "e0") -> None:
    """A gateway outside any connected subnet, taken on trust behind dev (tunnels)."""
    r = KernelRoute(N("10.60.9.0/24"), (A("10.88.0.9"),), dev, onlink=True)
    port.replace(r)
    assert port.list() == {r}
    port.delete(r)
    assert port.list() == set()


def check_sync_leaves_others(port: RoutePort, dev: str = "e0") -> None:
    """Routes of the protocol that `others` names (the CNI plugin's routes to its pods,
    both families) survive a sync that does not want them; the rest go."""
    pods = {KernelRoute(N("10.60.7.7/32"), dev=dev), KernelRoute(N("fd60:7::7/128"), dev=dev)}
    for r in pods:
        port.replace(r)
    port.replace(R1)

    def others(r: KernelRoute) -> bool:
        return r.dev == dev and not r.gateways

    assert sync_routes(port, {R6}, others) == (1, 1, [])
    assert port.list() == pods | {R6}
    assert sync_routes(port, set()) == (0, 3, [])  # without `others` they are ours
    assert port.list() == set()


def check_ipv6_gateways_of_ipv4_routes(port: RoutePort) -> None:
    """RFC 8950: an IPv4 route through IPv6 gateways (one, several, or mixed with an IPv4
    one) lists back as it was put; an IPv6 route through an IPv4 gateway is refused."""
    one = KernelRoute(N("10.60.5.0/24"), (A("fd77::2"),))
    ecmp = KernelRoute(N("10.60.6.0/24"), (A("fd77::2"), A("fd77::3")))
    mixed = KernelRoute(N("10.60.8.0/24"), (A("10.77.0.2"), A("fd77::3")))
    for r in (one, ecmp, mixed):
        port.replace(r)
    assert port.list() == {one, ecmp, mixed}
    moved = KernelRoute(one.dst, (A("10.77.0.3"),))  # back to an IPv4 gateway
    port.replace(moved)
    assert port.list() == {moved, ecmp, mixed}
    try:
        port.replace(KernelRoute(N("fd60:5::/64"), (A("10.77.0.2"),)))
    except ValueError as e:
        assert "fd60:5::/64" in str(e)
    else:
        raise AssertionError("an IPv6 route through an IPv4 gateway was taken")
    assert sync_routes(port, set()) == (0, 3, [])
    assert port.list() == set()
