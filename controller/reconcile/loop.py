"""The agent's reconcile loop: on every store change (and on a periodic resync), run
each reconciler in order over the same snapshot.

Order is fixed: links/tunnels → routes → eBPF maps → BGP peers → BGP paths; then, in
reverse order, each reconciler's optional `finalize` (teardown that must wait: a
datapath entry is removed only after BGP has withdrawn its prefix). A reconciler
reads actual state through its port, applies the difference, and records what it
realized in the pass context (the datapath's readiness gate, for instance), even when
it failed part-way. One reconciler's exception is logged and never stops the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controller.reconcile.gate import OpenGate, ReadinessGate
from controller.store import Snapshot, Store

log = logging.getLogger("rackroute.loop")


@dataclass
class PassContext:
    """What one pass shares between reconcilers."""

    snap: Snapshot
    node: str
    resync: bool = False
    gate: ReadinessGate = field(default_factory=OpenGate)
    errors: dict[str, str] = field(default_factory=dict)
    requeue_after: float | None = None  # run another pass this many seconds from now

    def requeue(self, seconds: float) -> None:
        """Ask for another pass within `seconds` (the earliest request wins)."""
        seconds = max(0.0, seconds)
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds


class Reconciler(Protocol):
    name: str

    def reconcile(self, ctx: PassContext) -> None:
        """Make one concern of the world equal to the snapshot's desired state."""
        ...

    def close(self) -> None:
        """Release what the reconciler holds (processes, sockets); leave kernel state."""
        ...


class Loop:
    """Runs the reconcilers whenever the store changes, and every `resync` seconds."""

    def __init__(
        self, store: Store, node: str, reconcilers: Sequence[Reconciler], resync: float = 30.0
    ) -> None:
        self.store, self.node, self.reconcilers, self.resync = store, node, reconcilers, resync
        self.passes = 0
        self.last: PassContext | None = None
        # when the loop last went round (monotonic; None before it started): the agent's
        # liveness (controller.metrics.AgentProbes)
        self.alive_at: float | None = None

    def run_once(self, resync: bool = False) -> PassContext:
        self.alive_at = time.monotonic()
        ctx = PassContext(self.store.snapshot(), self.node, resync)
        for r in self.reconcilers:
            t0 = time.monotonic()
            try:
                r.reconcile(ctx)
            except Exception as e:  # one concern failing never stops the others
                ctx.errors[r.name] = repr(e)
                log.exception("event=reconcile_error reconciler=%s", r.name)
            dt = (time.monotonic() - t0) * 1000
            log.debug("event=reconciled reconciler=%s ms=%.1f", r.name, dt)
        for r in reversed(self.reconcilers):
            finalize = getattr(r, "finalize", None)
            if finalize is None:
                continue
            try:
                finalize(ctx)
            except Exception as e:
                ctx.errors[f"{r.name}.finalize"] = repr(e)
                log.exception("event=finalize_error reconciler=%s", r.name)
        self.passes += 1
        self.last = ctx
        self.alive_at = time.monotonic()
        return ctx

    def run(self, stop: threading.Event) -> None:
        next_resync = time.monotonic() + self.resync
        requeue_at: float | None = None
        while not stop.is_set():
            self.alive_at = time.monotonic()
            wake_at = min(next_resync, requeue_at) if requeue_at is not None else next_resync
            woke = self.store.wait(timeout=min(0.5, max(0.0, wake_at - time.monotonic())))
            if stop.is_set():
                break
            now = time.monotonic()
            due = now >= next_resync
            if woke or due or (requeue_at is not None and now >= requeue_at):
                ctx = self.run_once(resync=due)
                requeue_at = (None if ctx.requeue_after is None
                              else time.monotonic() + ctx.requeue_after)
                if due:
                    next_resync = time.monotonic() + self.resync

    def close(self) -> None:
        for r in reversed(self.reconcilers):
            try:
                r.close()
            except Exception:
                log.exception("event=close_error reconciler=%s", r.name)
