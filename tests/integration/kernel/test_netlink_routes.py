"""The netlink RoutePort passes the same contract as the fake, in a namespace of its own,
and never touches routes of other owners."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from controller.kernel.routes import RTPROT_RACKROUTE, NetlinkRoutes
from tests.unit.kernel.route_contract import (
    check_ipv6_gateways_of_ipv4_routes,
    check_onlink,
    check_replace_list_delete,
    check_sync,
    check_sync_leaves_others,
)


@pytest.fixture
def port() -> Iterator[NetlinkRoutes]:
    ns = f"rrk{os.getpid() % 100000}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", ns, *args], check=True)

    subprocess.run(["ip", "netns", "add", ns], check=True)
    p: NetlinkRoutes | None = None
    try:
        ip("link", "add", "e0", "type", "veth", "peer", "name", "e1")
        for dev in ("lo", "e0", "e1"):
            ip("link", "set", dev, "up")
        ip("addr", "add", "10.77.0.1/24", "dev", "e0")
        ip("addr", "add", "fd77::1/64", "dev", "e0", "nodad")
        ip("route", "add", "10.99.0.0/24", "via", "10.77.0.9", "proto", "static")
        p = NetlinkRoutes(netns=ns)
        yield p
        out = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True).stdout
        assert "10.99.0.0/24 via 10.77.0.9 dev e0 proto static" in out  # foreign: untouched
    finally:
        if p is not None:
            p.close()
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_netlink_contract_replace_list_delete(port: NetlinkRoutes) -> None:
    check_replace_list_delete(port)


def test_netlink_contract_sync(port: NetlinkRoutes) -> None:
    check_sync(port)
    assert port.proto == RTPROT_RACKROUTE


def test_netlink_contract_onlink(port: NetlinkRoutes) -> None:
    check_onlink(port)


def test_netlink_contract_sync_leaves_others(port: NetlinkRoutes) -> None:
    check_sync_leaves_others(port)


def test_netlink_contract_ipv6_gateways_of_ipv4_routes(port: NetlinkRoutes) -> None:
    check_ipv6_gateways_of_ipv4_routes(port)
