"""The node's masquerade: one reconciler over a MasqueradePort.

Each pass plans with `controller.desired.masquerade.plan_masquerade` and applies it when
it differs from what the port last applied, or (on a resync) from what the kernel holds
now, so a table deleted or edited by hand comes back. The port is made on the first pass
that wants a masquerade: a node that never needs one never runs nft. A plan that goes
away removes the table. A failure (no nft) is this pass's error, retried on the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controller.desired.masquerade import MasqPlan, plan_masquerade
from controller.kernel.masquerade import MasqueradePort
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.masquerade")


class MasqueradeReconciler:
    name = "masquerade"

    def __init__(self, make: Callable[[], MasqueradePort],
                 routing_mode: str | None = None) -> None:
        """`make`: the port, made when first needed; `routing_mode`: the agent's pinned
        routing mode (else the RackrouteConfig's)."""
        self.make, self.routing_mode = make, routing_mode
        self.port: MasqueradePort | None = None
        self.applied: MasqPlan | None = None

    def reconcile(self, ctx: PassContext) -> None:
        want = plan_masquerade(ctx.snap, ctx.node, self.routing_mode)
        if self.port is None:
            if want is None:
                return
            self.port = self.make()
        try:
            if ctx.resync:
                self.applied = self.port.current()
            if want == self.applied:
                return
            self.port.apply(want)
        except OSError as e:
            ctx.errors[self.name] = str(e)
            log.error("event=masquerade_error error=%r", str(e))
            return
        self.applied = want
        if want is None:
            log.info("event=masquerade_off")
        else:
            log.info("event=masquerade_on sources=%s exempt=%s",
                     ",".join(map(str, want.sources)), ",".join(map(str, want.exempt)))

    def close(self) -> None:
        """Nothing to release: the table stays (a restarting agent never cuts traffic)."""
