"""BFD with the node's BGP peers: one reconciler, the BfdPort (bgp/bfd_port.py) with the
responder process as its real adapter and an in-memory fake.

Each pass resolves the node's peers (as the BGP reconciler does) and hands the port the
sessions `controller.desired.bfd.desired_bfd` plans: new peers get a session, removed ones
are announced AdminDown and dropped, and with none left the responder stops. A new
peer's session starts once its BGP session is Established: FRR's bgpd registers the
peer with its bfdd again when the session comes up, bfdd starts that session anew, and a
session already Up with us would go Down on its first packet and reset the BGP session
(seen on FRR 8.4). A session the responder already runs (a restarted agent's) is kept. A session's
state changes are logged; `sessions()` is what the status, `rackroute bgp peers` and the
metrics show. A responder that cannot run (port 3784 taken, no Python) is an error of
this pass, retried on the next; BGP itself is untouched by it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bgp.bfd import Settings
from bgp.bfd_port import BfdPort, PeerBfd
from bgp.types import IPAddress
from controller.desired.bfd import desired_bfd
from controller.desired.bgpconfig import resolve_node
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.bfd")


class BfdReconciler:
    name = "bfd"

    def __init__(self, port: BfdPort,
                 established: Callable[[], frozenset[IPAddress]] | None = None) -> None:
        """`established`: the peers whose BGP session is Established now (None: start
        every session at once)."""
        self.port = port
        self.established = established
        self.started: set[IPAddress] = set()
        self.waiting: frozenset[IPAddress] = frozenset()  # planned, BGP not up yet
        self._last: dict[IPAddress, str] = {}

    def reconcile(self, ctx: PassContext) -> None:
        node = ctx.snap.nodes.get(ctx.node)
        want: dict[IPAddress, Settings] = {}
        if node is not None:
            want = desired_bfd(resolve_node(ctx.snap, node))
        if self.established is not None:
            ready = self.established() | self.port.running() | self.started
            self.waiting = frozenset(want) - ready
            want = {p: s for p, s in want.items() if p in ready}
        self.started = set(want)
        try:
            self.port.set_sessions(want)
        except OSError as e:
            ctx.errors[self.name] = f"BFD responder: {e}"
            log.error("event=bfd_responder_error error=%r", str(e))
            return
        self._log_changes()

    def _log_changes(self) -> None:
        now = {p: s.state for p, s in self.port.sessions().items()}
        for peer, state in sorted(now.items(), key=lambda kv: str(kv[0])):
            if self._last.get(peer) != state:
                log.info("event=bfd_session peer=%s state=%s", peer, state)
        self._last = now

    def sessions(self) -> dict[IPAddress, PeerBfd]:
        return self.port.sessions()

    def close(self) -> None:
        self.port.close()
