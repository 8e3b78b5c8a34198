"""Which of a node's pod traffic leaves with the node's address (pure).

Pods reach addresses outside the cluster with their own source where the network routes
their pod CIDRs back: native and hybrid routing advertise them over BGP. In tunnel mode
nothing outside knows them, so a pod's packet to anything but another pod leaves with
the node's address (source NAT to the outgoing interface's address, as `masquerade`
does): RackrouteConfig `spec.masquerade` `auto` (the default: in tunnel mode only),
`always`, or `never`. Traffic to any pod of the cluster (the node's own and every other
node's pod CIDRs, and the cluster pools) keeps its source.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgp.types import IPNetwork
from controller.desired.podcidr import cluster_pod_cidrs, collapsed, node_pod_cidrs
from controller.store import Snapshot


@dataclass(frozen=True)
class MasqPlan:
    """Source NAT to the node's address for packets from `sources` to anything outside
    `exempt`, per family."""

    sources: tuple[IPNetwork, ...]  # this node's pod CIDRs
    exempt: tuple[IPNetwork, ...]  # the cluster's pod CIDRs: destinations kept as they are


def plan_masquerade(snap: Snapshot, node: str, routing_mode: str | None = None
                    ) -> MasqPlan | None:
    """The node's masquerade (None: none). `routing_mode`: the agent's pinned mode, else
    the RackrouteConfig's."""
    cfg = snap.network_config
    setting = cfg.masquerade if cfg is not None else "auto"
    mode = routing_mode or (cfg.routing_mode if cfg is not None else "native")
    if setting == "never" or (setting == "auto" and mode != "tunnel"):
        return None
    sources = node_pod_cidrs(snap, node)
    if not sources:
        return None
    return MasqPlan(collapsed(sources), collapsed((*sources, *cluster_pod_cidrs(snap))))
