"""The lab's topology, derived from one description: the lab manifests plus a few constants.

Both the network-namespace lab (`rackroute lab up`) and the containerlab files
(`topology.clab.yml`, FRR configs) are generated from `Topology`, so they cannot drift.
Nodes and their addresses and AS numbers come from the Node and BGPNodeConfigOverride
manifests; pods from the EndpointSlices (targetRef name, nodeName, address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from controller.lab.frr import BgpConfig, Neighbor
from controller.sources.files import ManifestDir

PREFIX = "rrl-"
TOR_ASN = 65000
TOR_UNDERLAY = "10.0.0.1/24"
CLIENT_NET = "192.168.100.0/24"
TOR_CLIENT_ADDR = "192.168.100.1/24"
CLIENT_ADDR = "192.168.100.10/24"
POD_PORT = 8080


@dataclass(frozen=True)
class LabNode:
    name: str
    index: int
    address: str  # underlay IPv4
    asn: int

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
    ip: str
    app: str = ""
    namespace: str = "default"

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

    def node(self, name: str) -> LabNode:
        return next(n for n in self.nodes if n.name == name)

    def pod_ns(self, pod: str) -> str:
        for i, p in enumerate(self.pods):
            if p.name == pod:
                return p.ns(i)
        raise KeyError(pod)

    def tor_bgp(self) -> BgpConfig:
        """The ToR's bgpd: eBGP to every node (one AS each), ECMP, next-hop-self.

        Nodes are also configured as explicit neighbors, so the ToR connects first
        (a speaker's first outgoing connect may wait several seconds).
        """
        return BgpConfig(
            asn=self.tor_asn,
            router_id=TOR_UNDERLAY.split("/")[0],
            listen_ranges=(str(ipaddress.ip_interface(TOR_UNDERLAY).network),),
            group_next_hop_self=True,
            neighbors=tuple(
                Neighbor(address=n.address, peer_group="NODES", next_hop_self=True)
                for n in self.nodes
            ),
        )


def load_topology(manifests: Path) -> Topology:
    """The lab topology described by a manifest directory."""
    snap = ManifestDir(manifests).load()
    names = sorted(snap.nodes)
    nodes: list[LabNode] = []
    for i, name in enumerate(names, start=1):
        n = snap.nodes[name]
        addr = next((str(a) for a in n.addresses if a.version == 4), f"10.0.0.{10 + i}")
        asn = 65010 + i
        ov = snap.overrides.get(name)
        for inst in ov.instances if ov else ():
            if inst.local_asn:
                asn = inst.local_asn
        nodes.append(LabNode(name, i, addr, asn))
    pods: dict[str, LabPod] = {}
    for s in sorted(snap.slices.values(), key=lambda s: s.meta.key):
        for ep in s.endpoints:
            if ep.target and ep.node_name in names and ep.addresses and ep.target not in pods:
                pods[ep.target] = LabPod(ep.target, ep.node_name, str(ep.addresses[0]),
                                         s.service_name, s.meta.namespace or "default")
    return Topology(tuple(nodes), tuple(pods[k] for k in sorted(pods)))
