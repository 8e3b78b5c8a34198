"""The lab's topology, derived from one description: the lab manifests plus a few constants.

The lab is dual-stack where the manifests are: a node with an IPv6 InternalIP gets that
address on the underlay too, and the ToR peers with it over IPv6 as well (IPv6 unicast on
its own session, as MetalLB and Cilium peer for IPv6 routes). A pod takes every address
its EndpointSlices give it (one per family).

Both the network-namespace lab (`rackroute lab up`) and the containerlab files
(`topology.clab.yml`, FRR configs) are generated from `Topology`, so they cannot drift.
Nodes and their addresses and AS numbers come from the Node and BGPNodeConfigOverride
manifests; pods from the EndpointSlices (targetRef name, nodeName, address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller.lab.frr import BgpConfig, Neighbor
from controller.sources.files import ManifestDir

PREFIX = "rrl-"
TOR_ASN = 65000
TOR_UNDERLAY = "10.0.0.1/24"
TOR_UNDERLAY6 = "fd00:10::1/64"
CLIENT_NET = "192.168.100.0/24"
TOR_CLIENT_ADDR = "192.168.100.1/24"
CLIENT_ADDR = "192.168.100.10/24"
TOR_CLIENT_ADDR6 = "fd00:192:168:100::1/64"
CLIENT_ADDR6 = "fd00:192:168:100::10/64"
POD_PORT = 8080


@dataclass(frozen=True)
class LabNode:
    name: str
    index: int
    address: str  # underlay IPv4
    asn: int
    address6: str = ""  # underlay IPv6 (its InternalIP), "" where the node has none

    @property
    def ns(self) -> str:
        return f"{PREFIX}n{self.index}"

    @property
    def tor_port(self) -> str:
        return f"t{self.index}"


@dataclass(frozen=True)
class LabPod:
    name: str
    node: str
    ip: str  # its first address (IPv4 where it has one)
    app: str = ""
    namespace: str = "default"
    ip6: str = ""  # its IPv6 address in a dual-stack lab

    @property
    def ips(self) -> tuple[str, ...]:
        return (self.ip, self.ip6) if self.ip6 else (self.ip,)

    def ns(self, index: int) -> str:
        return f"{PREFIX}p{index}"


@dataclass(frozen=True)
class Topology:
    nodes: tuple[LabNode, ...]
    pods: tuple[LabPod, ...]
    tor_asn: int = TOR_ASN
    tor_ns: str = f"{PREFIX}tor"
    client_ns: str = f"{PREFIX}client"
    lb_ips: tuple[str, ...] = field(default=())
    bfd: bool = False  # some BGPPeerConfig enables BFD: the ToR runs bfdd and asks for it

    def node(self, name: str) -> LabNode:
        return next(n for n in self.nodes if n.name == name)

    @property
    def dual_stack(self) -> bool:
        """Some node has an IPv6 underlay address: the ToR and client get one too."""
        return any(n.address6 for n in self.nodes)

    def pod_ns(self, pod: str) -> str:
        for i, p in enumerate(self.pods):
            if p.name == pod:
                return p.ns(i)
        raise KeyError(pod)

    def tor_bgp(self) -> BgpConfig:
        """The ToR's bgpd: eBGP to every node (one AS each), ECMP, next-hop-self.

        Nodes are also configured as explicit neighbors, so the ToR connects first
        (a speaker's first outgoing connect may wait several seconds). A node with an
        IPv6 underlay address has a second session, over IPv6, for IPv6 unicast only;
        its IPv4 session carries IPv4 unicast only.
        """
        ranges = [TOR_UNDERLAY] + ([TOR_UNDERLAY6] if self.dual_stack else [])
        neighbors = [Neighbor(address=n.address, peer_group="NODES", next_hop_self=True,
                              families=("ipv4",)) for n in self.nodes]
        neighbors += [Neighbor(address=n.address6, peer_group="NODES", next_hop_self=True,
                               families=("ipv6",)) for n in self.nodes if n.address6]
        return BgpConfig(
            asn=self.tor_asn,
            router_id=TOR_UNDERLAY.split("/")[0],
            listen_ranges=tuple(str(ipaddress.ip_interface(r).network) for r in ranges),
            group_next_hop_self=True,
            neighbors=tuple(neighbors),
            bfd=self.bfd,
        )


def load_topology(manifests: Path) -> Topology:
    """The lab topology described by a manifest directory."""
    snap = ManifestDir(manifests).load()
    names = sorted(snap.nodes)
    nodes: list[LabNode] = []
    for i, name in enumerate(names, start=1):
        n = snap.nodes[name]
        addr = next((str(a) for a in n.addresses if a.version == 4), f"10.0.0.{10 + i}")
        addr6 = next((str(a) for a in n.addresses if a.version == 6), "")
        asn = 65010 + i
        ov = snap.overrides.get(name)
        for inst in ov.instances if ov else ():
            if inst.local_asn:
                asn = inst.local_asn
        nodes.append(LabNode(name, i, addr, asn, addr6))
    pods: dict[str, LabPod] = {}
    addrs: dict[str, dict[int, str]] = {}
    for sl in sorted(snap.slices.values(), key=lambda s: s.meta.key):
        for ep in sl.endpoints:
            if not (ep.target and ep.node_name in names and ep.addresses):
                continue
            if ep.target not in pods:
                pods[ep.target] = LabPod(ep.target, ep.node_name, "", sl.service_name,
                                         sl.meta.namespace or "default")
            for a in ep.addresses:
                addrs.setdefault(ep.target, {}).setdefault(a.version, str(a))
    out = []
    for k in sorted(pods):
        got = addrs[k]
        out.append(replace(pods[k], ip=got.get(4) or got[6], ip6=got.get(6, "") if 4 in got
                           else ""))
    bfd = any(pc.bfd.enabled for pc in snap.peer_configs.values())
    return Topology(tuple(nodes), tuple(out), bfd=bfd)
