"""The store: an immutable snapshot of every object, and a coalescing "dirty" signal.

Sources build a new Snapshot and `publish` it; consumers `wait` for the signal and read
the latest snapshot. The signal is a size-1 queue, so a burst of changes becomes one pass.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from controller.model.crds import (
    BGPAdvertisement,
    BGPClusterConfig,
    BGPNodeConfigOverride,
    BGPPeerConfig,
    ClusterNetworkConfig,
    LoadBalancerIPPool,
    NodeNetwork,
)
from controller.model.k8s import EndpointSlice, Node, Secret, Service
from controller.model.policy import Namespace, NetworkPolicy, Pod

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectError:
    """A manifest problem: which object (or file) and every message about it."""

    ref: str
    messages: tuple[str, ...]
    generation: int = 0  # the object's metadata.generation as read (0: none known)


def _ro(d: dict[str, T]) -> Mapping[str, T]:
    return MappingProxyType(d)


@dataclass(frozen=True)
class Snapshot:
    """Every parsed object keyed by `ns/name` (namespaced) or `name`."""

    nodes: Mapping[str, Node] = field(default_factory=dict)
    services: Mapping[str, Service] = field(default_factory=dict)
    slices: Mapping[str, EndpointSlice] = field(default_factory=dict)
    secrets: Mapping[str, Secret] = field(default_factory=dict)
    cluster_configs: Mapping[str, BGPClusterConfig] = field(default_factory=dict)
    peer_configs: Mapping[str, BGPPeerConfig] = field(default_factory=dict)
    advertisements: Mapping[str, BGPAdvertisement] = field(default_factory=dict)
    overrides: Mapping[str, BGPNodeConfigOverride] = field(default_factory=dict)
    pools: Mapping[str, LoadBalancerIPPool] = field(default_factory=dict)
    node_networks: Mapping[str, NodeNetwork] = field(default_factory=dict)
    pods: Mapping[str, Pod] = field(default_factory=dict)
    namespaces: Mapping[str, Namespace] = field(default_factory=dict)
    network_policies: Mapping[str, NetworkPolicy] = field(default_factory=dict)
    network_config: ClusterNetworkConfig | None = None
    errors: tuple[ObjectError, ...] = ()
    revision: int = 0
    # `Kind [ns/]name` -> the status conditions the object carries (the kube source reads
    # them, so the operator writes only what differs; a manifest directory has none)
    conditions: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)

    @staticmethod
    def build(
        objects: Iterable[object], errors: Iterable[ObjectError] = (), revision: int = 0,
        conditions: Mapping[str, tuple[Mapping[str, Any], ...]] | None = None,
    ) -> Snapshot:
        """Sort parsed objects into their collections (later duplicates win)."""
        buckets: dict[type, dict[str, Any]] = {t: {} for t in _FIELDS}
        net: ClusterNetworkConfig | None = None
        for obj in objects:
            if isinstance(obj, ClusterNetworkConfig):
                if obj.meta.name == "default" or net is None:
                    net = obj
                continue
            bucket = buckets.get(type(obj))
            if bucket is not None:
                bucket[obj.meta.key] = obj  # type: ignore[attr-defined]
        kw = {name: _ro(buckets[t]) for t, name in _FIELDS.items()}
        return Snapshot(**kw, network_config=net, errors=tuple(errors), revision=revision,
                        conditions=_ro(dict(conditions or {})))

    def errors_of(self, kind: str) -> tuple[ObjectError, ...]:
        """The errors of the objects of `kind` that did not parse (a last good version, if
        the source kept one, stands in the snapshot meanwhile)."""
        return tuple(e for e in self.errors if e.ref.startswith(f"{kind} "))

    def generation(self, ref: str) -> int:
        """metadata.generation of the parsed object `Kind [ns/]name` (0: none here)."""
        kind, _, key = ref.partition(" ")
        net = self.network_config
        if net is not None and net.meta.ref == ref:
            return net.meta.generation
        for name in _FIELDS.values():
            obj = getattr(self, name).get(key)
            if obj is not None and obj.meta.kind == kind:
                return int(obj.meta.generation)
        return 0

    def slices_of(self, service_key: str) -> list[EndpointSlice]:
        """EndpointSlices that belong to the service `ns/name`."""
        return [s for s in self.slices.values() if s.service_key == service_key]


_FIELDS: dict[type, str] = {
    Node: "nodes",
    Service: "services",
    EndpointSlice: "slices",
    Secret: "secrets",
    BGPClusterConfig: "cluster_configs",
    BGPPeerConfig: "peer_configs",
    BGPAdvertisement: "advertisements",
    BGPNodeConfigOverride: "overrides",
    LoadBalancerIPPool: "pools",
    NodeNetwork: "node_networks",
    Pod: "pods",
    Namespace: "namespaces",
    NetworkPolicy: "network_policies",
}


class Store:
    """Holds the latest snapshot; `wait` returns when a newer one may be there."""

    def __init__(self, initial: Snapshot | None = None) -> None:
        self._lock = threading.Lock()
        self._snap = initial or Snapshot()
        self._dirty: queue.Queue[None] = queue.Queue(maxsize=1)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snap

    def publish(self, snap: Snapshot) -> None:
        with self._lock:
            self._snap = snap
        self.poke()

    def poke(self) -> None:
        """Mark dirty (coalesces: several pokes before a wait are one wake-up)."""
        with contextlib.suppress(queue.Full):
            self._dirty.put_nowait(None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until dirty (True) or the timeout passes (False)."""
        try:
            self._dirty.get(timeout=timeout)
            return True
        except queue.Empty:
            return False
