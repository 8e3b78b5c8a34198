"""Small clusters and a learned-route speaker for the routing tests (unit and integration)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

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
    nodes: Mapping[str, tuple[str | Sequence[str], Iterable[str]]],
    mode: str = "native",
    protocol: str = "vxlan",
    underlay: str | None = None,
) -> Snapshot:
    """{name: (InternalIP or InternalIPs, pod CIDRs)} → a snapshot with cluster-pool
    NodeNetworks; `underlay` sets the cluster's tunnel underlay (None: the default)."""
    cfg = ClusterNetworkConfig(Meta("RackrouteConfig", "default"), routing_mode=mode,
                               tunnel_protocol=protocol)
    if underlay is not None:
        cfg = dataclasses.replace(cfg, tunnel_underlay=underlay)
    objs: list[object] = [cfg]
    for name, (ips, cidrs) in nodes.items():
        addrs = (ips,) if isinstance(ips, str) else tuple(ips)
        objs.append(Node(Meta("Node", name), tuple(A(ip) for ip in addrs)))
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
