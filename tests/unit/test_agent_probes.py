"""The agent's own probes on its metrics port: /readyz answers 503 until the first full
reconcile pass has completed, then 200 for good (later passes' errors do not flap it);
/healthz answers 200 while the reconcile loop comes round, 503 once it has been stuck
for longer than the stale limit; /metrics is served beside them."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgp.bfd_port import FakeBfd
from bgp.fake import FakeSpeaker
from controller.agent import Agent, AgentConfig, liveness_stale
from controller.metrics import AgentMetrics, AgentProbes, MetricsServer
from controller.reconcile.loop import Loop, PassContext
from controller.store import Store


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Flaky:
    """A reconciler that fails while `failing` is set, and can hang a pass."""

    name = "flaky"

    def __init__(self) -> None:
        self.failing = False
        self.hang = threading.Event()
        self.release = threading.Event()

    def reconcile(self, ctx: PassContext) -> None:
        if self.hang.is_set():
            self.release.wait(10)
        if self.failing:
            raise RuntimeError("transient")

    def close(self) -> None:
        self.release.set()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, Loop, Flaky, Clock]]:
    rec = Flaky()
    loop = Loop(Store(), "n1", [rec], resync=30.0)
    clock = Clock()
    server = AgentMetrics().serve(0, "127.0.0.1", AgentProbes.for_loop(loop, 90.0, clock))
    try:
        yield server, loop, rec, clock
    finally:
        rec.release.set()
        server.stop()


def test_readyz_after_the_first_pass_and_never_flapping(
        served: tuple[MetricsServer, Loop, Flaky, Clock]) -> None:
    server, loop, rec, _ = served
    assert server.port > 0
    assert get(server.port, "/readyz")[0] == 503
    rec.failing = True  # a first pass with errors is a completed pass still
    loop.run_once()
    assert get(server.port, "/readyz") == (200, "ok\n")
    assert loop.run_once().errors == {"flaky": "RuntimeError('transient')"}
    assert get(server.port, "/readyz")[0] == 200  # later errors: still ready
    status, body = get(server.port, "/metrics")
    assert status == 200 and "rackroute_reconcile_passes" in body


def test_healthz_while_the_loop_comes_round(
        served: tuple[MetricsServer, Loop, Flaky, Clock]) -> None:
    server, loop, rec, clock = served
    assert get(server.port, "/healthz")[0] == 200  # starting (waiting for the API server)
    loop.alive_at = clock.now
    clock.now += 90
    assert get(server.port, "/healthz")[0] == 200
    clock.now += 1  # not round for longer than the stale limit: stuck
    status, body = get(server.port, "/healthz")
    assert status == 503 and "stuck" in body


def test_the_loop_marks_itself_alive_and_a_hung_pass_does_not() -> None:
    rec = Flaky()
    loop = Loop(Store(), "n1", [rec], resync=30.0)
    probes = AgentProbes.for_loop(loop, stale=0.3)
    stop = threading.Event()
    t = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    t.start()
    try:
        time.sleep(0.6)
        assert probes.alive()  # idle, it still comes round (twice a second at least)
        rec.hang.set()
        loop.store.poke()
        time.sleep(1.0)
        assert not probes.alive()  # a pass hung: not round for 1 s
        rec.release.set()
        time.sleep(0.6)
        assert probes.alive()
    finally:
        stop.set()
        rec.release.set()
        t.join(timeout=5)


def test_the_agent_serves_its_probes_on_the_metrics_port(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    agent = Agent(AgentConfig(node="n1", manifests=tmp_path / "m", state_dir=tmp_path / "s",
                              resync=10.0),
                  factory=lambda instance: FakeSpeaker(), bfd_port=FakeBfd())
    assert agent.probes.stale == liveness_stale(10.0) == 60.0
    assert liveness_stale(30.0) == 90.0
    server = agent.metrics.serve(0, "127.0.0.1", agent.probes)
    try:
        assert get(server.port, "/readyz")[0] == 503
        agent.loop.run_once()
        assert get(server.port, "/readyz")[0] == 200
        assert get(server.port, "/healthz")[0] == 200
    finally:
        server.stop()
        agent.loop.close()
