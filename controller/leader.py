"""Leader election for the operator over a coordination.k8s.io Lease, as client-go does it.

rackroute has one writer of allocations. With several operator replicas (or two during a
rollout), the one holding the Lease writes; the others watch it and take over once it has
not been renewed for `duration` seconds. Expiry is judged by this process's own monotonic
clock since it last saw the Lease change, never by the timestamps in it, so clock skew
between nodes cannot make two leaders. Every write carries the resourceVersion it was
based on: of two candidates racing for an expired Lease, the server lets one through and
answers the other 409. A leader that cannot renew for `renew_deadline` stops writing before
anyone else may take over; on shutdown it gives the Lease up so a successor need not wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.sources.kubeapi import ApiError, KubeAPI, Resource, micro_time

log = logging.getLogger("rackroute.leader")
LEASE = Resource("Lease", "coordination.k8s.io/v1", "leases", True)


@dataclass
class _Seen:
    """The Lease as last read, and when (this process's monotonic clock) it changed."""

    holder: str
    renew_time: str
    resource_version: str
    transitions: int
    changed_at: float


class LeaderElector:
    """Holds (or waits for) the Lease `namespace/name` as `identity`."""

    def __init__(self, api: KubeAPI, namespace: str, identity: str,
                 name: str = "rackroute-operator", duration: float = 15.0,
                 renew_deadline: float = 10.0, retry: float = 2.0,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        if not renew_deadline < duration:
            raise ValueError("renew_deadline must be shorter than the lease duration")
        self.api, self.namespace, self.identity, self.name = api, namespace, identity, name
        self.duration, self.renew_deadline, self.retry = duration, renew_deadline, retry
        self.wall, self.mono = wall, mono
        self._seen: _Seen | None = None
        self._renewed_at: float | None = None  # monotonic time of our last good renewal

    def is_leader(self) -> bool:
        """Whether this process may write now: it holds the Lease and renewed it within
        the renew deadline (so nobody else can have taken it over yet)."""
        return (self._renewed_at is not None
                and self.mono() - self._renewed_at < self.renew_deadline)

    def _observe(self, lease: dict[str, Any]) -> _Seen:
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        renew = str(spec.get("renewTime") or "")
        rv = str(lease["metadata"]["resourceVersion"])
        seen = self._seen
        if seen is None or (seen.holder, seen.renew_time) != (holder, renew):
            seen = _Seen(holder, renew, rv, int(spec.get("leaseTransitions") or 0), self.mono())
        else:
            seen.resource_version = rv
        self._seen = seen
        return seen

    def _spec(self, acquire: bool, transitions: int) -> dict[str, Any]:
        now = micro_time(self.wall())
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": int(self.duration), "renewTime": now}
        if acquire:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = transitions
        return spec

    def step(self) -> bool:
        """Try once to acquire or renew; True while this process leads."""
        try:
            lease = self.api.get(LEASE, self.name, self.namespace)
        except ApiError as e:
            if e.status != 404:
                log.warning("event=lease_error op=get error=%r", str(e))
                return self.is_leader()
            try:
                self.api.create(LEASE, {"metadata": {"name": self.name},
                                        "spec": self._spec(True, 0)}, self.namespace)
            except ApiError as e2:
                log.info("event=lease_create_lost error=%r", str(e2))
                return self.is_leader()
            self._won()
            return True
        seen = self._observe(lease)
        mine = seen.holder == self.identity
        expired = not seen.holder or self.mono() - seen.changed_at > self.duration
        if not (mine or expired):
            self._renewed_at = None
            return False
        patch = {"metadata": {"resourceVersion": seen.resource_version},
                 "spec": self._spec(not mine, seen.transitions + (0 if mine else 1))}
        try:
            self.api.merge_patch(LEASE, self.name, patch, self.namespace)
        except ApiError as e:
            # 409: someone else wrote it since we read it; we try again from a new read
            log.info("event=lease_update_lost status=%d", e.status)
            return self.is_leader()
        if not mine:
            self._won()
        self._renewed_at = self.mono()
        return True

    def _won(self) -> None:
        self._renewed_at = self.mono()
        log.info("event=leader_elected lease=%s/%s identity=%s", self.namespace, self.name,
                 self.identity)

    def release(self) -> None:
        """Give the Lease up (if held), so a successor takes over at once."""
        if not self.is_leader():
            return
        try:
            lease = self.api.get(LEASE, self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                self.api.merge_patch(LEASE, self.name, {
                    "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": {"holderIdentity": None, "leaseDurationSeconds": 1}},
                    self.namespace)
                log.info("event=leader_released identity=%s", self.identity)
        except ApiError as e:
            log.warning("event=lease_error op=release error=%r", str(e))
        self._renewed_at = None

    def run(self, stop: threading.Event, changed: Callable[[bool], None]) -> None:
        """Keep trying (every `retry` seconds; a leader renews as often) until `stop`;
        `changed(leading)` is called when leadership starts or ends."""
        leading = False
        try:
            while not stop.is_set():
                try:
                    now = self.step()
                except Exception as e:  # the API server away: judged by the deadline
                    log.warning("event=lease_error error=%r", str(e))
                    now = self.is_leader()
                if now != leading:
                    leading = now
                    if not now:
                        log.warning("event=leader_lost identity=%s", self.identity)
                    changed(now)
                stop.wait(self.retry)
        finally:
            self.release()
            if leading:
                changed(False)
