"""The eBPF tunnel: Geneve or VXLAN encapsulation in TC, as a TunnelDriver.

Pods' traffic to remote pod CIDRs is routed into an ARP-less device (`rr.tun`, an ifb);
`rr_tun_encap` on its egress wraps each packet for the remote node found in an LPM map
(rr_tun_routes for IPv4 destinations, rr_tun_routes6 for IPv6; the underlay is IPv4
for both) and sends it out of the underlay. `rr_tun_decap` on the underlay's ingress
unwraps what arrives on the protocol's UDP port, inner IPv4 or IPv6. The program is
compiled per node (its address, underlay ifindex and VTEP MAC are constants); the maps
are filled before the programs are attached, so a restarted agent never attaches an
empty map. The underlay filter uses a handle and priority of its own (TUN_HANDLE,
TUN_PRIO) and returns TC_ACT_UNSPEC for traffic that is not its own, so other filters
on the underlay keep working. A tunnel MTU below IPv6's 1280 is reported while peers
have IPv6 pod CIDRs.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from bpf.loader import EGRESS, INGRESS, SCHED_CLS, SRC_DIR, load_text
from controller.desired.routes import TunnelLayout, TunnelPeer, vtep_mac
from controller.kernel.links import LinkPort
from controller.kernel.tunnels import (
    GENEVE_PORT,
    OVERHEAD,
    VNI,
    VXLAN_PORT,
    ipv6_mtu_errors,
    tunnel_mtu,
)

TUN_PRIO = 2
TUN_HANDLE = 0x7272
STATS = ("encap_packets", "encap_bytes", "decap_packets", "decap_bytes", "miss", "errors")
PORTS = {"geneve": GENEVE_PORT, "vxlan": VXLAN_PORT}


def program_text(protocol: str, local: ipaddress.IPv4Address, ifindex: int, vni: int = VNI) -> str:
    """tunnel.c with this node's constants defined in front."""
    mac = vtep_mac(local).split(":")
    head = [
        f"#define RR_TUN_PORT {PORTS[protocol]}",
        f"#define RR_TUN_GENEVE {1 if protocol == 'geneve' else 0}",
        f"#define RR_TUN_VNI {vni}",
        f"#define RR_TUN_LOCAL {int.from_bytes(local.packed, 'little')}u",
        f"#define RR_TUN_IFINDEX {ifindex}",
        *(f"#define RR_TUN_MAC{i} 0x{b}" for i, b in enumerate(mac)),
    ]
    return "\n".join(head) + "\n" + (SRC_DIR / "tunnel.c").read_text()


Entries = dict[tuple[int, bytes], tuple[bytes, bytes]]  # (prefixlen, net) -> (remote, mac)


def route_entries(peers: Sequence[TunnelPeer], version: int) -> Entries:
    """The encapsulation entries of one family's LPM map: every peer's pod CIDRs."""
    want: Entries = {}
    for p in peers:
        mac = bytes.fromhex(p.mac.replace(":", ""))
        for c in p.cidrs if version == 4 else p.cidrs6:
            want[(c.prefixlen, c.network_address.packed)] = (p.remote.packed, mac)
    return want


def _key_bytes(addr: Any) -> bytes:
    """A map key's address as packed bytes (u32 in host order, or a byte array)."""
    if isinstance(addr, int):
        return addr.to_bytes(4, "little")
    return bytes(addr)


def _key(table: Any, prefixlen: int, net: bytes) -> Any:
    if len(net) == 4:
        return table.Key(prefixlen, int.from_bytes(net, "little"))
    return table.Key(prefixlen, (ctypes.c_ubyte * len(net))(*net))


def sync_table(table: Any, want: Entries) -> None:
    """Make one LPM map hold exactly want; unchanged entries are not rewritten."""
    have: Entries = {
        (int(k.prefixlen), _key_bytes(k.addr)): (int(v.remote).to_bytes(4, "little"),
                                                bytes(v.mac))
        for k, v in table.items()
    }
    for key in set(have) - set(want):
        with suppress(KeyError):
            del table[_key(table, *key)]
    for key, (remote, mac) in want.items():
        if have.get(key) == (remote, mac):
            continue
        table[_key(table, *key)] = table.Leaf(int.from_bytes(remote, "little"),
                                              (ctypes.c_ubyte * 6)(*mac), 0)


def _ipr(netns: str | None) -> Any:
    from pyroute2 import IPRoute

    return IPRoute(netns=netns, flags=0) if netns else IPRoute()


def attach_one(ifindex: int, parent: str, fd: int, name: str, netns: str | None) -> None:
    """Attach (or replace in place) one direct-action filter with our handle/priority."""
    from pyroute2 import NetlinkError

    with _ipr(netns) as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
        ipr.tc("replace-filter", "bpf", ifindex, TUN_HANDLE, fd=fd, name=name,
               parent=parent, classid=1, direct_action=True, prio=TUN_PRIO)


def detach_one(ifindex: int, parent: str, netns: str | None) -> None:
    """Remove our filter only (the clsact qdisc may carry other owners' filters)."""
    from pyroute2 import NetlinkError

    with _ipr(netns) as ipr, suppress(NetlinkError):
        ipr.tc("del-filter", "bpf", ifindex, TUN_HANDLE, parent=parent, prio=TUN_PRIO)


class EbpfTunnel:
    """TunnelDriver: Geneve (UDP 6081) or VXLAN (UDP 8472) encapsulated in TC."""

    def __init__(self, links: LinkPort, protocol: str = "geneve", netns: str | None = None,
                 dev: str = "rr.tun", vni: int = VNI) -> None:
        if protocol not in PORTS:
            raise ValueError(f"tunnel protocol must be geneve or vxlan, got {protocol!r}")
        self.links, self.protocol, self.netns, self.dev, self.vni = links, protocol, netns, dev, vni
        self.layout = TunnelLayout(dev, via_inner=False, ipv6=True)
        self._mod: Any = None
        self._for: tuple[ipaddress.IPv4Address, int] | None = None
        self._underlay: int | None = None
        self._mtu: int | None = None

    def _compile(self, local: ipaddress.IPv4Address, ifindex: int) -> None:
        if self._mod is not None:
            self._mod.cleanup()
            self._mod = None
        funcs = {"rr_tun_encap": (SCHED_CLS, -1), "rr_tun_decap": (SCHED_CLS, -1)}
        mod, fds = load_text(program_text(self.protocol, local, ifindex, self.vni), funcs)
        self._mod, self._fds = mod, fds

    def _sync_map(self, peers: Sequence[TunnelPeer]) -> None:
        sync_table(self._mod[b"rr_tun_routes"], route_entries(peers, 4))
        sync_table(self._mod[b"rr_tun_routes6"], route_entries(peers, 6))

    def sync(self, local: ipaddress.IPv4Address, peers: Sequence[TunnelPeer]) -> list[str]:
        under = self.links.underlay(local)
        if under is None:
            return [f"tunnel {self.dev}: no device holds the node address {local}"]
        try:
            mtu = tunnel_mtu(under.mtu, OVERHEAD)
            dev_index = self.links.ensure_plain(self.dev, mtu)
            fresh = self._for != (local, under.index)
            if fresh:
                self._compile(local, under.index)
            self._sync_map(peers)
            problems = ipv6_mtu_errors(self.dev, mtu, peers)
            if fresh:
                attach_one(dev_index, EGRESS, self._fds["rr_tun_encap"], "rr_tun_encap",
                           self.netns)
                attach_one(under.index, INGRESS, self._fds["rr_tun_decap"], "rr_tun_decap",
                           self.netns)
                if self._underlay is not None and self._underlay != under.index:
                    detach_one(self._underlay, INGRESS, self.netns)
                self._for, self._underlay = (local, under.index), under.index
            self._mtu = mtu
        except Exception as e:
            return [f"tunnel {self.dev} ({self.protocol}): {e}"]
        return problems

    def mtu(self) -> int | None:
        return self._mtu

    def stats(self) -> dict[str, int]:
        """Counters summed over CPUs (empty before the first sync)."""
        if self._mod is None:
            return {}
        table = self._mod[b"rr_tun_stats"]
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(STATS)}

    def teardown(self, local: ipaddress.IPv4Address | None) -> None:
        under = self.links.underlay(local) if local is not None else None
        for idx in {i for i in (self._underlay, under.index if under else None) if i}:
            detach_one(idx, INGRESS, self.netns)
        self.links.delete(self.dev)
        self._for = self._underlay = self._mtu = None

    def close(self) -> None:
        """Drop the compiled module; attached programs keep running."""
        if self._mod is not None:
            self._mod.cleanup()
            self._mod = None
