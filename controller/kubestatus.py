"""The operator's allocations and conditions, written to the API server.

With the kube source, Kubernetes holds the allocations (DESIGN: "Kubernetes holds
allocations"): a LoadBalancer service's IPs in its `status.loadBalancer.ingress`, a node's
pod CIDRs (and its BGP router ID, with RackrouteConfig's bgpRouterIDPool) in the
NodeNetwork object named after it (created, updated and, once its node is gone, deleted by
the operator alone: it carries the managed-by label). Conditions go to the objects they
describe: the service's IPAMRequestSatisfied, each pool's counters, each node's pod CIDR
and router ID allocation, each BGP object's checks, and `Valid=False` on a custom
resource the parser rejected; each at the generation of the object it describes. A Node
that does not parse carries no condition of ours (it is not ours): why it is ignored is
told in a Warning event, once per distinct problem.

`planned_writes` is pure and level-triggered: it compares the plan with what the objects
hold (the snapshot carries their ingress, pod CIDRs, router IDs and conditions), so a pass
over an unchanged cluster writes nothing, a restarted operator rewrites nothing, and a
condition keeps its lastTransitionTime until its status changes. A write that changes
something worth telling (an address, pod CIDR or router ID allocated, a service left
without one, an object found invalid) carries an Event, created on the object once the
write succeeded.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from controller.cilium import cilium_objects
from controller.desired.bgpconfig import cluster_conditions
from controller.desired.cluster import Allocations
from controller.model.meta import Condition
from controller.sources.kubeapi import RESOURCES, ApiError, KubeAPI, Obj, micro_time
from controller.store import ObjectError, Snapshot

log = logging.getLogger("rackroute.operator")

MANAGED_BY = {"app.kubernetes.io/managed-by": "rackroute-operator"}
TIME = "lastTransitionTime"


@dataclass(frozen=True)
class Event:
    """What a write is worth telling `kubectl describe` (events.k8s.io/v1)."""

    type: str  # Normal | Warning
    reason: str
    note: str


@dataclass(frozen=True)
class Write:
    """One request: create, patch (of the object or its status) or delete."""

    op: str  # create | patch | delete
    kind: str
    name: str
    namespace: str = ""
    body: Mapping[str, Any] | None = None
    sub: str = ""  # "status" for the status subresource
    event: Event | None = None  # recorded on the object once the write succeeded

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


def utc_now() -> str:
    """Now, as a condition's lastTransitionTime."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ours_on_services(ctype: str) -> bool:
    """The condition types the operator manages on a Service: its own group's (others'
    conditions on the object are kept as they are)."""
    return ctype.startswith("rackroute.io/")


def _conditions(want: list[dict[str, Any]], have: tuple[Mapping[str, Any], ...],
                now: str, ours: Callable[[str], bool] | None = None
                ) -> list[dict[str, Any]] | None:
    """The conditions to write, or None when the object already holds `want`. A condition
    whose status is unchanged keeps its lastTransitionTime. With `ours`, only the types it
    names are the operator's: the object's other conditions are written back unchanged."""
    foreign = [dict(c) for c in have if ours is not None and not ours(str(c.get("type")))]
    held = {str(c.get("type")): c for c in have if ours is None or ours(str(c.get("type")))}
    if len(held) == len(want) and all(
            {k: v for k, v in held.get(str(c["type"]), {}).items() if k != TIME} == c
            for c in want):
        return None
    out = foreign
    for c in want:
        old = held.get(str(c["type"]))
        same = old is not None and old.get("status") == c["status"] and old.get(TIME)
        out.append(dict(c, lastTransitionTime=old[TIME] if same and old else now))
    return out


def _status_of(snap: Snapshot, ref: str, ctype: str) -> str:
    """The status the object's condition `ctype` has now ("" when it has none)."""
    return next((str(c.get("status")) for c in snap.conditions.get(ref, ())
                 if c.get("type") == ctype), "")


def _reason(reason: str) -> str:
    """A condition's reason as an Event reason (CamelCase)."""
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", reason) if p)


def _split(ref: str) -> tuple[str, str, str]:
    kind, _, key = ref.partition(" ")
    ns, _, name = key.rpartition("/")
    return kind, ns, name


# the custom resources whose conditions are the operator's alone
OWNED_KINDS = ("BGPClusterConfig", "BGPPeerConfig", "BGPAdvertisement", "BGPNodeConfigOverride",
               "LoadBalancerIPPool", "RackrouteConfig")


def invalid_condition(err: ObjectError, ctype: str = "Valid") -> dict[str, Any]:
    """`ctype`=False on an object the parser refused, at the generation it refused (the
    messages name the field)."""
    return Condition(ctype, "False", "InvalidManifest", "; ".join(err.messages)[:32768],
                     err.generation).to_dict()


def node_network_generation(snap: Snapshot, node: str, spec_written: bool = False) -> int:
    """The generation `node`'s NodeNetwork has once this pass's writes are made: 1 when
    it is created, one more when its spec is changed (the API server counts spec changes),
    else the one it has."""
    have = snap.node_networks.get(node)
    if have is None:
        return 1
    return have.meta.generation + (1 if spec_written else 0)


def node_network_conditions(alloc: Allocations, node: str, generation: int
                            ) -> list[dict[str, Any]]:
    """The conditions of `node`'s NodeNetwork, at `generation`: its pod CIDRs' and, while
    a router ID pool is set, its router ID's."""
    conds = (alloc.pod_cidrs.conditions.get(node), alloc.router_ids.conditions.get(node))
    return [replace(c, observed_generation=generation).to_dict() for c in conds
            if c is not None]


def desired_conditions(snap: Snapshot, alloc: Allocations, respecced: Collection[str] = ()
                       ) -> dict[str, list[dict[str, Any]]]:
    """`Kind [ns/]name` -> the conditions the operator reports on that object, each at the
    generation of the object it describes (`respecced`: the nodes whose NodeNetwork this
    pass creates or changes the spec of). An object of OWNED_KINDS that holds conditions
    none of which is still wanted (a manifest fixed after it was found invalid) gets
    `Valid=True` in their place."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pool, conds in alloc.lbipam.pools.items():
        out[f"LoadBalancerIPPool {pool}"] = [c.to_dict() for c in conds]
    for node in alloc.pod_cidrs.conditions:
        gen = node_network_generation(snap, node, node in respecced)
        out[f"NodeNetwork {node}"] = node_network_conditions(alloc, node, gen)
    for ref, conds2 in cluster_conditions(snap).items():
        out.setdefault(ref, []).extend(c.to_dict() for c in conds2)
    for err in snap.errors:
        kind, ns, name = _split(err.ref)
        res = RESOURCES.get(kind)
        if res is None or not res.api_version.startswith("rackroute.io/"):
            continue  # only our custom resources carry a Valid condition
        out.setdefault(err.ref, []).append(invalid_condition(err))
    for ref, held in snap.conditions.items():
        if ref not in out and held and _split(ref)[0] in OWNED_KINDS:
            out[ref] = [Condition("Valid", "True", "Accepted", "",
                                  snap.generation(ref)).to_dict()]
    return out


SERVICE_VALID = "rackroute.io/Valid"


def _invalid_service(err: ObjectError | None) -> list[dict[str, Any]]:
    """The condition a Service the parser refused carries (its last good version, if any,
    keeps its addresses): the message names the field or annotation. None while fine."""
    return [] if err is None else [invalid_condition(err, SERVICE_VALID)]


def _invalid_event(snap: Snapshot, ref: str, want: list[dict[str, Any]]) -> Event | None:
    """A Warning when the Service turns invalid (once, not every pass)."""
    bad = next((c for c in want if c["type"] == SERVICE_VALID), None)
    if bad is None or _status_of(snap, ref, SERVICE_VALID) == "False":
        return None
    return Event("Warning", "InvalidManifest", str(bad["message"]))


# built-in kinds the operator reads and puts no condition on: why one of them is ignored
# is told in a Warning event (EndpointSlices, which the agents alone read, are in their
# nodes' problems)
TOLD_KINDS = ("Node",)


@dataclass(frozen=True, order=True)
class Problem:
    """One thing to tell in a Warning event about an object that carries no condition of
    ours (a Node, a Cilium object)."""

    ref: str  # `Kind [ns/]name`, the kind as written
    reason: str  # the event's reason: InvalidManifest, NameClash, a condition's type
    note: str  # what is wrong, naming the object and the field


def told_problems(snap: Snapshot) -> set[Problem]:
    """Why each object of TOLD_KINDS that did not parse is ignored (its messages name the
    object and the field): what its Warning event says (pure)."""
    return {Problem(e.ref, "InvalidManifest", "; ".join(e.messages))
            for kind in TOLD_KINDS for e in snap.errors_of(kind)}


def planned_writes(snap: Snapshot, alloc: Allocations, now: str) -> list[Write]:
    """The requests that make the server hold this plan (pure)."""
    writes: list[Write] = []
    bad = {e.ref: e for e in snap.errors_of("Service")}
    for key, sa in sorted(alloc.lbipam.services.items()):
        svc = snap.services.get(key)
        if svc is None:
            continue
        ref = f"Service {key}"
        want = [sa.condition.to_dict(), *_invalid_service(bad.pop(ref, None))]
        conds = _conditions(want, snap.conditions.get(ref, ()), now, _ours_on_services)
        if svc.status_ingress == sa.ips and conds is None:
            continue
        status: dict[str, Any] = {
            "loadBalancer": {"ingress": [{"ip": str(ip)} for ip in sa.ips]}}
        if conds is not None:
            status["conditions"] = conds
        c = sa.condition
        event = _invalid_event(snap, ref, want)
        if event is None and c.status != "True" and _status_of(snap, ref, c.type) != c.status:
            event = Event("Warning", _reason(c.reason), c.message)
        elif event is None and svc.status_ingress != sa.ips and sa.ips:
            event = Event("Normal", "IPAllocated", c.message)
        writes.append(Write("patch", "Service", svc.meta.name, svc.meta.namespace,
                            {"status": status}, "status", event))
    for ref, err in sorted(bad.items()):  # a Service that never parsed: no allocation
        want = _invalid_service(err)
        conds = _conditions(want, snap.conditions.get(ref, ()), now, _ours_on_services)
        if conds is not None:
            _, ns, name = _split(ref)
            writes.append(Write("patch", "Service", name, ns,
                                {"status": {"conditions": conds}}, "status",
                                _invalid_event(snap, ref, want)))
    respecced: set[str] = set()  # NodeNetworks whose spec this pass writes
    for node, cidrs in sorted(alloc.pod_cidrs.allocations.items()):
        have = snap.node_networks.get(node)
        rid = alloc.router_ids.allocations.get(node)
        cidrs_changed = have is None or have.pod_cidrs != cidrs
        rid_changed = (have.bgp_router_id if have is not None else None) != rid
        if not cidrs_changed and not rid_changed:
            continue
        respecced.add(node)
        spec: dict[str, Any] = {"podCIDRs": [str(c) for c in cidrs]}
        told = [", ".join(spec["podCIDRs"]) or "none"] if cidrs_changed else []
        if rid_changed:
            spec["bgpRouterID"] = str(rid) if rid is not None else None  # None: removed
            told.append(f"BGP router ID {rid or 'none'}")
        event = Event("Normal", "PodCIDRAllocated" if cidrs_changed else "BGPRouterIDAllocated",
                      f"node {node}: {'; '.join(told)}")
        if have is None:
            writes.append(Write("create", "NodeNetwork", node, body={
                "apiVersion": "rackroute.io/v1alpha1", "kind": "NodeNetwork",
                "metadata": {"name": node, "labels": dict(MANAGED_BY)}, "spec": spec},
                event=event))
        else:
            writes.append(Write("patch", "NodeNetwork", node, body={"spec": spec},
                                event=event))
    for name, nn in sorted(snap.node_networks.items()):
        managed = nn.meta.labels.get("app.kubernetes.io/managed-by") == MANAGED_BY[
            "app.kubernetes.io/managed-by"]
        if name not in alloc.pod_cidrs.allocations and managed:
            writes.append(Write("delete", "NodeNetwork", name))
    cilium = cilium_objects(snap)  # read-only: told in Events (controller/kubecilium.py)
    for ref, want in sorted(desired_conditions(snap, alloc, respecced).items()):
        if ref in cilium:
            continue
        kind, ns, name = _split(ref)
        conds = _conditions(want, snap.conditions.get(ref, ()), now)
        if conds is None:
            continue
        invalid = next((c for c in want if c["type"] == "Valid"), None)
        event = (Event("Warning", "InvalidManifest", str(invalid["message"]))
                 if invalid is not None and _status_of(snap, ref, "Valid") != "False"
                 else None)
        writes.append(Write("patch", kind, name, ns, {"status": {"conditions": conds}},
                            "status", event))
    return writes


class KubeStatusWriter:
    """Applies planned writes, a few in flight; one failure is logged and retried on the
    next pass, the other writes go ahead."""

    def __init__(self, api: KubeAPI, instance: str = "", workers: int = 4) -> None:
        self.api = api
        self.instance = instance or socket.gethostname()
        self.workers = workers  # requests in flight (the first pass over 10k services)
        self.failures: dict[str, str] = {}  # ref -> the last failure, for tests and logs
        self.told: set[Problem] = set()  # the problems held now that were told
        self._lock = threading.Lock()

    def apply(self, writes: list[Write]) -> int:
        """Make the writes, `workers` at a time: objects first (a NodeNetwork is created
        before its conditions are written), then statuses; returns how many succeeded."""
        objects = [w for w in writes if w.sub != "status"]
        statuses = [w for w in writes if w.sub == "status"]
        done = 0
        for phase in (objects, statuses):
            if len(phase) <= 1 or self.workers <= 1:
                done += sum(self._one(w) for w in phase)
                continue
            with ThreadPoolExecutor(self.workers) as pool:
                done += sum(pool.map(self._one, phase))
        return done

    def _one(self, w: Write) -> bool:
        """One write (and its event); False when it failed or had nothing left to do."""
        res = RESOURCES[w.kind]
        obj: Obj = {}
        try:
            if w.op == "create":
                obj = self.api.create(res, dict(w.body or {}), w.namespace)
            elif w.op == "delete":
                self.api.delete(res, w.name, w.namespace)
            else:
                obj = self.api.merge_patch(res, w.name, dict(w.body or {}), w.namespace,
                                           w.sub)
        except ApiError as e:
            if w.op == "delete" and e.status == 404:
                return False
            if e.status == 404 and w.sub == "status":
                return False  # the object went away meanwhile: nothing to report on
            self._failed(w, str(e))
            return False
        except OSError as e:
            self._failed(w, str(e))
            return False
        with self._lock:
            self.failures.pop(w.ref, None)
        if w.event is not None:
            self.record(w, w.event, obj)
        if w.kind == "NodeNetwork" and w.sub != "status" or w.kind == "Service":
            log.info("event=status_written object=%r op=%s", w.ref, w.op)
        return True

    def _failed(self, w: Write, error: str) -> None:
        with self._lock:
            self.failures[w.ref] = error
        log.warning("event=status_write_failed object=%r op=%s error=%r", w.ref, w.op, error)

    def tell(self, problems: Iterable[Problem],
             regarding: Callable[[Problem], Obj | None] = lambda p: {}) -> int:
        """A Warning event for each of `problems` (all of this pass's: the rest are
        forgotten) not told yet: once per distinct problem, not every pass; one gone and
        back is told again. `regarding`: the object it is about, read for its uid and
        apiVersion ({}: not read; None: not now). An event not made (the object not read,
        the event lost) is tried on the next pass. Returns how many were told."""
        now = set(problems)
        told: set[Problem] = set()
        for p in sorted(now - self.told):
            log.warning("event=object_problem object=%r reason=%s msg=%r", p.ref, p.reason,
                        p.note)
            obj = regarding(p)
            kind, ns, name = _split(p.ref)
            if obj is not None and self.record(Write("event", kind, name, ns),
                                               Event("Warning", p.reason, p.note), obj):
                told.add(p)
        self.told = (self.told & now) | told
        return len(told)

    def record(self, w: Write, ev: Event, obj: Obj) -> bool:
        """Create the Event about `w`'s object (best effort: an event lost is logged);
        False when it was lost."""
        res = RESOURCES[w.kind]
        # (the object's own apiVersion: the one the server serves it at)
        regarding = {"apiVersion": str(obj.get("apiVersion") or res.api_version),
                     "kind": res.kind, "name": w.name}
        if w.namespace:
            regarding["namespace"] = w.namespace
        # a Node's events carry its name for a uid, as the kubelet's do: what `kubectl
        # describe node` looks for (newer ones look for the real uid too)
        uid = w.name if res.kind == "Node" else (obj.get("metadata") or {}).get("uid")
        if uid:
            regarding["uid"] = str(uid)
        # named as client-go's recorder names them: the object's name and the time
        body = {"metadata": {"name": f"{w.name}.{time.time_ns():x}"}, "type": ev.type,
                "reason": ev.reason[:128], "note": ev.note[:1024],
                "action": "Allocate" if ev.type == "Normal" else "Check",
                "eventTime": micro_time(time.time()), "regarding": regarding,
                "reportingController": "rackroute.io/operator",
                "reportingInstance": self.instance[:128]}
        try:
            self.api.create(RESOURCES["Event"], body, w.namespace or "default")
        except (ApiError, OSError) as e:
            log.info("event=kube_event_lost object=%r error=%r", w.ref, str(e))
            return False
        return True
