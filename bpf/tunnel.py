"""The eBPF tunnel: Geneve or VXLAN encapsulation in TC, as a TunnelDriver.

Pods' traffic to remote pod CIDRs is routed into an ARP-less device (`rr.tun`, an ifb);
`rr_tun_encap` on its egress wraps each packet for the remote node found in an LPM map
(rr_tun_routes for IPv4 destinations, rr_tun_routes6 for IPv6; the underlay is the node
address's family, IPv4 or IPv6, for both) and sends it out of the underlay.
`rr_tun_decap` on the underlay's ingress unwraps what arrives on the protocol's UDP
port, inner IPv4 or IPv6. The program is compiled per node (its address, underlay
ifindex and VTEP MAC are constants), in a child process that hands back the program and
map fds (bpf.loader.load_text_isolated: bcc and LLVM never enter the agent); the maps
are filled before the programs are attached, so
a restarted agent never attaches an empty map. The underlay filter uses a handle and
priority of its own (TUN_HANDLE, TUN_PRIO) and returns TC_ACT_UNSPEC for traffic that
is not its own, so other filters on the underlay keep working. The tunnel MTU is the
underlay's less 50 bytes (70 over IPv6); one below IPv6's 1280 is reported while peers
have IPv6 pod CIDRs.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from bgp.types import IPAddress
from bpf import libbpf
from bpf import maps as m
from bpf.loader import EGRESS, INGRESS, SCHED_CLS, inlined, load_text_isolated
from bpf.mapstore import PinnedMap
from controller.desired.routes import TunnelLayout, TunnelPeer, vtep_mac
from controller.kernel.links import LinkPort
from controller.kernel.tunnels import (
    GENEVE_PORT,
    STATS,
    VNI,
    VXLAN_PORT,
    ipv6_mtu_errors,
    overhead,
    tunnel_mtu,
)

TUN_PRIO = 2
TUN_HANDLE = 0x7272
PORTS = {"geneve": GENEVE_PORT, "vxlan": VXLAN_PORT}


def program_text(protocol: str, local: IPAddress, ifindex: int, vni: int = VNI) -> str:
    """tunnel.c with this node's constants defined in front (the address as the program
    loads it from a packet: 32-bit words in the host's order, here little-endian)."""
    mac = vtep_mac(local).split(":")
    words = [int.from_bytes(local.packed[i:i + 4], "little") for i in range(0, 16, 4)]
    addr = (["#define RR_TUN_V6 1", *(f"#define RR_TUN_LOCAL6_{i} {w}u"
                                      for i, w in enumerate(words))]
            if local.version == 6 else [f"#define RR_TUN_LOCAL {words[0]}u"])
    head = [
        f"#define RR_TUN_PORT {PORTS[protocol]}",
        f"#define RR_TUN_GENEVE {1 if protocol == 'geneve' else 0}",
        f"#define RR_TUN_VNI {vni}",
        *addr,
        f"#define RR_TUN_IFINDEX {ifindex}",
        *(f"#define RR_TUN_MAC{i} 0x{b}" for i, b in enumerate(mac)),
    ]
    return "\n".join(head) + "\n" + inlined("tunnel.c")


Entries = dict[tuple[int, bytes], tuple[bytes, bytes]]  # (prefixlen, net) -> (remote, mac)
REMOTE = m.TunVal.mac.offset  # struct rr_tun_val: the remote address, then the MAC


def route_entries(peers: Sequence[TunnelPeer], version: int) -> Entries:
    """The encapsulation entries of one family's LPM map: every peer's pod CIDRs."""
    want: Entries = {}
    for p in peers:
        mac = bytes.fromhex(p.mac.replace(":", ""))
        remote = p.remote.packed.ljust(REMOTE, b"\0")
        for c in p.cidrs if version == 4 else p.cidrs6:
            want[(c.prefixlen, c.network_address.packed)] = (remote, mac)
    return want


def _key(prefixlen: int, net: bytes) -> bytes:
    """struct rr_tun_key / rr_tun_key6: u32 prefix length, the address as on the wire."""
    key = (m.TunKey if len(net) == 4 else m.TunKey6)(prefixlen)
    key.addr[:] = net
    return bytes(key)


def _value(remote: bytes, mac: bytes) -> bytes:
    """struct rr_tun_val."""
    v = m.TunVal()
    v.remote[:] = remote
    v.mac[:] = mac
    return bytes(v)


def sync_table(fd: int, want: Entries) -> None:
    """Make one LPM map (an fd) hold exactly want; unchanged entries are not rewritten.
    (LPM tries have no batch operations: one syscall per entry changed.)"""
    have: Entries = {
        (struct.unpack_from("=I", k)[0], k[4:]): (v[:REMOTE], v[REMOTE:REMOTE + 6])
        for k, v in PinnedMap(fd).items()  # (not closed: the fd is the caller's)
    }
    for key in set(have) - set(want):
        libbpf.map_delete(fd, _key(*key))
    for key, (remote, mac) in want.items():
        if have.get(key) != (remote, mac):
            libbpf.map_update(fd, _key(*key), _value(remote, mac))


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
        self._fds: dict[str, int] = {}  # programs and maps of the loaded program
        self._for: tuple[IPAddress, int] | None = None
        self._underlay: int | None = None
        self._mtu: int | None = None

    def _compile(self, local: IPAddress, ifindex: int) -> None:
        self.close()
        funcs = {"rr_tun_encap": (SCHED_CLS, -1), "rr_tun_decap": (SCHED_CLS, -1)}
        self._fds = load_text_isolated(program_text(self.protocol, local, ifindex, self.vni),
                                       funcs)

    def _sync_map(self, peers: Sequence[TunnelPeer]) -> None:
        sync_table(self._fds["rr_tun_routes"], route_entries(peers, 4))
        sync_table(self._fds["rr_tun_routes6"], route_entries(peers, 6))

    def sync(self, local: IPAddress, peers: Sequence[TunnelPeer]) -> list[str]:
        under = self.links.underlay(local)
        if under is None:
            return [f"tunnel {self.dev}: no device holds the node address {local}"]
        try:
            mtu = tunnel_mtu(under.mtu, overhead(local))
            dev_index = self.links.ensure_plain(self.dev, mtu)
            fresh = self._for != (local, under.index)
            if fresh:
                self._compile(local, under.index)
            self._sync_map(peers)
            problems = ipv6_mtu_errors(self.dev, mtu, peers, overhead(local))
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
        fd = self._fds.get("rr_tun_stats")
        if fd is None:
            return {}
        return {name: sum(int.from_bytes(v, "little")
                          for v in libbpf.percpu_lookup(fd, struct.pack("=i", i), 8))
                for i, name in enumerate(STATS)}

    def teardown(self, local: IPAddress | None) -> None:
        under = self.links.underlay(local) if local is not None else None
        for idx in {i for i in (self._underlay, under.index if under else None) if i}:
            detach_one(idx, INGRESS, self.netns)
        self.links.delete(self.dev)
        self._for = self._underlay = self._mtu = None

    def close(self) -> None:
        """Drop our fds; attached programs (and the maps they use) keep running."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
