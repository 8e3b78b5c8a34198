"""The netlink LinkPort passes the same contract as the fake, in a namespace of its own,
and leaves links it does not own alone."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from controller.kernel.links import NetlinkLinks
from tests.unit.routing.link_contract import (
    check_ipv6_underlay_and_counters,
    check_plain_and_ownership,
    check_underlay,
    check_vxlan_lifecycle,
)


@pytest.fixture
def port() -> Iterator[NetlinkLinks]:
    ns = f"rrt{os.getpid() % 1000000}l"

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", ns, *args], check=True)

    subprocess.run(["ip", "netns", "add", ns], check=True)
    p: NetlinkLinks | None = None
    try:
        ip("link", "add", "u0", "type", "veth", "peer", "name", "u1")
        ip("link", "add", "vxlan0", "type", "vxlan", "id", "9", "dstport", "4789")
        for dev in ("lo", "u0", "u1"):
            ip("link", "set", dev, "up")
        ip("addr", "add", "10.77.0.1/24", "dev", "u0")
        ip("-6", "addr", "add", "fd00:77::1/64", "dev", "u0", "nodad")
        p = NetlinkLinks(netns=ns)
        yield p
        out = subprocess.run(["ip", "-n", ns, "-d", "link", "show", "vxlan0"],
                             capture_output=True, text=True).stdout
        assert "vxlan id 9" in out  # foreign: untouched
    finally:
        if p is not None:
            p.close()
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_netlink_underlay(port: NetlinkLinks) -> None:
    check_underlay(port)


def test_netlink_vxlan_lifecycle(port: NetlinkLinks) -> None:
    check_vxlan_lifecycle(port)


def test_netlink_plain_and_ownership(port: NetlinkLinks) -> None:
    check_plain_and_ownership(port)


def test_netlink_ipv6_underlay_and_counters(port: NetlinkLinks) -> None:
    check_ipv6_underlay_and_counters(port)
