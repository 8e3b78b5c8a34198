"""Prune rr_pod_ifs: the pod veths the datapath forwards into, by interface index.

The CNI plugin records a pod's host veth when it attaches the programs (ADD) and removes
it before the veth goes (DEL). An entry can still outlive its veth: a DEL that never ran
(the runtime lost the sandbox, the node rebooted mid-teardown) or one that failed. The
map is an LRU, so a stale entry would in time be evicted; until then a new interface
given the same index would receive packets the programs meant for a pod. This
reconciler removes, on the agent's first pass and on every periodic resync, each entry
whose interface no longer exists in the agent's network namespace.

Order matters against a concurrent ADD (veth created, then recorded): the entries are
read first and the live interfaces after, so an entry recorded meanwhile is either not
seen or seen with its veth; either way it is kept.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from bgp.speaker import logfmt
from bpf.mapstore import MapPort, MapWriteError
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.datapath")


def live_ifindexes() -> set[int]:
    """The interface indexes of this network namespace (pyroute2)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {int(link["index"]) for link in ipr.get_links()}


class PodIfsReconciler:
    """Removes rr_pod_ifs entries of interfaces that are gone (see the module docstring)."""

    name = "pod-ifs"

    def __init__(self, pod_ifs: MapPort,
                 live: Callable[[], set[int]] = live_ifindexes) -> None:
        self.pod_ifs, self.live = pod_ifs, live
        self.pruned = 0  # entries removed since start
        self._first = True

    def stale(self) -> list[bytes]:
        """Keys of entries whose interface is gone (entries read before the links)."""
        keys = [k for k, _ in self.pod_ifs.items()]
        if not keys:
            return []
        live = self.live()
        return [k for k in keys if int.from_bytes(k, "little") not in live]

    def reconcile(self, ctx: PassContext) -> None:
        if not (ctx.resync or self._first):
            return
        self._first = False
        gone = self.stale()
        removed = 0
        for key in gone:  # one by one: an entry LRU-evicted meanwhile is no failure
            try:
                self.pod_ifs.delete_batch([key])
                removed += 1
            except MapWriteError as e:
                if e.errno != errno.ENOENT:
                    ctx.errors[self.name] = f"rr_pod_ifs: removing ifindex " \
                        f"{int.from_bytes(key, 'little')}: {e}"
        if removed:
            self.pruned += removed
            log.info(logfmt("pod_ifs_pruned", removed=removed,
                            ifindexes=",".join(str(int.from_bytes(k, "little"))
                                               for k in gone)))

    def close(self) -> None:
        """Close the map handle (the pinned map stays)."""
        close = getattr(self.pod_ifs, "close", None)
        if close is not None:
            close()
