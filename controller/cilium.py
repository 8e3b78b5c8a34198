"""Cilium-spelled objects (CiliumBGPClusterConfig, CiliumLoadBalancerIPPool, ...), read as
rackroute's own kinds and never written.

A rackroute object and a Cilium object of the same kind and name (BGPClusterConfig `tor`
and CiliumBGPClusterConfig `tor`) would be one object of the model: the rackroute object
wins, and the Cilium one is ignored with a problem naming both (`shadowed`, which the
manifest directory and the kube source both apply). Whether or not the rackroute one
parses: a broken rackroute object is never silently stood in for by a Cilium one.

The operator writes no status to a Cilium object (Cilium itself may still run during a
migration): its problems are told in Warning Events instead (controller/kubecilium.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

from controller.model.meta import Meta
from controller.model.parse import CILIUM_KINDS
from controller.store import ObjectError, Snapshot

_WINS = "has the same kind and name, and the rackroute.io object wins"


def is_cilium(ref: str) -> bool:
    """Whether `Kind [ns/]name` names a Cilium-spelled object."""
    return ref.partition(" ")[0] in CILIUM_KINDS


def model_ref(ref: str) -> str:
    """The model's ref of an object's: `CiliumBGPClusterConfig tor` -> `BGPClusterConfig
    tor` (a rackroute object's is its own)."""
    kind, _, key = ref.partition(" ")
    return f"{CILIUM_KINDS.get(kind, kind)} {key}"


def shadowed(refs: Iterable[str]) -> dict[str, str]:
    """Of the objects `refs` names (each `Kind [ns/]name`, the kind as written), each
    Cilium-spelled one whose model kind and name a rackroute object has too -> that
    rackroute object's ref."""
    present = set(refs)
    return {r: model_ref(r) for r in present if is_cilium(r) and model_ref(r) in present}


def clash_error(ref: str, ours: str) -> ObjectError:
    """The problem of the Cilium object `ref` that the rackroute object `ours` shadows."""
    return ObjectError(ref, (f"{ref}: ignored: {ours} {_WINS} (rename or delete one of "
                             "them)",))


def is_clash(err: ObjectError) -> bool:
    """Whether `err` is a `clash_error`."""
    return any(_WINS in m for m in err.messages)


def cilium_objects(snap: Snapshot) -> dict[str, Meta]:
    """Model ref (`LoadBalancerIPPool blue`) -> the metadata of each object of the snapshot
    that a Cilium object spells (its `written_ref`: `CiliumLoadBalancerIPPool blue`)."""
    metas = chain((o.meta for o in snap.cluster_configs.values()),
                  (o.meta for o in snap.peer_configs.values()),
                  (o.meta for o in snap.advertisements.values()),
                  (o.meta for o in snap.overrides.values()),
                  (o.meta for o in snap.pools.values()))
    return {m.ref: m for m in metas if m.written_kind}
