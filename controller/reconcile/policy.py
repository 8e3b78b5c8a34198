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
  from the API server);
- a local pod record that does not read.

A pod of this node whose status has no address yet is compiled with the addresses the
CNI plugin recorded for it (controller/desired/localpods.py), and its record is
acknowledged once the maps hold its policy: the plugin's ADD waits for that, so the pod's
containers never run unguarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from bgp.speaker import logfmt
from bgp.types import IPAddress
from bpf.policy import PolicyMaps
from controller.cni.podrecords import PodRecord
from controller.desired.localpods import with_local_addresses
from controller.desired.policy import EndpointPolicy, compile_policies
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.policy")


def node_addresses() -> set[IPAddress]:
    """Every address of this (the node's) network namespace (pyroute2)."""
    import ipaddress

    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {ipaddress.ip_address(str(a.get_attr("IFA_ADDRESS"))) for a in ipr.get_addr()
                if a.get_attr("IFA_ADDRESS")}


class LocalPods(Protocol):
    """The CNI plugin's records of this node's pods (controller/cni/podrecords.py holds
    the real adapter, PodRecordDir; FakeLocalPods the fake)."""

    def records(self) -> tuple[list[PodRecord], list[str]]:
        """The readable records, and a message for each unreadable one."""
        ...

    def acknowledge(self, keys: Iterable[str]) -> None:
        """Tell the plugin these records' pods are under their policy."""
        ...

    def acknowledged(self, key: str) -> bool:
        ...


class FakeLocalPods:
    """LocalPods in memory."""

    def __init__(self, records: Iterable[PodRecord] = ()) -> None:
        self.held = {r.key: r for r in records}
        self.bad: dict[str, str] = {}  # key -> why it does not read
        self.ready: set[str] = set()

    def add(self, rec: PodRecord) -> None:
        self.held[rec.key] = rec
        self.ready.discard(rec.key)

    def remove(self, key: str) -> None:
        self.held.pop(key, None)
        self.ready.discard(key)

    def records(self) -> tuple[list[PodRecord], list[str]]:
        return ([self.held[k] for k in sorted(self.held)],
                [f"pod record {k}: {why}" for k, why in sorted(self.bad.items())])

    def acknowledge(self, keys: Iterable[str]) -> None:
        self.ready.update(k for k in keys if k in self.held)

    def acknowledged(self, key: str) -> bool:
        return key in self.ready


class PolicyReconciler:
    name = "policy"

    def __init__(self, maps: PolicyMaps,
                 addresses: Callable[[], set[IPAddress]] = node_addresses,
                 local: LocalPods | None = None) -> None:
        """addresses: the node's own (its traffic to and from its pods always passes);
        local: the CNI plugin's records of new pods (None: pods by their status only)."""
        self.maps, self.addresses, self.local = maps, addresses, local
        self.endpoints = 0  # pods under policy after the last pass
        # what the maps were last made to hold (None: unknown): a pass that plans the same
        # reads and writes nothing, but a resync makes them equal again whatever changed
        self._synced: tuple[Mapping[str, EndpointPolicy], set[IPAddress]] | None = None

    def reconcile(self, ctx: PassContext) -> None:
        snap = ctx.snap
        pods = list(snap.pods.values())
        matched: list[str] = []
        errors: list[str] = []
        if self.local is not None:
            records, unread = self.local.records()
            errors.extend(unread)
            pods, matched = with_local_addresses(pods, records, ctx.node)
        plan = compile_policies(snap.network_policies.values(), pods, snap.namespaces,
                                ctx.node)
        errors.extend(f"NetworkPolicy {key}: {msg}" for key, msg in plan.problems)
        # a policy that does not parse (the kube source keeps its last good version, if
        # any): said where the node's problems are read, since no operator reads policies
        errors.extend(f"{e.ref}: {'; '.join(e.messages)}"
                      for e in snap.errors_of("NetworkPolicy"))
        addresses = self.addresses()
        map_errors: list[str] = []
        if ctx.resync or self._synced != (plan.endpoints, addresses):
            map_errors = self.maps.sync_node(addresses)
            map_errors.extend(self.maps.sync(plan.endpoints))
            self._synced = None if map_errors else (dict(plan.endpoints), addresses)
        errors.extend(map_errors)
        if self.local is not None and matched and not map_errors:
            # what the maps refused would leave a pod unguarded: its ADD waits, and fails
            self.local.acknowledge(matched)
        if len(plan.endpoints) != self.endpoints:
            log.info(logfmt("policy_endpoints", pods=len(plan.endpoints)))
        self.endpoints = len(plan.endpoints)
        if errors:
            ctx.errors[self.name] = "; ".join(errors)

    def close(self) -> None:
        """Close the maps' handles (the pinned maps and the programs stay)."""
        for port in (self.maps.eps, self.maps.rules, self.maps.node, self.maps.drops):
            close = getattr(port, "close", None)
            if close is not None:
                close()
