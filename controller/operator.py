"""The operator role: the single writer of allocations (pod CIDRs, LoadBalancer IPs).

It watches the manifest directory, plans allocations with the pure functions, and writes
them (with conditions for services, nodes, pools and BGP objects, and the manifest
errors) to `.status/operator.yaml`, where agents and the CLI read them. It writes only
when something changed, so its own write does not make it loop. Killing and restarting
it never changes an allocation: the plan starts from what status already records.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.desired.bgpconfig import cluster_conditions
from controller.desired.cluster import Allocations, plan_allocations
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
        nets[node] = {
            "podCIDRs": [str(c) for c in cidrs],
            "conditions": [alloc.pod_cidrs.conditions[node].to_dict()],
        }
    objects: dict[str, Any] = {}
    for pool, conds in sorted(alloc.lbipam.pools.items()):
        objects[f"LoadBalancerIPPool {pool}"] = {"conditions": [c.to_dict() for c in conds]}
    for ref, conds2 in sorted(cluster_conditions(snap).items()):
        objects[ref] = {"conditions": [c.to_dict() for c in conds2]}
    for err in snap.errors:
        entry = objects.setdefault(err.ref, {"conditions": []})
        entry["conditions"].append(
            {
                "type": "Valid",
                "status": "False",
                "reason": "InvalidManifest",
                "message": "; ".join(err.messages),
                "observedGeneration": 0,
            }
        )
    return {"services": services, "nodeNetworks": nets, "objects": objects}


class Operator:
    """Plans and writes allocations whenever the store changes."""

    def __init__(self, manifests: Path) -> None:
        self.manifests = manifests

    def reconcile(self, snap: Snapshot) -> bool:
        """One pass; True when the status file was rewritten."""
        doc = status_document(snap, plan_allocations(snap))
        current = read_yaml(status_dir(self.manifests) / "operator.yaml")
        if current == doc:
            return False
        _log_changes(current, doc)
        write_operator(self.manifests, doc)
        return True


def _log_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for section, field in (("services", "ingress"), ("nodeNetworks", "podCIDRs")):
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(before) | set(after)):
            a = (before.get(key) or {}).get(field)
            b = (after.get(key) or {}).get(field)
            if a != b:
                log.info("event=allocation section=%s object=%s old=%s new=%s", section, key, a, b)


def run_operator(manifests: Path, stop: threading.Event, interval: float = 0.2) -> None:
    """Watch `manifests` and keep `.status/operator.yaml` up to date until `stop`."""
    from controller.sources.files import FileSource
    from controller.store import Store

    store = Store()
    source = FileSource(manifests, store, interval)
    op = Operator(manifests)
    t = threading.Thread(target=source.run, args=(stop,), name="files", daemon=True)
    t.start()
    while not stop.is_set():
        if store.wait(timeout=1.0):
            try:
                op.reconcile(store.snapshot())
            except Exception:
                log.exception("event=operator_error")
    t.join(timeout=2)
