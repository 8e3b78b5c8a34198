"""The routed veth of one pod, built and checked with pyroute2 (no bridge).

Host side `rr<11 hex>` (a hash of containerID/ifname) stays in the plugin's own
namespace; the pod side is created directly inside CNI_NETNS under CNI_IFNAME. The pod
gets its address as a /32 (/128) and a default route through a link-local gateway,
169.254.1.1 (fe80::1), with a permanent neighbour entry for it pointing at the host
veth's MAC, so nothing depends on the host's own routes to answer ARP. The host side
answers for the gateway anyway (proxy_arp; fe80::1 on the host veth for IPv6) and gets
the route back to the pod, `<ip>/32 dev <host veth> proto 201`.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.kernel.routes import RTPROT_RACKROUTE, KernelRoute

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

GATEWAY4 = ipaddress.IPv4Address("169.254.1.1")
GATEWAY6 = ipaddress.IPv6Address("fe80::1")
HOST_PREFIX = "rr"
RT_SCOPE_LINK = 253
MAIN_TABLE = 254
RTNH_F_ONLINK = 4
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
IFF_UP = 0x1
AF = {4: 2, 6: 10}


class SetupError(Exception):
    """A netlink step failed; the message says which one."""


class CheckFailed(Exception):
    """The pod's networking differs from what ADD built."""


class NetnsGone(CheckFailed):
    """CNI_NETNS does not exist (any more)."""


def host_ifname(container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return HOST_PREFIX + digest[:11]


def host_veth_present(container_id: str, ifname: str) -> bool:
    """Whether the attachment's host veth exists in this network namespace (the pod's
    netns taking its end away removes both)."""
    import socket

    try:
        socket.if_nametoindex(host_ifname(container_id, ifname))
    except OSError:
        return False
    return True


def is_host_ifname(name: str) -> bool:
    """Whether name is one host_ifname makes (`rr` and 11 hex digits)."""
    tail = name[len(HOST_PREFIX):]
    return (name.startswith(HOST_PREFIX) and len(tail) == 11
            and all(c in "0123456789abcdef" for c in tail))


def is_pod_route(route: KernelRoute) -> bool:
    """A route ADD made: to a pod's address, straight out of its host veth. The routing
    reconciler shares the protocol number and must leave these alone."""
    return (not route.gateways and route.dev is not None and is_host_ifname(route.dev)
            and route.dst.prefixlen == route.dst.max_prefixlen)


def gateway(version: int) -> IPAddress:
    return GATEWAY4 if version == 4 else GATEWAY6


def plen(addr: IPAddress) -> int:
    return 32 if addr.version == 4 else 128


@dataclass(frozen=True)
class Veth:
    host: str
    host_mac: str
    pod: str
    pod_mac: str
    pod_index: int


def _ipr(netns: str | None = None) -> Any:
    from pyroute2 import IPRoute

    return IPRoute(netns=netns, flags=0) if netns else IPRoute()


def _index(ipr: Any, name: str) -> int | None:
    idx = ipr.link_lookup(ifname=name)
    return int(idx[0]) if idx else None


def _mac(ipr: Any, index: int) -> str:
    return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _step(what: str, fn: Any, *args: Any, **kw: Any) -> Any:
    from pyroute2 import NetlinkError

    try:
        return fn(*args, **kw)
    except (NetlinkError, OSError) as e:
        raise SetupError(f"{what}: {e}") from e


def netns_exists(path: str) -> bool:
    return Path(path).exists()


def delete_host_veth(name: str) -> bool:
    """Remove a host veth (its peer goes with it); False if it was not there."""
    from pyroute2 import NetlinkError

    with _ipr() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return False
        try:
            ipr.link("del", index=idx)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise
            return False
    return True


def create(container_id: str, ifname: str, netns: str, mtu: int,
           addrs: Sequence[IPAddress]) -> Veth:
    """Build the veth pair, addresses, routes and neighbours; SetupError on failure
    (the caller removes the host veth to undo)."""
    host = host_ifname(container_id, ifname)
    delete_host_veth(host)  # a leftover of a crashed ADD for this very container
    nsfd = os.open(netns, os.O_RDONLY)
    try:
        with _ipr() as ipr:
            from pyroute2 import NetlinkError

            try:
                ipr.link("add", ifname=host, kind="veth", mtu=mtu,
                         peer={"ifname": ifname, "net_ns_fd": nsfd})
            except NetlinkError as e:
                if e.code == errno.EEXIST:
                    raise SetupError(f"interface {ifname} already exists in {netns}") from e
                raise SetupError(f"creating veth {host}/{ifname}: {e}") from e
            hidx = _index(ipr, host)
            if hidx is None:
                raise SetupError(f"veth {host} vanished after creation")
            host_mac = _mac(ipr, hidx)
            if any(a.version == 4 for a in addrs):
                _step("proxy_arp", _sysctl, f"/proc/sys/net/ipv4/conf/{host}/proxy_arp", "1")
            if any(a.version == 6 for a in addrs):
                _step("proxy_ndp", _sysctl, f"/proc/sys/net/ipv6/conf/{host}/proxy_ndp", "1")
                _step(f"address {GATEWAY6} on {host}", ipr.addr, "add", index=hidx,
                      address=str(GATEWAY6), prefixlen=64, flags=IFA_F_NODAD)
            _step(f"bringing {host} up", ipr.link, "set", index=hidx, state="up")
        with _ipr(netns) as pr:
            pidx = _index(pr, ifname)
            if pidx is None:
                raise SetupError(f"{ifname} not found in {netns} after creation")
            pod_mac = _mac(pr, pidx)
            _step(f"mtu/up on {ifname}", pr.link, "set", index=pidx, mtu=mtu, state="up")
            for a in addrs:
                gw = gateway(a.version)
                _step(f"address {a}/{plen(a)} on {ifname}", pr.addr, "add", index=pidx,
                      address=str(a), prefixlen=plen(a),
                      **({"flags": IFA_F_NODAD} if a.version == 6 else {}))
                _step(f"neighbour {gw} on {ifname}", pr.neigh, "replace", dst=str(gw),
                      lladdr=host_mac, ifindex=pidx, state=NUD_PERMANENT)
                extra = {"flags": RTNH_F_ONLINK} if a.version == 4 else {}
                _step(f"default route via {gw} on {ifname}", pr.route, "replace",
                      dst="0.0.0.0/0" if a.version == 4 else "::/0", gateway=str(gw),
                      oif=pidx, **extra)
        with _ipr() as ipr:
            for a in addrs:
                _step(f"host route {a}/{plen(a)} dev {host}", ipr.route, "replace",
                      dst=f"{a}/{plen(a)}", oif=hidx, proto=RTPROT_RACKROUTE,
                      scope=RT_SCOPE_LINK, table=MAIN_TABLE)
    finally:
        os.close(nsfd)
    return Veth(host, host_mac, ifname, pod_mac, pidx)


def _routes(ipr: Any, version: int, dst: str, dst_len: int) -> list[Any]:
    out = []
    for r in ipr.get_routes(family=AF[version], table=MAIN_TABLE):
        rdst = r.get_attr("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
        if r["dst_len"] == dst_len and ipaddress.ip_address(rdst) == ipaddress.ip_address(dst):
            out.append(r)
    return out


def check_host(host: str, addrs: Sequence[IPAddress], host_mac: str | None) -> None:
    """The host side: veth up, MAC as reported, proxy_arp, the /32 routes (proto 201)."""
    with _ipr() as ipr:
        hidx = _index(ipr, host)
        if hidx is None:
            raise CheckFailed(f"host veth {host} is missing")
        link = ipr.get_links(hidx)[0]
        if not link["flags"] & IFF_UP:
            raise CheckFailed(f"host veth {host} is down")
        if host_mac and str(link.get_attr("IFLA_ADDRESS")).lower() != host_mac.lower():
            raise CheckFailed(f"host veth {host} has MAC {link.get_attr('IFLA_ADDRESS')}, "
                              f"expected {host_mac}")
        for a in addrs:
            routes = [r for r in _routes(ipr, a.version, str(a), plen(a))
                      if r.get_attr("RTA_OIF") == hidx and r["proto"] == RTPROT_RACKROUTE]
            if not routes:
                raise CheckFailed(f"host route {a}/{plen(a)} dev {host} proto "
                                  f"{RTPROT_RACKROUTE} is missing")
    if any(a.version == 4 for a in addrs):
        with open(f"/proc/sys/net/ipv4/conf/{host}/proxy_arp") as f:
            if f.read().strip() != "1":
                raise CheckFailed(f"proxy_arp is off on {host}")


def check_pod(netns: str, ifname: str, mtu: int, addrs: Sequence[IPAddress],
              pod_mac: str | None,
              routes: Sequence[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                     IPAddress | None]]) -> None:
    """The pod side: interface up with MTU and MAC, each address, each route."""
    if not netns_exists(netns):
        raise NetnsGone(f"network namespace {netns} does not exist")
    with _ipr(netns) as pr:
        pidx = _index(pr, ifname)
        if pidx is None:
            raise CheckFailed(f"interface {ifname} is missing in {netns}")
        link = pr.get_links(pidx)[0]
        if not link["flags"] & IFF_UP:
            raise CheckFailed(f"{ifname} in {netns} is down")
        if link.get_attr("IFLA_MTU") != mtu:
            raise CheckFailed(f"{ifname} has MTU {link.get_attr('IFLA_MTU')}, expected {mtu}")
        if pod_mac and str(link.get_attr("IFLA_ADDRESS")).lower() != pod_mac.lower():
            raise CheckFailed(f"{ifname} has MAC {link.get_attr('IFLA_ADDRESS')}, "
                              f"expected {pod_mac}")
        have = {(ipaddress.ip_address(x.get_attr("IFA_ADDRESS")), int(x["prefixlen"]))
                for x in pr.get_addr(index=pidx)}
        for a in addrs:
            if (a, plen(a)) not in have:
                raise CheckFailed(f"address {a}/{plen(a)} is missing on {ifname}")
        for dst, gw in routes:
            found = [r for r in _routes(pr, dst.version, str(dst.network_address),
                                        dst.prefixlen)
                     if r.get_attr("RTA_OIF") == pidx and (
                         gw is None or (r.get_attr("RTA_GATEWAY") is not None and
                                        ipaddress.ip_address(r.get_attr("RTA_GATEWAY")) == gw))]
            if not found:
                via = f" via {gw}" if gw is not None else ""
                raise CheckFailed(f"route {dst}{via} dev {ifname} is missing in {netns}")
