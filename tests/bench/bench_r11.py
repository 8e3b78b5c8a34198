"""R11: desired-state planning time for 1k and 10k services × 100 nodes; t(10k)/t(1k).

Planning = the operator's allocations (pod CIDRs + LB-IPAM) plus every node's resolved BGP
config and advertisement plan. Goal: near linear (ratio ≈ 10, never ≥ 20).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from bgp.types import IPV4_UNICAST
from controller.desired.cluster import apply_allocations, plan_allocations, plan_nodes
from controller.model.crds import (
    Advertisement,
    Attributes,
    BGPAdvertisement,
    BGPClusterConfig,
    BGPInstance,
    BGPPeer,
    BGPPeerConfig,
    ClusterNetworkConfig,
    FamilyConfig,
    LoadBalancerIPPool,
    PoolBlock,
)
from controller.model.k8s import Endpoint, EndpointSlice, Node, Service, ServicePort
from controller.model.meta import LabelSelector, Meta, Requirement
from controller.store import Snapshot
from tests.bench.common import abab, ratio_stats, save, stats, table

NODES = 100


def cluster(n_services: int) -> Snapshot:
    ip = ipaddress.ip_address
    net = ipaddress.ip_network
    objs: list[object] = [
        ClusterNetworkConfig(
            Meta("RackrouteConfig", "default"),
            cluster_pool_v4=(net("10.128.0.0/9"),),
            cluster_pool_v4_mask=24,
        ),
        BGPClusterConfig(
            Meta("BGPClusterConfig", "tor"),
            None,
            (BGPInstance("tor", 65010, 179, (BGPPeer("tor-a", ip("10.0.0.1"), 65000, "d"),)),),
        ),
        BGPPeerConfig(
            Meta("BGPPeerConfig", "d"),
            families=(FamilyConfig(IPV4_UNICAST, LabelSelector((("adv", "y"),))),),
        ),
        BGPAdvertisement(
            Meta("BGPAdvertisement", "a", labels={"adv": "y"}),
            (
                Advertisement("PodCIDR"),
                Advertisement(
                    "Service",
                    ("LoadBalancerIP",),
                    selector=LabelSelector((), (Requirement("x", "DoesNotExist"),)),
                    attributes=Attributes(frozenset({"65000:1"})),
                ),
            ),
        ),
        LoadBalancerIPPool(Meta("LoadBalancerIPPool", "p"), (PoolBlock(cidr=net("10.96.0.0/16")),)),
    ]
    for i in range(NODES):
        objs.append(Node(Meta("Node", f"node-{i:03d}"), (ip(f"10.0.{i // 250}.{i % 250 + 2}"),)))
    for s in range(n_services):
        name = f"svc-{s:05d}"
        objs.append(
            Service(
                Meta("Service", name, "bench"),
                type="LoadBalancer",
                ports=(ServicePort(80),),
                external_traffic_policy="Local" if s % 2 else "Cluster",
            )
        )
        eps = tuple(
            Endpoint(
                (ip(f"10.200.{(s * 2 + k) // 250 % 250}.{(s * 2 + k) % 250 + 1}"),),
                node_name=f"node-{(s + k * 37) % NODES:03d}",
            )
            for k in range(2)
        )
        objs.append(EndpointSlice(Meta("EndpointSlice", f"{name}-x", "bench"), name, endpoints=eps))
    return Snapshot.build(objs)


def plan_everything(snap: Snapshot) -> int:
    alloc = plan_allocations(snap)
    nodes = plan_nodes(apply_allocations(snap, alloc))
    return sum(len(p.all_paths()) for _, p in nodes.values())


def main() -> None:
    small, large = cluster(1_000), cluster(10_000)
    paths_small, paths_large = plan_everything(small), plan_everything(large)
    runs = abab({"1k": lambda: plan_everything(small), "10k": lambda: plan_everything(large)})
    ratio = ratio_stats(runs["10k"], runs["1k"])
    rows: list[list[Any]] = []
    for name, paths in (("1k", paths_small), ("10k", paths_large)):
        s = stats(runs[name])
        rows.append(
            [
                f"{name} services x {NODES} nodes",
                f"{s['median']:.3f}",
                f"{s['min']:.3f}",
                f"{s['max']:.3f}",
                paths,
            ]
        )
    print(table(["case", "median s", "min s", "max s", "paths planned"], rows))
    print(
        f"t(10k)/t(1k): median {ratio['median']:.2f} (min {ratio['min']:.2f}, "
        f"max {ratio['max']:.2f}); goal ≈ 10, never ≥ 20"
    )
    path = save(
        "r11-planning",
        {
            "benchmark": "R11",
            "rounds": len(runs["1k"]),
            "seconds": {k: stats(v) for k, v in runs.items()},
            "ratio_10k_over_1k": ratio,
            "paths": {"1k": paths_small, "10k": paths_large},
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
