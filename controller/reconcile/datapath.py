"""The eBPF service maps reconciler: desired service table → pinned maps, and the gate.

`reconcile` plans this node's table (controller.desired.services), writes what is new or
changed with batched map operations through a `bpf.sync.Syncer` and keeps entries that
are no longer desired; it then sets the pass's readiness gate: every service address of
the table is managed, and an address is confirmed once its entries are seen in the maps.
`finalize` (after BGP has withdrawn, since it runs in reverse order) deletes what is no
longer desired. Per-service problems land in `ctx.errors` as `datapath:<ns/name>`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address

from bpf.sync import Syncer
from bpf.table import Service, ServiceKey, validate
from controller.desired.services import PlanMemo, ServicePlan, plan_services
from controller.reconcile.gate import ConfirmedGate
from controller.reconcile.loop import PassContext

IPAddress = IPv4Address | IPv6Address
log = logging.getLogger("rackroute.datapath")


class DatapathReconciler:
    """Owns one Syncer (the map port); see the module docstring for the contract."""

    name = "datapath"

    def __init__(self, syncer: Syncer,
                 node_addresses: Sequence[IPAddress] | None = None,
                 drain: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 proxy_name: str = "") -> None:
        """node_addresses: where NodePorts listen; None = the Node object's addresses.

        drain: seconds an entry keeps serving after this node stopped advertising it (its
        last local endpoint of a Local service went away, or the service was deleted), so
        traffic the ToR still sends while it converges is served, not dropped."""
        self.syncer = syncer
        self.proxy_name = proxy_name  # services of another proxy are left out
        self.drain = drain
        self.clock = clock
        self._draining: dict[ServiceKey, float] = {}  # key -> serve the old entry until
        self.node_addresses = None if node_addresses is None else tuple(node_addresses)
        self.plan: ServicePlan | None = None
        self.errors: dict[ServiceKey, str] = {}
        self._confirmed: set[ServiceKey] = set()
        self._valid: set[ServiceKey] = set()
        self._memo = PlanMemo()  # unchanged services keep their Service objects
        self._checked: dict[ServiceKey, tuple[Service, str | None]] = {}

    def _addresses(self, ctx: PassContext) -> tuple[IPAddress, ...]:
        if self.node_addresses is not None:
            return self.node_addresses
        node = ctx.snap.nodes.get(ctx.node)
        return node.addresses if node is not None else ()

    def reconcile(self, ctx: PassContext) -> None:
        plan = plan_services(ctx.snap, ctx.node, self._addresses(ctx), self._memo,
                             self.proxy_name)
        self.plan = plan
        desired = plan.table
        managed = plan.addresses()
        ctx.gate = ConfirmedGate(managed, frozenset())  # closed until confirmed below
        for svc, msgs in plan.problems.items():
            ctx.errors[f"datapath:{svc}"] = "; ".join(msgs)
            log.warning("event=service_problem service=%s problems=%r", svc, msgs)

        actual = self._repaired() if ctx.resync else self.syncer.programmed()
        errors: dict[ServiceKey, str] = {}
        want: dict[ServiceKey, Service] = {}
        checked: dict[ServiceKey, tuple[Service, str | None]] = {}
        for k, s in desired.items():
            prev = self._checked.get(k)
            why = prev[1] if prev is not None and prev[0] is s else validate(k, s)
            checked[k] = (s, why)
            if why is None:
                want[k] = s
            else:
                errors[k] = why
                if k in actual:  # keep serving the old entry until finalize
                    want[k] = actual[k]
        self._checked = checked
        self._hold_draining(want, actual, ctx)
        for k, s in actual.items():
            want.setdefault(k, s)  # no longer desired: deleted in finalize, not now
        res = self.syncer.sync(want)
        errors.update(res.errors)
        self.errors = errors
        self._valid = {k for k in desired if k not in errors}
        for k, why in errors.items():
            name = desired[k].name if k in desired else str(k)
            ctx.errors[f"datapath:{name or k}"] = why
            log.warning("event=service_error key=%s service=%s error=%r", k, name, why)
        ctx.gate = ConfirmedGate(managed, self._confirm(desired, errors, ctx.resync))

    def _repaired(self) -> dict[ServiceKey, Service]:
        """On a resync: what is programmed, read again from the maps when an entry the
        syncer wrote is no longer there (deleted behind its back, the maps replaced), so
        this pass writes it again instead of closing the gate on it for good."""
        actual = self.syncer.programmed()
        there = self.syncer.confirmed(actual)
        if len(there) == len(actual):
            return actual
        gone = sorted(str(k) for k in actual if k not in there)
        log.warning("event=datapath_drift missing=%d first=%s action=readopt", len(gone),
                    ",".join(gone[:3]))
        return self.syncer.adopt()

    def _hold_draining(self, want: dict[ServiceKey, Service],
                       actual: Mapping[ServiceKey, Service], ctx: PassContext) -> None:
        """Keep serving local-only entries whose last local backend just went away."""
        now = self.clock()
        for k, new in list(want.items()):
            old = actual.get(k)
            losing = (new.local_only and old is not None
                      and any(b.local for b in old.eligible())
                      and not any(b.local for b in new.eligible()))
            if not losing:
                self._draining.pop(k, None)
                continue
            until = self._draining.setdefault(k, now + self.drain)
            if now < until:
                assert old is not None
                want[k] = old
                ctx.requeue(until - now)
                if until - now == self.drain:
                    log.info("event=service_draining key=%s service=%s seconds=%.1f",
                             k, new.name, self.drain)

    def _confirm(self, desired: Mapping[ServiceKey, Service], errors: Mapping[ServiceKey, str],
                 recheck: bool) -> frozenset[IPAddress]:
        """Addresses with at least one entry in the maps and none still missing (entries
        that failed are reported and do not hold the others back)."""
        if recheck:
            self._confirmed.clear()
        todo = [k for k in desired if k not in self._confirmed and k not in errors]
        self._confirmed |= self.syncer.confirmed(todo)
        seen: dict[IPAddress, bool] = {}
        for k in desired:
            if k in errors:
                continue
            ok = k in self._confirmed
            seen[k.vip] = seen.get(k.vip, True) and ok
        return frozenset(a for a, ok in seen.items() if ok)

    def finalize(self, ctx: PassContext) -> None:
        """Delete the entries no longer desired once they have drained (BGP has withdrawn
        them by now; the ToR may still send a little traffic while it converges)."""
        if self.plan is None:
            return
        actual = self.syncer.programmed()
        if all(k in self._valid for k in actual):
            return
        now = self.clock()
        target = dict(self.plan.table)
        for k, s in actual.items():
            if k in self._valid or k in self.plan.table:
                continue
            until = self._draining.setdefault(k, now + self.drain)
            if now < until:
                target[k] = s
                ctx.requeue(until - now)
            elif k not in self.plan.table:
                self._draining.pop(k, None)
        for k, until in self._draining.items():  # local backends still draining
            if now < until and k in actual:
                target[k] = actual[k]
        res = self.syncer.sync(target)
        gone = set(actual) - set(self.syncer.programmed())
        self._confirmed -= gone
        log.info("event=services_deleted count=%d deletes=%d", len(gone), res.deletes)

    def close(self) -> None:
        for port in (self.syncer.maps.svc, self.syncer.maps.backend, self.syncer.maps.maglev):
            closer = getattr(port, "close", None)
            if callable(closer):
                closer()
