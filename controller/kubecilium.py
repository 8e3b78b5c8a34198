"""Warning Events on Cilium objects (read with --watch-cilium-crds).

rackroute never writes a cilium.io object: no status, no conditions (Cilium itself may
still run during a migration, and the objects are its). What the operator would report
on one of them instead goes into a Warning Event regarding it, and into the log, once per
distinct problem: its parse errors, a rackroute object of the same kind and name that
shadows it (controller/cilium.py), and the conditions showing a problem that a rackroute
object would carry (MissingPeerConfigs, PoolConflict, ...). A problem that goes away
and comes back is told again; an operator that starts (or takes the lease) tells what it
finds once more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controller.cilium import cilium_objects, is_cilium, is_clash
from controller.desired.cluster import Allocations
from controller.desired.lbipam import POOL_CONFLICT
from controller.kubestatus import Problem, desired_conditions
from controller.sources.kubeapi import RESOURCES, ApiError, KubeAPI, Obj
from controller.store import Snapshot

log = logging.getLogger("rackroute.operator")

NAME_CLASH = "NameClash"  # the reason of a Cilium object a rackroute one shadows
INVALID = "InvalidManifest"  # of one the parser refused (as on rackroute objects)
# the conditions whose status True is a problem (the others count or say all is well)
PROBLEM_CONDITIONS = frozenset({"NoMatchingNode", "MissingPeerConfigs",
                                "ConflictingClusterConfig", "MissingAuthSecret",
                                POOL_CONFLICT})


def problems(snap: Snapshot, alloc: Allocations) -> set[Problem]:
    """What is wrong with Cilium objects now (pure): their parse errors and name clashes
    (the snapshot's errors), and the conditions showing a problem that the operator would
    report on them (as `desired_conditions` gives them, by model ref)."""
    conditions = desired_conditions(snap, alloc) if cilium_objects(snap) else {}
    out: set[Problem] = set()
    for err in snap.errors:
        if is_cilium(err.ref):
            out.add(Problem(err.ref, NAME_CLASH if is_clash(err) else INVALID,
                            "; ".join(err.messages)))
    for ref, meta in cilium_objects(snap).items():
        for c in conditions.get(ref, ()):
            if c.get("type") in PROBLEM_CONDITIONS and c.get("status") == "True":
                out.add(Problem(meta.written_ref, str(c["type"]),
                                str(c.get("message") or c.get("reason") or "")))
    return out


def regarding(api: KubeAPI) -> Callable[[Problem], Obj | None]:
    """For KubeStatusWriter.tell: a Cilium object's problem is about the object as the
    server holds it (read for its uid, by which `kubectl describe` finds its events, and
    for the version the server serves it at); None while it cannot be read (told on a
    later pass). Any other object's is told without reading it ({})."""

    def read(p: Problem) -> Obj | None:
        kind, _, name = p.ref.partition(" ")
        if not is_cilium(p.ref):
            return {}
        for res in RESOURCES[kind].versions():
            try:
                return api.get(res, name)
            except ApiError as e:
                if e.status != 404:
                    log.info("event=cilium_event_deferred object=%r error=%r", p.ref, str(e))
                    return None
            except OSError as e:
                log.info("event=cilium_event_deferred object=%r error=%r", p.ref, str(e))
                return None
        return None  # gone meanwhile: its problem goes with it from the next snapshot

    return read
