"""Manifest builders shared by the agent integration tests and the benchmarks: one cluster
peering with one ToR, as Kubernetes-shaped dicts ready for a manifest directory."""

from __future__ import annotations

from typing import Any

LB_ADVERTISEMENT: dict[str, Any] = {
    "advertisementType": "Service", "service": {"addresses": ["LoadBalancerIP"]},
    "selector": {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}}


def tor_cluster(local_asn: int, tor: str, advertisement: str,
                advertisements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cluster pool IPAM, a BGP instance peering with tor (AS 65000; short timers, graceful
    restart), one BGPAdvertisement named advertisement, and an LB pool 198.51.100.0/24."""
    return [
        {"apiVersion": "rackroute.io/v1alpha1", "kind": "RackrouteConfig",
         "metadata": {"name": "default"},
         "spec": {"ipam": {"clusterPoolIPv4PodCIDRList": ["10.244.0.0/16"],
                           "clusterPoolIPv4MaskSize": 24}}},
        {"apiVersion": "rackroute.io/v1alpha1", "kind": "BGPClusterConfig",
         "metadata": {"name": "tor"},
         "spec": {"bgpInstances": [{"name": "tor", "localASN": local_asn, "localPort": 179,
                                    "peers": [{"name": "tor", "peerAddress": tor,
                                               "peerASN": 65000,
                                               "peerConfigRef": {"name": "default"}}]}]}},
        {"apiVersion": "rackroute.io/v1alpha1", "kind": "BGPPeerConfig",
         "metadata": {"name": "default"},
         "spec": {"timers": {"holdTimeSeconds": 9, "keepAliveTimeSeconds": 3,
                             "connectRetryTimeSeconds": 1},
                  "gracefulRestart": {"enabled": True},
                  "families": [{"afi": "ipv4", "safi": "unicast",
                                "advertisements": {"matchLabels": {"adv": "yes"}}}]}},
        {"apiVersion": "rackroute.io/v1alpha1", "kind": "BGPAdvertisement",
         "metadata": {"name": advertisement, "labels": {"adv": "yes"}},
         "spec": {"advertisements": advertisements}},
        {"apiVersion": "rackroute.io/v1alpha1", "kind": "LoadBalancerIPPool",
         "metadata": {"name": "pool"}, "spec": {"blocks": [{"cidr": "198.51.100.0/24"}]}},
    ]
