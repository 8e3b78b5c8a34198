"""The fake LinkPort passes the contract; the kernel VXLAN driver keeps its entries; the
tunnel drivers say which families they carry and the IPv6 MTU floor is reported."""

from __future__ import annotations

import ipaddress

from bpf.tunnel import EbpfTunnel, route_entries
from controller.desired.routes import TunnelPeer
from controller.kernel.links import FakeLinks, Underlay, Vtep
from controller.kernel.tunnels import KernelVxlan, ipv6_mtu_errors
from tests.unit.routing.link_contract import (
    LOCAL,
    LOCAL6,
    check_ipv6_underlay_and_counters,
    check_plain_and_ownership,
    check_underlay,
    check_vxlan_lifecycle,
)

V4 = ipaddress.IPv4Address
N4 = ipaddress.IPv4Network
N6 = ipaddress.IPv6Network


def fake() -> FakeLinks:
    u0 = Underlay("u0", 2, 1500)
    return FakeLinks({LOCAL: u0, LOCAL6: u0}, {ipaddress.ip_network("10.77.0.0/24")})


def test_fake_underlay() -> None:
    check_underlay(fake())


def test_fake_vxlan_lifecycle() -> None:
    check_vxlan_lifecycle(fake())


def test_fake_plain_and_ownership() -> None:
    check_plain_and_ownership(fake())


def test_fake_ipv6_underlay_and_counters() -> None:
    check_ipv6_underlay_and_counters(fake())


def peer(n: int) -> TunnelPeer:
    ip = V4(f"10.78.0.{n}")
    return TunnelPeer(f"n{n}", ip, f"02:72:0a:4e:00:{n:02x}", V4(f"10.244.{n}.0"),
                      (N4(f"10.244.{n}.0/24"),))


def test_kernel_vxlan_driver_sync() -> None:
    links = fake()
    d = KernelVxlan(links)
    assert d.sync(LOCAL, [peer(2), peer(3)]) == []
    link = links.vxlan("rr.vxlan")
    assert link is not None and (link.vni, link.port, link.mtu) == (1, 8472, 1450)
    assert link.mac == "02:72:0a:4d:00:01" and d.mtu() == 1450
    assert links.vteps("rr.vxlan") == {
        Vtep("02:72:0a:4e:00:02", V4("10.78.0.2"), V4("10.244.2.0")),
        Vtep("02:72:0a:4e:00:03", V4("10.78.0.3"), V4("10.244.3.0")),
    }
    assert d.sync(LOCAL, [peer(3)]) == []
    assert {v.remote for v in links.vteps("rr.vxlan")} == {V4("10.78.0.3")}
    d.teardown(LOCAL)
    assert links.links() == set() and d.mtu() is None


def test_kernel_vxlan_driver_without_underlay_reports() -> None:
    d = KernelVxlan(FakeLinks())
    errs = d.sync(LOCAL, [peer(2)])
    assert errs and "10.77.0.1" in errs[0]


def dual(n: int) -> TunnelPeer:
    return TunnelPeer(f"n{n}", V4(f"10.78.0.{n}"), f"02:72:0a:4e:00:{n:02x}",
                      V4(f"10.244.{n}.0"), (N4(f"10.244.{n}.0/24"),), (N6(f"fd00:{n}::/64"),))


def test_both_tunnels_carry_ipv6() -> None:
    assert KernelVxlan(fake()).layout.carries(N6("fd00:2::/64"))
    assert KernelVxlan(fake()).layout.carries(N4("10.244.2.0/24"))
    assert EbpfTunnel(fake(), "vxlan").layout.carries(N6("fd00:2::/64"))


def test_vtep_link_local_is_the_eui64_of_its_mac() -> None:
    from controller.desired.routes import vtep_ll6, vtep_mac

    assert str(vtep_ll6("02:72:0a:00:02:02")) == "fe80::72:aff:fe00:202"
    assert vtep_ll6(vtep_mac(V4("10.78.0.2"))) != vtep_ll6(vtep_mac(V4("10.78.0.3")))
    assert vtep_ll6("02:72:0a:00:02:02").is_link_local


def test_ebpf_tunnel_entries_per_family() -> None:
    mac = bytes.fromhex("02720a4e0002")
    remote = V4("10.78.0.2").packed + bytes(12)  # the value's 16-byte address field
    assert route_entries([dual(2)], 4) == {(24, N4("10.244.2.0/24").network_address.packed):
                                           (remote, mac)}
    assert route_entries([dual(2)], 6) == {(64, N6("fd00:2::/64").network_address.packed):
                                           (remote, mac)}
    assert route_entries([peer(2)], 6) == {}


def test_ipv6_needs_a_tunnel_mtu_of_1280() -> None:
    assert ipv6_mtu_errors("rr.tun", 1280, [dual(2)]) == []
    assert ipv6_mtu_errors("rr.tun", 1279, [peer(2)]) == []  # no IPv6 pod CIDR
    errs = ipv6_mtu_errors("rr.tun", 1279, [dual(2)])
    assert errs and "1330" in errs[0] and "rr.tun" in errs[0]
