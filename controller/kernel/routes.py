"""Kernel routes owned by rackroute: a port, its pyroute2 adapter, and an in-memory fake.

Ownership is explicit: every route rackroute installs carries its own routing protocol
number (RTPROT_RACKROUTE), and only routes with that number are ever listed, replaced or
deleted — routes from anything else (the kernel, FRR, an operator) are never touched.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bgp.types import IPAddress, IPNetwork

log = logging.getLogger("rackroute.routes")

RTPROT_RACKROUTE = 201  # rt_protos: unassigned; shown as "proto 201" by `ip route`
MAIN_TABLE = 254
RTNH_F_ONLINK = 4


@dataclass(frozen=True, order=True)
class KernelRoute:
    """A route to `dst` through one or more gateways (ECMP) or out of a device.

    `onlink`: the single gateway sits behind `dev` without a connected subnet (a tunnel
    endpoint's inner address), so the kernel takes it on trust (RTNH_F_ONLINK).
    An IPv4 route may have IPv6 gateways (RFC 8950: IPv4 learned over an IPv6 session;
    the kernel's RTA_VIA, `via inet6`); an IPv6 route's gateways are IPv6.
    """

    dst: IPNetwork
    gateways: tuple[IPAddress, ...] = ()
    dev: str | None = None
    table: int = MAIN_TABLE
    onlink: bool = False


class RoutePort(Protocol):
    def list(self) -> set[KernelRoute]:
        """Routes carrying rackroute's protocol number."""
        ...

    def replace(self, route: KernelRoute) -> None: ...

    def delete(self, route: KernelRoute) -> None: ...


class FakeRoutes:
    """In-memory RoutePort; `foreign` holds routes of other owners (never touched)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[IPNetwork, int], KernelRoute] = {}
        self.foreign: set[KernelRoute] = set()

    def list(self) -> set[KernelRoute]:
        return set(self.routes.values())

    def replace(self, route: KernelRoute) -> None:
        if not route.gateways and route.dev is None:
            raise ValueError(f"route {route.dst}: needs a gateway or a device")
        if route.onlink and (len(route.gateways) != 1 or route.dev is None):
            raise ValueError(f"route {route.dst}: onlink needs one gateway and a device")
        if route.dst.version == 6 and any(g.version == 4 for g in route.gateways):
            raise ValueError(f"route {route.dst}: an IPv6 route cannot go through an IPv4 "
                             "gateway")
        self.routes[(route.dst, route.table)] = route

    def delete(self, route: KernelRoute) -> None:
        self.routes.pop((route.dst, route.table), None)


class NetlinkRoutes:
    """RoutePort on the kernel through pyroute2 (in this process's namespace, or `netns`)."""

    def __init__(self, netns: str | None = None, proto: int = RTPROT_RACKROUTE) -> None:
        from pyroute2 import IPRoute

        self.proto = proto
        self.ipr: Any = IPRoute(netns=netns, flags=0) if netns else IPRoute()

    def _ifindex(self, dev: str) -> int:
        idx = self.ipr.link_lookup(ifname=dev)
        if not idx:
            raise ValueError(f"no such device {dev!r}")
        return int(idx[0])

    def _ifname(self, index: int | None) -> str | None:
        if index is None:
            return None
        links = self.ipr.get_links(index)
        return str(links[0].get_attr("IFLA_IFNAME")) if links else None

    def list(self) -> set[KernelRoute]:
        out: set[KernelRoute] = set()
        for family in (2, 10):
            for r in self.ipr.route("dump", family=family, proto=self.proto):
                dst = r.get_attr("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                net = ipaddress.ip_network(f"{dst}/{r['dst_len']}")
                gw = _gateway(r)
                gws = [gw] if gw else [_gateway(m) for m in (r.get_attr("RTA_MULTIPATH") or [])]
                table = r.get_attr("RTA_TABLE") or r["table"]
                onlink = bool(r["flags"] & RTNH_F_ONLINK)
                dev = None if gws and not onlink else self._ifname(r.get_attr("RTA_OIF"))
                out.add(
                    KernelRoute(
                        net,
                        tuple(sorted((ipaddress.ip_address(g) for g in gws if g),
                                     key=lambda a: (a.version, int(a)))),
                        dev,
                        int(table),
                        onlink,
                    )
                )
        return out

    def replace(self, route: KernelRoute) -> None:
        kw: dict[str, Any] = {"dst": str(route.dst), "proto": self.proto, "table": route.table}
        if route.dst.version == 6 and any(g.version == 4 for g in route.gateways):
            raise ValueError(f"route {route.dst}: an IPv6 route cannot go through an IPv4 "
                             "gateway")
        hops = [_hop(route.dst, g) for g in route.gateways]
        if len(hops) > 1:
            kw["multipath"] = hops
        elif hops:
            kw.update(hops[0])
        if route.dev:
            kw["oif"] = self._ifindex(route.dev)
        if route.onlink:
            kw["flags"] = RTNH_F_ONLINK
        self.ipr.route("replace", **kw)

    def delete(self, route: KernelRoute) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self.ipr.route("del", dst=str(route.dst), proto=self.proto, table=route.table)
        except NetlinkError as e:
            if e.code != 3:  # ESRCH: already gone
                raise

    def close(self) -> None:
        self.ipr.close()


def _hop(dst: IPNetwork, gw: IPAddress) -> dict[str, Any]:
    """The netlink attributes of one gateway: RTA_GATEWAY of the route's family, or
    RTA_VIA for an IPv6 gateway of an IPv4 route."""
    if gw.version == dst.version:
        return {"gateway": str(gw)}
    return {"via": {"family": 10, "addr": str(gw)}}


def _gateway(msg: Any) -> str | None:
    """A route's (or one next hop's) gateway, RTA_GATEWAY or RTA_VIA."""
    gw = msg.get_attr("RTA_GATEWAY")
    if gw:
        return str(gw)
    via = msg.get_attr("RTA_VIA")
    return str(via["addr"]) if via and via.get("addr") else None


def sync_routes(port: RoutePort, desired: set[KernelRoute],
                others: Callable[[KernelRoute], bool] | None = None,
                ) -> tuple[int, int, list[str]]:
    """Make rackroute's routes equal to `desired`; returns (replaced, deleted, errors).

    `others`: routes of rackroute's protocol that another part owns (the CNI plugin's
    routes to its pods), left alone."""
    actual = {r for r in port.list() if others is None or not others(r)}
    by_key = {(r.dst, r.table): r for r in actual}
    want = {(r.dst, r.table): r for r in desired}
    errors: list[str] = []
    replaced = deleted = 0
    for key, r in sorted(want.items(), key=lambda kv: str(kv[0])):
        if by_key.get(key) != r:
            try:
                port.replace(r)
                replaced += 1
                log.info(
                    "event=route_replace dst=%s via=%s dev=%s",
                    r.dst,
                    ",".join(map(str, r.gateways)) or "-",
                    r.dev or "-",
                )
            except Exception as e:  # one bad route never stops the others
                errors.append(f"route {r.dst}: {e}")
    for key, r in sorted(by_key.items(), key=lambda kv: str(kv[0])):
        if key not in want:
            try:
                port.delete(r)
                deleted += 1
                log.info("event=route_delete dst=%s", r.dst)
            except Exception as e:
                errors.append(f"route {r.dst}: {e}")
    return replaced, deleted, errors
