"""The real agents with BFD to an FRR ToR that asks for it: the sessions come up (the
agents' status and the ToR agree), and when the ToR goes silent for a node (every packet
from it dropped in the node, as if it had died), that node stops routing through it
within BFD's detection time, while its BGP session (hold time 60 s) still stands; the
routes come back with BFD."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.lab.leftovers import kill_leftover_speakers, stop_all
from controller.lab.netns import wait_for
from controller.operator import Operator
from controller.sources.files import ManifestDir
from controller.status import read_nodes
from tests.integration.agent.test_agent_tor import RACKROUTE, cluster_docs
from tests.integration.bgp.conftest import Topo, build_topo

pytestmark = pytest.mark.timeout(150)


def with_bfd(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for d in docs:
        if d["kind"] == "BGPPeerConfig":
            d["spec"]["timers"] = {"holdTimeSeconds": 60, "keepAliveTimeSeconds": 20,
                                   "connectRetryTimeSeconds": 1}
            d["spec"]["bfd"] = {"enabled": True, "minRxMs": 100, "minTxMs": 100,
                                "multiplier": 3}
    return docs


@pytest.fixture
def cluster() -> Iterator[tuple[Topo, Path]]:
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed on this machine")
    topo = build_topo("gobgp", 2, bfd=True)
    tmp = Path(tempfile.mkdtemp(prefix="rrb-agent-"))
    agents: list[subprocess.Popen[bytes]] = []
    try:
        root = tmp / "manifests"
        root.mkdir()
        (root / "all.yaml").write_text(yaml.safe_dump_all(with_bfd(cluster_docs(topo))))
        Operator(root).reconcile(ManifestDir(root).load())
        for n in topo.nodes:
            topo.tor_neighbor(n)
            log = open(tmp / f"agent-n{n.idx}.log", "wb")  # noqa: SIM115
            agents.append(n.ns.popen(
                [*RACKROUTE, "agent", "--node", f"n{n.idx}", "--manifests", str(root),
                 "--speaker", "gobgp", "--state-dir", str(tmp / f"state-n{n.idx}"),
                 "--metrics-port", "0", "--resync", "30", "--import-routes"],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).parents[3])))
        yield topo, root
    finally:
        stop_all(agents)
        kill_leftover_speakers(tmp)  # the speakers and the BFD responders
        topo.lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def peer(root: Path, node: str) -> dict[str, Any]:
    doc = read_nodes(root).get(node) or {}
    peers = [p for i in doc.get("instances", []) for p in i.get("peers", [])]
    return peers[0] if peers else {}


def test_a_silent_tor_is_routed_around_within_bfds_detection_time(
        cluster: tuple[Topo, Path]) -> None:
    topo, root = cluster
    n1 = topo.nodes[0]
    for n in ("n1", "n2"):
        wait_for(lambda n=n: peer(root, n).get("state") == "established"  # type: ignore[misc]
                 and (peer(root, n).get("bfd") or {}).get("state") == "up", 60, 0.2,
                 f"{n}: BGP established, BFD up")
    bfd = {p["peer"]: p["status"] for p in topo.tor.vtysh_json("show bfd peers json")}
    assert bfd == {"10.55.0.11": "up", "10.55.0.12": "up"}

    def via_tor() -> bool:
        return "10.244.1.0/24 via 10.55.0.1" in n1.ns.ip("route").stdout

    wait_for(via_tor, 30, 0.1, "n1 routes n2's pods through the ToR")
    rule = ["INPUT", "-s", "10.55.0.1", "-j", "DROP"]
    n1.ns.run(["iptables", "-A", *rule])
    try:
        wait_for(lambda: not via_tor(), 10, 0.02, "n1 stops routing through the silent ToR")
        st = peer(root, "n1")
        assert st["state"] == "established"  # BGP alone would wait for its 60 s hold time
    finally:
        n1.ns.run(["iptables", "-D", *rule])
    wait_for(via_tor, 30, 0.1, "the route back once BFD answers again")
