"""Tunnel datapaths behind one small protocol: the kernel VXLAN device, and a fake.

A TunnelDriver keeps a tunnel device and its per-remote-node entries equal to a list of
`TunnelPeer`s, and says how routes enter it (`layout`). The eBPF driver (Geneve or
VXLAN encapsulated in TC) lives in bpf/tunnel.py and has the same shape.

MTU rule: the tunnel device, and so every pod of a tunnelling node, gets the underlay
MTU minus the encapsulation overhead, 50 bytes for VXLAN and for Geneve without options
over an IPv4 underlay (outer IPv4 20 + UDP 8 + tunnel header 8 + inner Ethernet 14):
1450 on a 1500 underlay; 70 over an IPv6 underlay (outer IPv6 40): 1430. The inner
family costs nothing more; IPv6 needs a link MTU of at least 1280 (`IPV6_MIN_MTU`), so
an underlay below 1330 (1350 for IPv6) cannot tunnel IPv6 and `ipv6_mtu_errors` says so.

The underlay's family is the node address's (`local`), IPv4 or IPv6; every peer's
address is of the same family (controller/desired/routes.py). The kernel VXLAN driver's
routes go via the remote VTEP's IPv4 inner address (neighbor + FDB entries), and its
IPv6 routes via the VTEP's link-local address (`vtep_ll6`, one more permanent neighbor
entry on the same MAC, for nodes with IPv6 pods): an IPv6 route cannot go via an IPv4
address. An IPv6-only node has no inner IPv4 address, only the link-local one. Over IPv6
the kernel device sends UDP checksums (its default) and accepts packets without one
(RFC 6935, as the eBPF tunnel sends). A driver whose layout says `ipv6=False` has its
IPv6 pod CIDRs left out and reported instead (see controller/reconcile/routing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bgp.types import IPAddress
from controller.desired.routes import TunnelLayout, TunnelPeer, vtep_ll6, vtep_mac
from controller.kernel.links import LinkPort, Vtep, VxlanLink

VXLAN_PORT = 8472
GENEVE_PORT = 6081
VNI = 1
OVERHEAD = 50  # outer IPv4 + UDP + VXLAN/Geneve header (no options) + inner Ethernet
OVERHEAD6 = 70  # the same with an outer IPv6 header
IPV6_MIN_MTU = 1280
# a tunnel's counters: packets and bytes wrapped and unwrapped, packets with no tunnel
# entry for their destination, and packets the datapath failed to handle
STATS = ("encap_packets", "encap_bytes", "decap_packets", "decap_bytes", "miss", "errors")


def overhead(local: IPAddress) -> int:
    """The encapsulation overhead over the underlay of local's family."""
    return OVERHEAD6 if local.version == 6 else OVERHEAD


def tunnel_mtu(underlay_mtu: int, overhead: int = OVERHEAD) -> int:
    """The MTU of the tunnel device and of pods on a node that tunnels."""
    return underlay_mtu - overhead


def ipv6_mtu_errors(dev: str, mtu: int, peers: Sequence[TunnelPeer],
                    overhead: int = OVERHEAD) -> list[str]:
    """An error when peers have IPv6 pod CIDRs and the tunnel MTU is below IPv6's minimum."""
    if mtu >= IPV6_MIN_MTU or not any(p.cidrs6 for p in peers):
        return []
    return [f"tunnel {dev}: MTU {mtu} is below IPv6's {IPV6_MIN_MTU}; IPv6 pod traffic "
            f"cannot pass (underlay MTU must be at least {IPV6_MIN_MTU + overhead})"]


class TunnelDriver(Protocol):
    layout: TunnelLayout

    def sync(self, local: IPAddress, peers: Sequence[TunnelPeer]) -> list[str]:
        """Make the device and its entries match peers; returns errors (partial ok)."""
        ...

    def mtu(self) -> int | None:
        """The tunnel device's MTU after the last sync (None before)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters since the device was made: STATS names (empty before a sync)."""
        ...

    def teardown(self, local: IPAddress | None) -> None:
        """Remove the device and anything attached for it (idempotent)."""
        ...

    def close(self) -> None:
        """Drop handles; kernel state stays."""
        ...


class KernelVxlan:
    """VXLAN through the kernel device `rr.vxlan`: VNI 1, UDP 8472, no learning, a MAC
    derived from the node address, and one FDB + neighbor entry per remote node."""

    def __init__(self, links: LinkPort, name: str = "rr.vxlan", vni: int = VNI,
                 port: int = VXLAN_PORT) -> None:
        self.links, self.name, self.vni, self.port = links, name, vni, port
        self.layout = TunnelLayout(name, via_inner=True, ipv6=True)
        self._mtu: int | None = None

    def sync(self, local: IPAddress, peers: Sequence[TunnelPeer]) -> list[str]:
        under = self.links.underlay(local)
        if under is None:
            return [f"tunnel {self.name}: no device holds the node address {local}"]
        mtu = tunnel_mtu(under.mtu, overhead(local))
        self.links.ensure_vxlan(VxlanLink(self.name, self.vni, self.port, local,
                                          vtep_mac(local), mtu))
        self._mtu = mtu
        want = {Vtep(p.mac, p.remote, p.inner, vtep_ll6(p.mac) if p.cidrs6 else None)
                for p in peers}
        have = self.links.vteps(self.name)
        errors: list[str] = []
        # an entry that only gains its IPv6 neighbor is added over (replace), not removed
        # first: the node's IPv4 traffic keeps flowing
        gaining = {v for v in have - want if v.inner6 is None
                   and Vtep(v.mac, v.remote, v.inner, vtep_ll6(v.mac)) in want}
        for v in sorted(have - want - gaining, key=lambda v: v.mac):
            try:
                self.links.del_vtep(self.name, v)
            except Exception as e:
                errors.append(f"tunnel {self.name}: delete {v.remote}: {e}")
        for v in sorted(want - have, key=lambda v: v.mac):
            try:
                self.links.add_vtep(self.name, v)
            except Exception as e:
                errors.append(f"tunnel {self.name}: add {v.remote}: {e}")
        return ipv6_mtu_errors(self.name, mtu, peers, overhead(local)) + errors

    def mtu(self) -> int | None:
        return self._mtu

    def stats(self) -> dict[str, int]:
        """The device's counters: sent is wrapped, received unwrapped; a packet to a
        neighbour without entry is a miss (tx_dropped), errors both ways."""
        dev = self.links.link_stats(self.name) if self._mtu is not None else None
        if dev is None:
            return {}
        return {"encap_packets": dev["tx_packets"], "encap_bytes": dev["tx_bytes"],
                "decap_packets": dev["rx_packets"], "decap_bytes": dev["rx_bytes"],
                "miss": dev["tx_dropped"], "errors": dev["rx_errors"] + dev["tx_errors"]}

    def teardown(self, local: IPAddress | None) -> None:
        self.links.delete(self.name)
        self._mtu = None

    def close(self) -> None:
        """Nothing held beyond the shared link port."""


@dataclass
class FakeTunnel:
    """TunnelDriver for unit tests: remembers the last sync."""

    layout: TunnelLayout = field(default_factory=lambda: TunnelLayout("rr.fake", False))
    local: IPAddress | None = None
    peers: tuple[TunnelPeer, ...] = ()
    up: bool = False
    syncs: int = 0
    fail: bool = False

    def sync(self, local: IPAddress, peers: Sequence[TunnelPeer]) -> list[str]:
        self.syncs += 1
        if self.fail:
            return ["fake tunnel failure"]
        self.local, self.peers, self.up = local, tuple(peers), True
        return []

    def mtu(self) -> int | None:
        if not self.up or self.local is None:
            return None
        return tunnel_mtu(1500, overhead(self.local))

    def stats(self) -> dict[str, int]:
        return dict.fromkeys(STATS, 0) if self.up else {}

    def teardown(self, local: IPAddress | None) -> None:
        self.up, self.peers = False, ()

    def close(self) -> None:
        """Nothing to release."""
