"""The LinkPort contract: run against the fake (unit) and netlink in a netns (integration).

The real port needs an underlay device `u0` holding 10.77.0.1/24 and fd00:77::1/64 (MTU
1500) and no owned (rr.*) links at the start.
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from controller.desired.routes import vtep_ll6, vtep_mac
from controller.kernel.links import LINK_STATS, LinkPort, Vtep, VxlanLink

LOCAL = ipaddress.IPv4Address("10.77.0.1")
V4 = ipaddress.IPv4Address
LINK = VxlanLink("rr.vxlan", 1, 8472, LOCAL, vtep_mac(LOCAL), 1450)
E1 = Vtep(vtep_mac(V4("10.78.0.2")), V4("10.78.0.2"), V4("10.244.2.0"))
E2 = Vtep(vtep_mac(V4("10.79.0.3")), V4("10.79.0.3"), V4("10.244.3.0"))
# a dual-stack node: also the permanent neighbor of its IPv6 link-local next hop
E3 = Vtep(vtep_mac(V4("10.80.0.4")), V4("10.80.0.4"), V4("10.244.4.0"),
          vtep_ll6(vtep_mac(V4("10.80.0.4"))))


LOCAL6 = ipaddress.IPv6Address("fd00:77::1")
V6 = ipaddress.IPv6Address
LINK6 = VxlanLink("rr.vxlan", 1, 8472, LOCAL6, vtep_mac(LOCAL6), 1430)
# over an IPv6 underlay: a dual-stack node, and an IPv6-only one (no inner IPv4 address)
E6 = Vtep(vtep_mac(V6("fd00:78::2")), V6("fd00:78::2"), V4("10.244.6.0"),
          vtep_ll6(vtep_mac(V6("fd00:78::2"))))
E7 = Vtep(vtep_mac(V6("fd00:79::3")), V6("fd00:79::3"), None,
          vtep_ll6(vtep_mac(V6("fd00:79::3"))))


def check_underlay(port: LinkPort) -> None:
    u = port.underlay(LOCAL)
    assert u is not None and u.name == "u0" and u.mtu == 1500
    assert port.underlay(LOCAL6) == u
    assert port.underlay(V4("10.1.2.3")) is None
    assert port.underlay(V6("fd00:1::1")) is None
    assert ipaddress.ip_network("10.77.0.0/24") in port.connected()


def check_vxlan_lifecycle(port: LinkPort) -> None:
    assert port.links() == set()
    assert port.vxlan("rr.vxlan") is None
    port.ensure_vxlan(LINK)
    port.ensure_vxlan(LINK)  # idempotent
    assert port.vxlan("rr.vxlan") == LINK
    assert port.links() == {"rr.vxlan"}
    port.add_vtep("rr.vxlan", E1)
    port.add_vtep("rr.vxlan", E2)
    port.add_vtep("rr.vxlan", E1)
    assert port.vteps("rr.vxlan") == {E1, E2}
    port.del_vtep("rr.vxlan", E1)
    port.del_vtep("rr.vxlan", E1)  # idempotent
    assert port.vteps("rr.vxlan") == {E2}
    port.add_vtep("rr.vxlan", E3)
    assert port.vteps("rr.vxlan") == {E2, E3}
    port.del_vtep("rr.vxlan", E3)  # both neighbors and the FDB entry go
    assert port.vteps("rr.vxlan") == {E2}
    gains = dataclasses.replace(E2, inner6=vtep_ll6(E2.mac))
    port.add_vtep("rr.vxlan", gains)  # over the IPv4-only entry: replaced in place
    assert port.vteps("rr.vxlan") == {gains}
    port.del_vtep("rr.vxlan", gains)
    port.add_vtep("rr.vxlan", E2)
    assert port.vteps("rr.vxlan") == {E2}
    smaller = dataclasses.replace(LINK, mtu=1400)
    port.ensure_vxlan(smaller)  # in place: entries stay
    assert port.vxlan("rr.vxlan") == smaller and port.vteps("rr.vxlan") == {E2}
    other = dataclasses.replace(LINK, vni=7)
    port.ensure_vxlan(other)  # recreated: entries go with the old link
    assert port.vxlan("rr.vxlan") == other and port.vteps("rr.vxlan") == set()
    port.delete("rr.vxlan")
    port.delete("rr.vxlan")
    assert port.links() == set() and port.vteps("rr.vxlan") == set()


def check_plain_and_ownership(port: LinkPort) -> None:
    idx = port.ensure_plain("rr.tun", 1450)
    assert isinstance(idx, int) and idx > 0
    assert port.ensure_plain("rr.tun", 1400) == idx
    assert port.links() == {"rr.tun"} and port.vxlan("rr.tun") is None
    assert ipaddress.ip_network("10.77.0.0/24") in port.connected()
    for bad in ("u0", "vxlan0"):
        with pytest.raises(ValueError, match="rr"):
            port.delete(bad)
        with pytest.raises(ValueError, match="rr"):
            port.ensure_plain(bad, 1500)
    port.delete("rr.tun")
    assert port.links() == set()


def check_ipv6_underlay_and_counters(port: LinkPort) -> None:
    assert port.link_stats("rr.vxlan") is None  # no such link
    port.ensure_vxlan(LINK6)
    assert port.vxlan("rr.vxlan") == LINK6
    stats = port.link_stats("rr.vxlan")
    assert stats is not None and set(stats) == set(LINK_STATS)
    assert all(isinstance(v, int) and v >= 0 for v in stats.values())
    port.add_vtep("rr.vxlan", E6)
    port.add_vtep("rr.vxlan", E7)
    assert port.vteps("rr.vxlan") == {E6, E7}
    port.del_vtep("rr.vxlan", E7)
    assert port.vteps("rr.vxlan") == {E6}
    port.ensure_vxlan(LINK)  # to the IPv4 underlay: recreated, entries gone
    assert port.vxlan("rr.vxlan") == LINK and port.vteps("rr.vxlan") == set()
    port.delete("rr.vxlan")
    assert port.link_stats("rr.vxlan") is None
