"""Whole-agent graceful restart: the agent process dies (kill -9) and a new one starts.

The agent (`rackroute agent`, a process in the node namespace) advertises its plan to an
FRR ToR with graceful restart on. It is killed with SIGKILL (its speaker keeps running),
one service is deleted from the manifests, and a new agent starts on the same state
directory. A poller reads the ToR's kernel routes every 20 ms the whole time: the routes
that are still desired never disappear, and the deleted service's route is gone once the
new speaker has sent End-of-RIB. The new agent took over the leftover speaker: both
adapters replace it (kill, start a new one, replay the paths before End-of-RIB).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from controller.lab.leftovers import kill_leftover_speakers
from controller.lab.netns import run_cmd, wait_for
from controller.operator import Operator
from controller.sources.files import ManifestDir
from tests.integration.agent.test_agent_tor import RACKROUTE, manifests
from tests.integration.bgp.conftest import Topo, build_topo

POD = "10.244.0.0/24"  # n1's pod CIDR
WEB = "198.51.100.0/32"  # deleted while the agent is down
LOCAL = "198.51.100.1/32"  # Local service with its endpoint on n1
KEPT = {POD, LOCAL}
PIDFILES = {"gobgp": "gobgpd.pid", "exabgp": "exabgp.pid"}


@dataclass
class Agent:
    topo: Topo
    kind: str
    tmp: Path
    root: Path
    state: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> subprocess.Popen[bytes]:
        n = self.topo.nodes[0]
        log = open(self.tmp / f"agent-{len(self.procs)}.log", "wb")  # noqa: SIM115
        try:
            p = n.ns.popen(
                [*RACKROUTE, "agent", "--node", "n1", "--manifests", str(self.root),
                 "--speaker", self.kind, "--state-dir", str(self.state),
                 "--metrics-port", "0"],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).parents[3]))
        finally:
            log.close()
        self.procs.append(p)
        return p

    def log(self, i: int) -> str:
        return (self.tmp / f"agent-{i}.log").read_text(errors="replace")

    def speaker_pid(self) -> int | None:
        for f in self.state.rglob(PIDFILES[self.kind]):
            try:
                return int(f.read_text().strip())
            except (OSError, ValueError):
                continue
        return None


@pytest.fixture(params=["gobgp", "exabgp"])
def agent(request: pytest.FixtureRequest) -> Iterator[Agent]:
    kind = str(request.param)
    topo = build_topo(kind, 1, tag="rrg")
    tmp = Path(tempfile.mkdtemp(prefix="rrg-agent-"))
    a = Agent(topo, kind, tmp, tmp / "manifests", tmp / "state")
    try:
        a.root.mkdir()
        manifests(a.root, topo)
        Operator(a.root).reconcile(ManifestDir(a.root).load())
        topo.tor_neighbor(topo.nodes[0])
        yield a
    finally:
        for p in a.procs:  # only the agents this test started
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        kill_leftover_speakers(tmp)
        topo.lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def kernel_bgp(tor: str) -> set[str]:
    out = run_cmd(["ip", "-n", tor, "-j", "route", "show", "proto", "bgp"], timeout=10).stdout
    return {r["dst"] if "/" in r["dst"] else r["dst"] + "/32" for r in json.loads(out or "[]")}


class Poller:
    """Reads the ToR's kernel BGP routes every 20 ms; records every sample."""

    def __init__(self, tor: str) -> None:
        self.tor = tor
        self.samples: list[tuple[float, set[str]]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), kernel_bgp(self.tor)))
            self._stop.wait(0.02)

    def missing(self, watched: set[str]) -> list[tuple[float, set[str]]]:
        return [(t, watched - have) for t, have in self.samples if watched - have]

    def __enter__(self) -> Poller:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)


def delete_service(root: Path, name: str) -> None:
    f = root / "all.yaml"
    docs = [d for d in yaml.safe_load_all(f.read_text())
            if d["metadata"]["name"] not in (name, f"{name}-1")]
    f.write_text(yaml.safe_dump_all(docs))
    Operator(root).reconcile(ManifestDir(root).load())


@pytest.mark.timeout(180)
def test_agent_kill9_restart_keeps_routes_and_sweeps_the_deleted_one(agent: Agent) -> None:
    a, topo = agent, agent.topo
    tor = topo.tor_ns.name
    first = a.start()
    wait_for(lambda: KEPT | {WEB} <= kernel_bgp(tor), 60, 0.2, "the plan in the ToR kernel")
    old_pid = a.speaker_pid()
    assert old_pid is not None

    with Poller(tor) as poller:
        time.sleep(0.3)
        os.kill(first.pid, signal.SIGKILL)  # the agent only: its speaker keeps running
        first.wait(timeout=10)
        assert Path(f"/proc/{old_pid}").exists(), "the speaker should outlive the agent"
        delete_service(a.root, "web")
        t_restart = time.monotonic()
        a.start()
        # the leftover speaker was taken over, and a new one runs on the same state dir
        wait_for(lambda: a.speaker_pid() not in (None, old_pid), 30, 0.1, "a new speaker")
        wait_for(lambda: not Path(f"/proc/{old_pid}").exists(), 10, 0.1,
                 "the leftover speaker gone")
        # End-of-RIB sweeps the deleted service; the kept routes are there (not stale)
        wait_for(lambda: WEB not in kernel_bgp(tor), 90, 0.05, "web swept after End-of-RIB")
        wait_for(lambda: set(topo.tor.bgp_routes()) >= KEPT
                 and not any(p.get("stale") for ps in topo.tor.bgp_routes().values()
                             for p in ps), 30, 0.2, "fresh (not stale) kept routes")
        t_swept = time.monotonic()
        time.sleep(1.0)
    gaps = poller.missing(KEPT)
    assert not gaps, f"kept routes left the ToR kernel: {gaps[:5]}"
    assert len(poller.samples) > 20
    # web stayed (stale) until the new agent's End-of-RIB, then left for good
    web_gone = [t for t, have in poller.samples if WEB not in have]
    assert web_gone and min(web_gone) > t_restart
    assert all(WEB not in have for t, have in poller.samples if t >= t_swept)
    assert kernel_bgp(tor) >= KEPT
    log = a.log(1)
    leftover = "gobgpd_leftover_killed" if a.kind == "gobgp" else "exabgp_leftover_killed"
    assert leftover in log, log[-3000:]
    assert a.procs[1].poll() is None, a.log(1)[-3000:]
