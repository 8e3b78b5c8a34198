"""Connected UDP sockets follow their backend out (socket-level LB that translates a UDP
socket's connect()): when a backend leaves every UDP service entry of this node, the
sockets connected to it are closed through a `controller.kernel.udpsockets` port, so
their owners connect again and are balanced anew (kube-proxy clears such UDP conntrack
entries; a socket connected to the backend itself would keep sending to it).

The reconciler works in `finalize`, and sits before the datapath reconciler in the pass
so that its finalize runs after the datapath's: entries the datapath removed in either
of its phases (a backend gone from a service now, a whole service after its drain) are
both seen. It compares the programmed UDP peers (`controller.desired.sockets`) with
those of its last pass, starting from what the syncer adopted, so backends removed by
the first pass after a restart are handled too. A failure is reported as the
reconciler's error and the rest of the pass is untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from bpf.table import Service, ServiceKey
from controller.desired.sockets import gone_peers, udp_peers
from controller.kernel.udpsockets import UdpSocketPort
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.sockets")


class UdpSocketReconciler:
    name = "udp-sockets"

    def __init__(self, port: UdpSocketPort,
                 programmed: Callable[[], Mapping[ServiceKey, Service]]) -> None:
        """programmed: the service entries in the maps now (the syncer's view)."""
        self.port = port
        self.programmed = programmed
        self._last = udp_peers(programmed())
        self.closed = 0  # sockets closed so far

    def reconcile(self, ctx: PassContext) -> None:
        """Nothing before the datapath has written; see finalize."""

    def finalize(self, ctx: PassContext) -> None:
        now = udp_peers(self.programmed())
        gone = gone_peers(self._last, now)
        self._last = now
        if not gone:
            return
        peers = ",".join(sorted(f"{a}:{p}" for a, p in gone))
        try:
            n = self.port.close_connected(gone)
        except OSError as e:
            ctx.errors[self.name] = f"closing UDP sockets connected to {peers}: {e}"
            log.error("event=udp_sockets_error peers=%s error=%r", peers, str(e))
            return
        self.closed += n
        log.info("event=udp_sockets_closed peers=%s sockets=%d", peers, n)

    def close(self) -> None:
        """Holds nothing."""
