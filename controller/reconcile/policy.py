"""The network policy reconciler: NetworkPolicies, Pods and Namespaces → this node's
policy maps (bpf/src/policy.c enforces them on each pod's own interface).

Each pass compiles the snapshot for this node (controller/desired/policy.py) and writes
what differs (bpf/policy.py), with the node's own addresses (its traffic to and from its
pods always passes, as Kubernetes has it). These are the pass's errors, each naming the
policy, the pod or the field (the node's NodeNetwork problems show them):
- what keeps a policy from applying in full (an entry past the range limit is refused:
  fail closed);
- what a map refused;
- a NetworkPolicy that does not parse (not used at all, or used in its last good version
  from the API server).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bgp.speaker import logfmt
from bgp.types import IPAddress
from bpf.policy import PolicyMaps
from controller.desired.policy import compile_policies
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.policy")


def node_addresses() -> set[IPAddress]:
    """Every address of this (the node's) network namespace (pyroute2)."""
    import ipaddress

    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {ipaddress.ip_address(str(a.get_attr("IFA_ADDRESS"))) for a in ipr.get_addr()
                if a.get_attr("IFA_ADDRESS")}


class PolicyReconciler:
    name = "policy"

    def __init__(self, maps: PolicyMaps,
                 addresses: Callable[[], set[IPAddress]] = node_addresses) -> None:
        """addresses: the node's own (its traffic to and from its pods always passes)."""
        self.maps, self.addresses = maps, addresses
        self.endpoints = 0  # pods under policy after the last pass

    def reconcile(self, ctx: PassContext) -> None:
        snap = ctx.snap
        plan = compile_policies(snap.network_policies.values(), snap.pods.values(),
                                snap.namespaces, ctx.node)
        errors = [f"NetworkPolicy {key}: {msg}" for key, msg in plan.problems]
        # a policy that does not parse (the kube source keeps its last good version, if
        # any): said where the node's problems are read, since no operator reads policies
        errors.extend(f"{e.ref}: {'; '.join(e.messages)}" for e in snap.errors
                      if e.ref.startswith("NetworkPolicy "))
        errors.extend(self.maps.sync_node(self.addresses()))
        errors.extend(self.maps.sync(plan.endpoints))
        if len(plan.endpoints) != self.endpoints:
            log.info(logfmt("policy_endpoints", pods=len(plan.endpoints)))
        self.endpoints = len(plan.endpoints)
        if errors:
            ctx.errors[self.name] = "; ".join(errors)

    def close(self) -> None:
        """Close the maps' handles (the pinned maps and the programs stay)."""
        for port in (self.maps.eps, self.maps.rules, self.maps.node):
            close = getattr(port, "close", None)
            if close is not None:
                close()
