"""Graceful restart: the speaker dies (kill -9) while a poller reads the ToR's kernel routes
every 20 ms; the routes must never disappear. After a restart with a changed desired set,
paths no longer desired are gone after End-of-RIB and desired ones stay. A restarted ToR
gets every path again.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time

import pytest

from bgp.types import Feature, path_from_texts
from controller.lab.netns import wait_for
from tests.integration.bgp.conftest import Topo, global_config, peer_spec
from tests.integration.bgp.test_tor import LB, LB2, POD, established, kernel_bgp

pytestmark = pytest.mark.timeout(120)


class KernelPoller:
    """Reads the ToR's kernel table every 20 ms and records when watched prefixes are absent."""

    def __init__(self, topo: Topo, watched: set[str]) -> None:
        self.topo, self.watched = topo, watched
        self.samples = 0
        self.missing: list[tuple[float, set[str]]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            have = set(kernel_bgp(self.topo))
            self.samples += 1
            gone = self.watched - have
            if gone:
                self.missing.append((time.monotonic(), gone))
            self._stop.wait(0.02)

    def __enter__(self) -> KernelPoller:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)


def no_stale(topo: Topo) -> bool:
    routes = topo.tor.bgp_routes()
    return bool(routes) and not any(p.get("stale") for ps in routes.values() for p in ps)


def connections(topo: Topo, address: str) -> int:
    return int(topo.tor.neighbors().get(address, {}).get("connectionsEstablished", 0))


def up(topo: Topo, state: str | None = None, paths: frozenset[object] = frozenset()):  # noqa: ANN201
    node = topo.nodes[0]
    topo.tor_neighbor(node)
    s = topo.make_speaker(node, state)
    if Feature.GRACEFUL_RESTART not in s.features:
        pytest.skip(f"{topo.kind} has no graceful restart")
    s.start(global_config(node))
    s.set_peers([peer_spec()])
    s.set_paths({POD, LB})
    return node, s


def test_kill9_speaker_routes_never_leave_tor_kernel(topo: Topo) -> None:
    node, s = up(topo)
    established(topo, node.addr4)
    wait_for(lambda: {"10.244.1.0/24", "198.51.100.10/32"} <= set(kernel_bgp(topo)), 10,
             what="routes installed")
    pid = s.pid  # type: ignore[attr-defined]
    with KernelPoller(topo, {"10.244.1.0/24", "198.51.100.10/32"}) as poller:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: s.pid not in (None, pid), 15,  # type: ignore[attr-defined]
                 what="speaker restarted by its supervisor")
        wait_for(lambda: connections(topo, node.addr4) >= 2, 20, what="session re-established")
        wait_for(lambda: no_stale(topo), 20, what="End-of-RIB clears the stale flags")
        time.sleep(1.0)
    assert poller.samples > 50
    assert poller.missing == [], f"routes vanished from the ToR kernel: {poller.missing[:3]}"
    assert s.restarts >= 1  # type: ignore[attr-defined]


def test_agent_restart_sweeps_undesired_after_end_of_rib(topo: Topo) -> None:
    state = tempfile.mkdtemp(prefix=f"rrb-{topo.kind[:2]}-")
    topo.lab.defer(lambda: shutil.rmtree(state, ignore_errors=True))
    node, s1 = up(topo, state)
    established(topo, node.addr4)
    wait_for(lambda: {"10.244.1.0/24", "198.51.100.10/32"} <= set(kernel_bgp(topo)), 10,
             what="routes installed")
    pid = s1.pid  # type: ignore[attr-defined]
    with KernelPoller(topo, {"10.244.1.0/24"}) as poller:
        # the agent crashes, leaving its speaker; then the speaker is killed too
        s1.detach()  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        s2 = topo.make_speaker(node, state)
        s2.start(global_config(node))
        s2.set_peers([peer_spec()])
        s2.set_paths({POD, LB2})  # LB is no longer desired
        wait_for(lambda: connections(topo, node.addr4) >= 2, 20, what="session re-established")
        wait_for(lambda: set(kernel_bgp(topo)) == {"10.244.1.0/24", "198.51.100.11/32"}, 20,
                 what="LB swept after End-of-RIB, LB2 added")
        wait_for(lambda: no_stale(topo), 20, what="no stale paths")
    assert poller.samples > 20
    assert poller.missing == [], f"a desired route vanished: {poller.missing[:3]}"
    assert "198.51.100.10/32" not in topo.tor.bgp_routes()


def test_tor_restart_sessions_come_back_and_paths_readvertised(topo: Topo) -> None:
    node, s = up(topo)
    established(topo, node.addr4)
    wait_for(lambda: {"10.244.1.0/24", "198.51.100.10/32"} <= set(kernel_bgp(topo)), 10,
             what="routes installed")
    topo.tor.stop(signal.SIGKILL)
    for dst in kernel_bgp(topo):  # a restarted router starts with an empty table
        topo.tor_ns.ip("route", "del", dst)
    assert "10.244.1.0/24" not in kernel_bgp(topo)
    topo.tor.start()
    topo.tor_neighbor(node)
    established(topo, node.addr4, timeout=30)
    wait_for(lambda: {"10.244.1.0/24", "198.51.100.10/32"} <= set(kernel_bgp(topo)), 15,
             what="paths re-advertised to the restarted ToR")
    extra = path_from_texts("198.51.100.30/32")
    s.set_paths({POD, LB, extra})
    wait_for(lambda: "198.51.100.30/32" in kernel_bgp(topo), 10, what="new path after restart")
