"""The network policy reconciler: NetworkPolicies, Pods and Namespaces → this node's
policy maps (bpf/src/policy.c enforces them on each pod's own interface).

Each pass compiles the snapshot for this node (controller/desired/policy.py) and writes
what differs (bpf/policy.py). What keeps a policy from applying in full (an entry past the
range limit, refused: fail closed), what a map refused, and a NetworkPolicy that does not
parse (not used at all, or in its last good version from the API server) are the pass's
errors, naming the policy, the pod or the field: the node's NodeNetwork problems show them.
"""

from __future__ import annotations

import logging

from bgp.speaker import logfmt
from bpf.policy import PolicyMaps
from controller.desired.policy import compile_policies
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.policy")


class PolicyReconciler:
    name = "policy"

    def __init__(self, maps: PolicyMaps) -> None:
        self.maps = maps
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
        errors.extend(self.maps.sync(plan.endpoints))
        if len(plan.endpoints) != self.endpoints:
            log.info(logfmt("policy_endpoints", pods=len(plan.endpoints)))
        self.endpoints = len(plan.endpoints)
        if errors:
            ctx.errors[self.name] = "; ".join(errors)

    def close(self) -> None:
        """Close the maps' handles (the pinned maps and the programs stay)."""
        for port in (self.maps.eps, self.maps.rules):
            close = getattr(port, "close", None)
            if close is not None:
                close()
