"""The operator's allocations and conditions, written to the API server.

With the kube source, Kubernetes holds the allocations (DESIGN: "Kubernetes holds
allocations"): a LoadBalancer service's IPs in its `status.loadBalancer.ingress`, a node's
pod CIDRs in the NodeNetwork object named after it (created, updated and, once its node
is gone, deleted by the operator alone: it carries the managed-by label). Conditions go to
the objects they describe: the service's IPAMRequestSatisfied, each pool's counters, each
BGP object's checks, and `Valid=False` on a custom resource the parser rejected.

`planned_writes` is pure: the snapshot, the plan and what this writer last wrote give the
writes. Allocations are compared with the snapshot (what the server holds); conditions,
which the model does not read back, with what was last written, so an unchanged pass
writes nothing and the writes it makes do not make the operator loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.desired.bgpconfig import cluster_conditions
from controller.desired.cluster import Allocations
from controller.sources.kubeapi import RESOURCES, ApiError, KubeAPI
from controller.store import Snapshot

log = logging.getLogger("rackroute.operator")

MANAGED_BY = {"app.kubernetes.io/managed-by": "rackroute-operator"}
Conds = tuple[tuple[tuple[str, Any], ...], ...]  # conditions, hashable, without times


@dataclass(frozen=True)
class Write:
    """One request: create, patch (of the object or its status) or delete."""

    op: str  # create | patch | delete
    kind: str
    name: str
    namespace: str = ""
    body: Mapping[str, Any] | None = None
    sub: str = ""  # "status" for the status subresource
    conds: Conds = ()  # the conditions this write records (remembered once it succeeds)

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


def utc_now() -> str:
    """Now, as a condition's lastTransitionTime."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _conds(conditions: list[dict[str, Any]]) -> Conds:
    return tuple(tuple(sorted(c.items())) for c in conditions)


def _with_time(conditions: list[dict[str, Any]], now: str) -> list[dict[str, Any]]:
    return [dict(c, lastTransitionTime=now) for c in conditions]


def _split(ref: str) -> tuple[str, str, str]:
    kind, _, key = ref.partition(" ")
    ns, _, name = key.rpartition("/")
    return kind, ns, name


def desired_conditions(snap: Snapshot, alloc: Allocations) -> dict[str, list[dict[str, Any]]]:
    """`Kind [ns/]name` -> the conditions the operator reports on that object."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pool, conds in alloc.lbipam.pools.items():
        out[f"LoadBalancerIPPool {pool}"] = [c.to_dict() for c in conds]
    for node, cond in alloc.pod_cidrs.conditions.items():
        out[f"NodeNetwork {node}"] = [cond.to_dict()]
    for ref, conds2 in cluster_conditions(snap).items():
        out.setdefault(ref, []).extend(c.to_dict() for c in conds2)
    for err in snap.errors:
        kind, ns, name = _split(err.ref)
        if kind not in RESOURCES or kind in ("Service", "Secret", "EndpointSlice", "Node"):
            continue  # only our custom resources carry a Valid condition
        out.setdefault(err.ref, []).append(
            {"type": "Valid", "status": "False", "reason": "InvalidManifest",
             "message": "; ".join(err.messages), "observedGeneration": 0})
    return out


def planned_writes(snap: Snapshot, alloc: Allocations, written: Mapping[str, Conds],
                   now: str) -> list[Write]:
    """The requests that make the server hold this plan (pure)."""
    writes: list[Write] = []
    for key, sa in sorted(alloc.lbipam.services.items()):
        svc = snap.services.get(key)
        if svc is None:
            continue
        cond = [sa.condition.to_dict()]
        ref = f"Service {key}"
        if svc.status_ingress == sa.ips and written.get(ref) == _conds(cond):
            continue
        body = {"status": {"loadBalancer": {"ingress": [{"ip": str(ip)} for ip in sa.ips]},
                           "conditions": _with_time(cond, now)}}
        writes.append(Write("patch", "Service", svc.meta.name, svc.meta.namespace, body,
                            "status", _conds(cond)))
    for node, cidrs in sorted(alloc.pod_cidrs.allocations.items()):
        spec = {"podCIDRs": [str(c) for c in cidrs]}
        have = snap.node_networks.get(node)
        if have is None:
            writes.append(Write("create", "NodeNetwork", node, body={
                "apiVersion": "rackroute.io/v1alpha1", "kind": "NodeNetwork",
                "metadata": {"name": node, "labels": dict(MANAGED_BY)}, "spec": spec}))
        elif have.pod_cidrs != cidrs:
            writes.append(Write("patch", "NodeNetwork", node, body={"spec": spec}))
    for name, nn in sorted(snap.node_networks.items()):
        managed = nn.meta.labels.get("app.kubernetes.io/managed-by") == MANAGED_BY[
            "app.kubernetes.io/managed-by"]
        if name not in alloc.pod_cidrs.allocations and managed:
            writes.append(Write("delete", "NodeNetwork", name))
    for ref, conds in sorted(desired_conditions(snap, alloc).items()):
        kind, ns, name = _split(ref)
        if written.get(ref) == _conds(conds):
            continue
        writes.append(Write("patch", kind, name, ns,
                            {"status": {"conditions": _with_time(conds, now)}}, "status",
                            _conds(conds)))
    return writes


class KubeStatusWriter:
    """Applies planned writes; one failure is logged and retried on the next pass, the
    other writes go ahead."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self.written: dict[str, Conds] = {}
        self.failures: dict[str, str] = {}  # ref -> the last failure, for tests and logs

    def apply(self, writes: list[Write]) -> int:
        """Make the writes; returns how many succeeded."""
        done = 0
        for w in writes:
            res = RESOURCES[w.kind]
            try:
                if w.op == "create":
                    self.api.create(res, dict(w.body or {}), w.namespace)
                elif w.op == "delete":
                    self.api.delete(res, w.name, w.namespace)
                else:
                    self.api.merge_patch(res, w.name, dict(w.body or {}), w.namespace, w.sub)
            except ApiError as e:
                if w.op == "delete" and e.status == 404:
                    continue
                if e.status == 404 and w.sub == "status":
                    continue  # the object went away meanwhile: nothing to report on
                self.failures[w.ref] = str(e)
                log.warning("event=status_write_failed object=%r op=%s error=%r",
                            w.ref, w.op, str(e))
                continue
            except OSError as e:
                self.failures[w.ref] = str(e)
                log.warning("event=status_write_failed object=%r op=%s error=%r",
                            w.ref, w.op, str(e))
                continue
            self.failures.pop(w.ref, None)
            if w.sub == "status":
                self.written[w.ref] = w.conds
            if w.kind in ("Service", "NodeNetwork") and w.sub != "status" or w.kind == "Service":
                log.info("event=allocation object=%r op=%s", w.ref, w.op)
            done += 1
        return done
