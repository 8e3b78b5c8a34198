"""Small clusters and a learned-route speaker for the routing tests (unit and integration)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from bgp.fake import FakeSpeaker
from bgp.types import GlobalConfig, PeerSpec, Route, SessionState
from controller.model.crds import ClusterNetworkConfig, NodeNetwork
from controller.model.k8s import Node
from controller.model.meta import Meta
from controller.store import Snapshot

N = ipaddress.ip_network
A = ipaddress.ip_address
TOR = A("10.255.255.1")


def cluster(
    nodes: Mapping[str, tuple[str, Iterable[str]]],
    mode: str = "native",
    protocol: str = "vxlan",
) -> Snapshot:
    """{name: (InternalIP, pod CIDRs)} → a snapshot with cluster-pool NodeNetworks."""
    objs: list[object] = [
        ClusterNetworkConfig(Meta("RackrouteConfig", "default"), routing_mode=mode,
                             tunnel_protocol=protocol)
    ]
    for name, (ip, cidrs) in nodes.items():
        objs.append(Node(Meta("Node", name), (A(ip),)))
        objs.append(NodeNetwork(Meta("NodeNetwork", name), tuple(N(c) for c in cidrs)))
    return Snapshot.build(objs)


def learned_speaker() -> FakeSpeaker:
    """A started fake speaker with one Established ToR neighbor, ready for `learn`."""
    sp = FakeSpeaker()
    sp.start(GlobalConfig(65001, ipaddress.IPv4Address("10.255.255.2")))
    sp.set_peers([PeerSpec("tor", TOR, 65000)])
    sp.set_state(TOR, SessionState.ESTABLISHED)
    return sp


def learn(sp: FakeSpeaker, prefix: str, next_hop: str) -> None:
    sp.inject(Route(N(prefix), A(next_hop), TOR, (65000, 65002)))


def forget(sp: FakeSpeaker, prefix: str) -> None:
    sp.withdraw_received(TOR, N(prefix))
