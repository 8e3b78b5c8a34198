"""Tunnel links owned by rackroute: a port, its pyroute2 adapter, and an in-memory fake.

Owned links carry the name prefix `rr.`; nothing else is created, changed or deleted.
A VXLAN link is described by `VxlanLink` (VNI, UDP port, local underlay address of
either family, MAC, MTU; always without learning); its per-remote-node entries by `Vtep`
(one FDB entry: VTEP MAC → remote underlay address, and one permanent neighbor entry:
inner VTEP address → VTEP MAC when the node has IPv4 pods, plus one for its IPv6
link-local next hop when it has IPv6 pods). The eBPF tunnel needs only a plain,
ARP-less device to route into (`ensure_plain`, an ifb). The port also reports the
underlay device holding an address and this node's connected subnets (for direct routes
on a shared segment).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Protocol

from bgp.types import IPAddress, IPNetwork

OWNED_PREFIX = "rr."
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_INET = 2
AF_INET6 = 10
IFF_UP = 0x1
ESRCH, ENOENT, ENODEV = 3, 2, 19
LINK_STATS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
              "rx_dropped", "tx_dropped")


@dataclass(frozen=True)
class VxlanLink:
    name: str
    vni: int
    port: int
    local: IPAddress  # the underlay's family: IPv4 or IPv6
    mac: str
    mtu: int


@dataclass(frozen=True)
class Vtep:
    """A remote tunnel endpoint on a VXLAN link (FDB + neighbor entries)."""

    mac: str
    remote: IPAddress  # of the link's local address's family
    inner: ipaddress.IPv4Address | None  # IPv4 next hop (None: no IPv4 pods)
    inner6: ipaddress.IPv6Address | None = None  # IPv6 next hop (None: no IPv6 pods)


@dataclass(frozen=True)
class Underlay:
    name: str
    index: int
    mtu: int


def _owned(name: str) -> None:
    if not name.startswith(OWNED_PREFIX):
        raise ValueError(f"link {name!r}: rackroute only manages links named {OWNED_PREFIX}*")


class LinkPort(Protocol):
    def underlay(self, addr: IPAddress) -> Underlay | None:
        """The device that holds addr (the node's InternalIP, either family), or None."""
        ...

    def connected(self) -> set[IPNetwork]:
        """Subnets directly connected through devices rackroute does not own."""
        ...

    def links(self) -> set[str]:
        """Names of the owned (rr.*) links."""
        ...

    def vxlan(self, name: str) -> VxlanLink | None: ...

    def ensure_vxlan(self, link: VxlanLink) -> None:
        """Create the link, or make an existing one equal (recreated if VNI, port or
        local differ, or if over IPv6 it refuses packets without a UDP checksum); up
        afterwards."""
        ...

    def ensure_plain(self, name: str, mtu: int) -> int:
        """An ARP-less device to route into (up, MTU set); returns its ifindex."""
        ...

    def delete(self, name: str) -> None:
        """Remove an owned link (idempotent)."""
        ...

    def link_stats(self, name: str) -> dict[str, int] | None:
        """An owned link's counters (rx_/tx_ packets, bytes, errors, dropped), None if
        there is no such link."""
        ...

    def vteps(self, name: str) -> set[Vtep]: ...

    def add_vtep(self, name: str, vtep: Vtep) -> None: ...

    def del_vtep(self, name: str, vtep: Vtep) -> None: ...


@dataclass
class FakeLinks:
    """In-memory LinkPort; `foreign` links and `underlays` are set up by tests."""

    underlays: dict[IPAddress, Underlay] = field(default_factory=dict)
    subnets: set[IPNetwork] = field(default_factory=set)
    vx: dict[str, VxlanLink] = field(default_factory=dict)
    plain: dict[str, int] = field(default_factory=dict)
    entries: dict[str, set[Vtep]] = field(default_factory=dict)
    foreign: set[str] = field(default_factory=set)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # set by tests
    recreated: int = 0

    def underlay(self, addr: IPAddress) -> Underlay | None:
        return self.underlays.get(addr)

    def connected(self) -> set[IPNetwork]:
        return set(self.subnets)

    def links(self) -> set[str]:
        return set(self.vx) | set(self.plain)

    def vxlan(self, name: str) -> VxlanLink | None:
        return self.vx.get(name)

    def ensure_vxlan(self, link: VxlanLink) -> None:
        _owned(link.name)
        old = self.vx.get(link.name)
        if old is not None and (old.vni, old.port, old.local) != (link.vni, link.port, link.local):
            self.recreated += 1
            self.entries.pop(link.name, None)
        self.plain.pop(link.name, None)
        self.vx[link.name] = link
        self.entries.setdefault(link.name, set())

    def ensure_plain(self, name: str, mtu: int) -> int:
        _owned(name)
        self.vx.pop(name, None)
        self.plain[name] = mtu
        return 1000 + sorted(self.plain).index(name)

    def delete(self, name: str) -> None:
        _owned(name)
        self.vx.pop(name, None)
        self.plain.pop(name, None)
        self.entries.pop(name, None)

    def link_stats(self, name: str) -> dict[str, int] | None:
        if name not in self.vx and name not in self.plain:
            return None
        return dict(self.counters.get(name, dict.fromkeys(LINK_STATS, 0)))

    def vteps(self, name: str) -> set[Vtep]:
        return set(self.entries.get(name, set()))

    def add_vtep(self, name: str, vtep: Vtep) -> None:
        if name not in self.vx:
            raise ValueError(f"no such vxlan link {name!r}")
        self.entries[name] = {v for v in self.entries[name] if v.mac != vtep.mac} | {vtep}

    def del_vtep(self, name: str, vtep: Vtep) -> None:
        self.entries.get(name, set()).discard(vtep)


class NetlinkLinks:
    """LinkPort on the kernel through pyroute2 (this namespace, or `netns`)."""

    def __init__(self, netns: str | None = None) -> None:
        from pyroute2 import IPRoute

        self.ipr: Any = IPRoute(netns=netns, flags=0) if netns else IPRoute()

    def _index(self, name: str) -> int | None:
        idx = self.ipr.link_lookup(ifname=name)
        return int(idx[0]) if idx else None

    def _link(self, name: str) -> Any:
        idx = self._index(name)
        return self.ipr.get_links(idx)[0] if idx is not None else None

    def underlay(self, addr: IPAddress) -> Underlay | None:
        family = AF_INET if addr.version == 4 else AF_INET6
        for a in self.ipr.get_addr(family=family):
            have = a.get_attr("IFA_ADDRESS")
            if have is not None and ipaddress.ip_address(have) == addr:
                link = self.ipr.get_links(a["index"])[0]
                return Underlay(str(link.get_attr("IFLA_IFNAME")), int(a["index"]),
                                int(link.get_attr("IFLA_MTU")))
        return None

    def connected(self) -> set[IPNetwork]:
        owned = {self._index(n) for n in self.links()}
        out: set[IPNetwork] = set()
        for a in self.ipr.get_addr():
            if a["index"] in owned or a["scope"] != 0:
                continue
            addr = a.get_attr("IFA_ADDRESS")
            net = ipaddress.ip_network(f"{addr}/{a['prefixlen']}", strict=False)
            if net.prefixlen < net.max_prefixlen:
                out.add(net)
        return out

    def links(self) -> set[str]:
        names = (str(lk.get_attr("IFLA_IFNAME")) for lk in self.ipr.get_links())
        return {n for n in names if n.startswith(OWNED_PREFIX)}

    def vxlan(self, name: str) -> VxlanLink | None:
        link = self._link(name)
        if link is None:
            return None
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return None
        d = info.get_attr("IFLA_INFO_DATA")
        local = d.get_attr("IFLA_VXLAN_LOCAL") or d.get_attr("IFLA_VXLAN_LOCAL6")
        return VxlanLink(
            name,
            int(d.get_attr("IFLA_VXLAN_ID")),
            int(d.get_attr("IFLA_VXLAN_PORT")),
            ipaddress.ip_address(local or "0.0.0.0"),
            str(link.get_attr("IFLA_ADDRESS")),
            int(link.get_attr("IFLA_MTU")),
        )

    def _kind(self, name: str) -> str | None:
        link = self._link(name)
        info = link.get_attr("IFLA_LINKINFO") if link is not None else None
        return str(info.get_attr("IFLA_INFO_KIND")) if info is not None else None

    def _zero_csum6_rx(self, name: str) -> bool:
        """Does the VXLAN device take IPv6 packets without a UDP checksum?"""
        info = self._link(name).get_attr("IFLA_LINKINFO")
        return bool(info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VXLAN_UDP_ZERO_CSUM6_RX"))

    def ensure_vxlan(self, link: VxlanLink) -> None:
        _owned(link.name)
        cur = self.vxlan(link.name)
        if self._index(link.name) is not None and (
            cur is None or (cur.vni, cur.port, cur.local) != (link.vni, link.port, link.local)
            or (link.local.version == 6 and not self._zero_csum6_rx(link.name))
        ):
            self.delete(link.name)
            cur = None
        if cur is None:
            # over IPv6 the device takes packets without a UDP checksum (the eBPF tunnel's)
            local: dict[str, Any] = (
                {"vxlan_local": str(link.local)} if link.local.version == 4 else
                {"vxlan_local6": str(link.local), "vxlan_udp_zero_csum6_rx": 1})
            self.ipr.link("add", ifname=link.name, kind="vxlan", vxlan_id=link.vni,
                          vxlan_port=link.port, vxlan_learning=0, address=link.mac,
                          mtu=link.mtu, **local)
        idx = self._index(link.name)
        # set only what differs: a MAC "change" (even to the same value) flushes the
        # device's neighbor entries, permanent ones included
        kw: dict[str, Any] = {}
        if cur is None or cur.mac != link.mac:
            kw["address"] = link.mac
        if cur is None or cur.mtu != link.mtu:
            kw["mtu"] = link.mtu
        if not self.ipr.get_links(idx)[0]["flags"] & IFF_UP:
            kw["state"] = "up"
        if kw:
            self.ipr.link("set", index=idx, **kw)

    def ensure_plain(self, name: str, mtu: int) -> int:
        _owned(name)
        if self._index(name) is not None and self._kind(name) != "ifb":
            self.delete(name)
        if self._index(name) is None:
            self.ipr.link("add", ifname=name, kind="ifb")
        idx = self._index(name)
        assert idx is not None
        self.ipr.link("set", index=idx, mtu=mtu, state="up")
        return idx

    def delete(self, name: str) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        _owned(name)
        idx = self._index(name)
        if idx is None:
            return
        try:
            self.ipr.link("del", index=idx)
        except NetlinkError as e:
            if e.code not in (ENODEV, ENOENT):
                raise

    def link_stats(self, name: str) -> dict[str, int] | None:
        link = self._link(name)
        if link is None:
            return None
        st = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
        return {k: int(st.get(k, 0)) for k in LINK_STATS} if st is not None else None

    def vteps(self, name: str) -> set[Vtep]:
        idx = self._index(name)
        if idx is None:
            return set()
        macs: dict[str, IPAddress] = {}
        for f in self.ipr.fdb("dump", ifindex=idx):
            mac, dst = f.get_attr("NDA_LLADDR"), f.get_attr("NDA_DST")
            if f["ifindex"] != idx or not mac or not dst:
                continue
            if mac != "00:00:00:00:00:00":
                macs[str(mac)] = ipaddress.ip_address(dst)
        inner: dict[int, dict[str, IPAddress]] = {AF_INET: {}, AF_INET6: {}}
        for family, found in inner.items():
            for n in self.ipr.neigh("dump", ifindex=idx, family=family):
                mac, dst = n.get_attr("NDA_LLADDR"), n.get_attr("NDA_DST")
                if n["ifindex"] == idx and mac in macs and n["state"] & NUD_PERMANENT:
                    found[str(mac)] = ipaddress.ip_address(dst)
        out: set[Vtep] = set()
        for mac, remote in macs.items():
            v4, v6 = inner[AF_INET].get(mac), inner[AF_INET6].get(mac)
            assert v4 is None or isinstance(v4, ipaddress.IPv4Address)
            assert v6 is None or isinstance(v6, ipaddress.IPv6Address)
            out.add(Vtep(mac, remote, v4, v6))
        return out

    def add_vtep(self, name: str, vtep: Vtep) -> None:
        idx = self._index(name)
        if idx is None:
            raise ValueError(f"no such link {name!r}")
        self.ipr.fdb("replace", ifindex=idx, lladdr=vtep.mac, dst=str(vtep.remote),
                     flags=NTF_SELF, state=NUD_PERMANENT)
        if vtep.inner is not None:
            self.ipr.neigh("replace", dst=str(vtep.inner), lladdr=vtep.mac, ifindex=idx,
                           state=NUD_PERMANENT)
        if vtep.inner6 is not None:
            self.ipr.neigh("replace", dst=str(vtep.inner6), lladdr=vtep.mac, ifindex=idx,
                           state=NUD_PERMANENT, family=AF_INET6)

    def del_vtep(self, name: str, vtep: Vtep) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        idx = self._index(name)
        if idx is None:
            return
        for inner, family in ((vtep.inner, AF_INET), (vtep.inner6, AF_INET6)):
            if inner is None:
                continue
            try:
                self.ipr.neigh("del", dst=str(inner), lladdr=vtep.mac, ifindex=idx,
                               family=family)
            except NetlinkError as e:
                if e.code not in (ESRCH, ENOENT):
                    raise
        try:
            self.ipr.fdb("del", ifindex=idx, lladdr=vtep.mac, dst=str(vtep.remote),
                         flags=NTF_SELF, state=NUD_PERMANENT)
        except NetlinkError as e:
            if e.code not in (ESRCH, ENOENT):
                raise

    def close(self) -> None:
        self.ipr.close()
