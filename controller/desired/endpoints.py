"""Endpoint summaries per service: which nodes have ready or serving-terminating endpoints.

Computed once per snapshot and shared by the advertisement planner and the datapath's
service table, so both apply the same kube-proxy endpoint semantics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.model.k8s import EndpointSlice

FAMILY_OF = {"IPv4": 4, "IPv6": 6}


@dataclass
class EndpointSummary:
    """Per address family (4/6): nodes with ready endpoints, nodes with serving-terminating."""

    ready: dict[int, set[str]] = field(default_factory=lambda: {4: set(), 6: set()})
    serving_terminating: dict[int, set[str]] = field(default_factory=lambda: {4: set(), 6: set()})
    any_ready: dict[int, bool] = field(default_factory=lambda: {4: False, 6: False})
    any_serving: dict[int, bool] = field(default_factory=lambda: {4: False, 6: False})

    def local_reason(self, node: str, family: int) -> str | None:
        """Why `node` may serve a Local-policy service of `family`, or None if it may not."""
        if node in self.ready[family]:
            return "ready local endpoint"
        if node in self.serving_terminating[family]:
            return "serving-terminating local endpoint (none ready on this node)"
        return None

    def cluster_has_endpoints(self, family: int) -> bool:
        """Cluster policy: ready endpoints anywhere, or serving-terminating ones if none."""
        return self.any_ready[family] or self.any_serving[family]


def summarize(slices: Mapping[str, EndpointSlice]) -> dict[str, EndpointSummary]:
    """Service key `ns/name` → its endpoint summary."""
    out: dict[str, EndpointSummary] = {}
    for s in slices.values():
        fam = FAMILY_OF.get(s.address_type)
        if fam is None:
            continue
        summ = out.setdefault(s.service_key, EndpointSummary())
        for ep in s.endpoints:
            if not ep.addresses:
                continue
            if ep.ready:
                summ.any_ready[fam] = True
                if ep.node_name:
                    summ.ready[fam].add(ep.node_name)
            elif ep.serving and ep.terminating:
                summ.any_serving[fam] = True
                if ep.node_name:
                    summ.serving_terminating[fam].add(ep.node_name)
    return out
