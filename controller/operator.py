"""The operator role: the single writer of allocations (pod CIDRs, BGP router IDs from
the RackrouteConfig pool, LoadBalancer IPs).

It watches the manifest directory, plans allocations with the pure functions, and writes
them (with conditions for services, nodes, pools and BGP objects, and the manifest
errors) to `.status/operator.yaml`, where agents and the CLI read them. It writes only
when something changed, so its own write does not make it loop. Killing and restarting
it never changes an allocation: the plan starts from what status already records.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controller import kubecilium
from controller.desired.bgpconfig import cluster_conditions
from controller.desired.cluster import Allocations, plan_allocations
from controller.kubestatus import (
    KubeStatusWriter,
    invalid_condition,
    node_network_conditions,
    node_network_generation,
    planned_writes,
    told_problems,
    utc_now,
)
from controller.leader import LeaderElector
from controller.opmetrics import OperatorState
from controller.sources.kubeapi import KubeAPI
from controller.status import read_yaml, status_dir, write_operator
from controller.store import Snapshot

log = logging.getLogger("rackroute.operator")


def status_document(snap: Snapshot, alloc: Allocations) -> dict[str, Any]:
    """The operator's status file content for this snapshot (pure)."""
    services: dict[str, Any] = {}
    for key, sa in sorted(alloc.lbipam.services.items()):
        services[key] = {
            "ingress": [str(ip) for ip in sa.ips],
            "pools": list(sa.pools),
            "conditions": [sa.condition.to_dict()],
        }
    nets: dict[str, Any] = {}
    for node, cidrs in sorted(alloc.pod_cidrs.allocations.items()):
        net_conds = node_network_conditions(alloc, node, node_network_generation(snap, node))
        nets[node] = {"podCIDRs": [str(c) for c in cidrs], "conditions": net_conds}
        rid = alloc.router_ids.allocations.get(node)
        if rid is not None:
            nets[node]["bgpRouterID"] = str(rid)
    objects: dict[str, Any] = {}
    for pool, conds in sorted(alloc.lbipam.pools.items()):
        objects[f"LoadBalancerIPPool {pool}"] = {"conditions": [c.to_dict() for c in conds]}
    for ref, conds2 in sorted(cluster_conditions(snap).items()):
        objects[ref] = {"conditions": [c.to_dict() for c in conds2]}
    for err in snap.errors:
        entry = objects.setdefault(err.ref, {"conditions": []})
        entry["conditions"].append(invalid_condition(err))
    return {"services": services, "nodeNetworks": nets, "objects": objects}


class Operator:
    """Plans and writes allocations whenever the store changes."""

    def __init__(self, manifests: Path) -> None:
        self.manifests = manifests
        self.alloc: Allocations | None = None  # the last pass's plan (for metrics)

    def reconcile(self, snap: Snapshot) -> bool:
        """One pass; True when the status file was rewritten."""
        self.alloc = plan_allocations(snap)
        doc = status_document(snap, self.alloc)
        current = read_yaml(status_dir(self.manifests) / "operator.yaml")
        if current == doc:
            return False
        _log_changes(current, doc)
        write_operator(self.manifests, doc)
        return True


class KubeOperator:
    """The operator with the kube source: writes allocations and conditions to the API
    server (controller/kubestatus.py) instead of the status file."""

    def __init__(self, api: KubeAPI, now: Callable[[], str] = utc_now) -> None:
        self.writer = KubeStatusWriter(api)
        self.now = now
        self.regarding = kubecilium.regarding(api)  # Cilium objects: told, not written
        self.alloc: Allocations | None = None  # the last pass's plan (for metrics)

    def reconcile(self, snap: Snapshot) -> bool:
        """One pass; True when anything was written."""
        alloc = self.alloc = plan_allocations(snap)
        done = self.writer.apply(planned_writes(snap, alloc, self.now()))
        # Nodes that do not parse, Cilium objects' problems: in Warning events
        problems = told_problems(snap) | kubecilium.problems(snap, alloc)
        return done + self.writer.tell(problems, self.regarding) > 0

    @property
    def pending(self) -> bool:
        """Writes failed in the last pass: try again without waiting for a change."""
        return bool(self.writer.failures)


def _log_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for section, field in (("services", "ingress"), ("nodeNetworks", "podCIDRs"),
                           ("nodeNetworks", "bgpRouterID")):
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(before) | set(after)):
            a = (before.get(key) or {}).get(field)
            b = (after.get(key) or {}).get(field)
            if a != b:
                log.info("event=allocation section=%s object=%s old=%s new=%s", section, key, a, b)


def run_operator(manifests: Path | None, stop: threading.Event, interval: float = 0.2,
                 api: KubeAPI | None = None, elector: LeaderElector | None = None,
                 secrets_namespace: str = "", watch_cilium: bool = False,
                 state: OperatorState | None = None) -> None:
    """Keep the allocations up to date until `stop`: from a manifest directory into
    `.status/operator.yaml`, or (with `api`) from and into the API server, its Secrets read
    in `secrets_namespace` (and, with `watch_cilium`, Cilium's spellings of the
    configuration kinds read as well). With `elector`, only while this process holds the lease
    (controller/leader.py). `state`: what the loop does, for metrics and probes
    (controller/opmetrics.py)."""
    from controller.sources.files import FileSource
    from controller.sources.kube import OPERATOR_KINDS, KubeSource, with_cilium
    from controller.store import Store

    store = Store()
    st = state or OperatorState()
    op: Operator | KubeOperator
    source: FileSource | KubeSource
    if api is not None:
        source = KubeSource(api, store, with_cilium(OPERATOR_KINDS, watch_cilium),
                            secrets_namespace)
        op = KubeOperator(api)
        # nothing is planned before every kind has listed: a partial view would release
        # what it cannot see
        while not stop.is_set() and not source.poll(timeout=30.0):
            st.tick()
    else:
        assert manifests is not None
        source = FileSource(manifests, store, interval)
        op = Operator(manifests)
    threads = [threading.Thread(target=source.run, args=(stop,), name="source", daemon=True)]
    if elector is not None:
        # leading or not, the cache stays warm; becoming the leader wakes a pass at once
        threads.append(threading.Thread(target=elector.run, args=(stop, lambda _: store.poke()),
                                        name="leader", daemon=True))
    for t in threads:
        t.start()
    st.started = True
    while not stop.is_set():
        st.tick()
        # a write that failed (the API server away, a conflict) is tried again each second
        woke = store.wait(timeout=1.0) or getattr(op, "pending", False)
        st.leader = elector is None or elector.is_leader()
        if not st.leader:
            continue
        if woke:
            try:
                op.reconcile(store.snapshot())
            except Exception:
                st.failures += 1
                log.exception("event=operator_error")
            st.passes += 1
            if op.alloc is not None:
                st.record(op.alloc)
            st.pending_writes = len(op.writer.failures) if isinstance(op, KubeOperator) else 0
    for t in threads:
        t.join(timeout=5)  # the elector gives its lease up on the way out
