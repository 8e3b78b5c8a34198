"""The BFD responder against itself and against FRR's bfdd as the ToR: sessions come up,
a silent peer is detected, a node that fails loses its routes at the ToR long before
the BGP hold timer would, and an agent restart adopts the running responder without a
flap. The BfdPort contract runs here against the real responder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from bgp.bfd import Settings
from bgp.bfd_port import DaemonBfd
from bgp.speaker import Speaker
from bgp.types import path_from_texts
from controller.lab.netns import entered, wait_for
from tests.integration.bgp.conftest import Node, Topo, global_config, peer_spec, topology
from tests.integration.bgp.test_tor import established, kernel_bgp
from tests.unit.bgp.bfd_contract import check_sessions_follow_the_wanted_set

pytestmark = pytest.mark.timeout(120)

FAST = Settings(100, 100, 3)


@pytest.fixture
def ports(tmp_path: Path) -> Iterator[list[DaemonBfd]]:
    made: list[DaemonBfd] = []
    yield made
    for p in made:  # responders outlive their port on purpose: stop them here
        p.stop()
        shutil.rmtree(p.dir, ignore_errors=True)


def daemon(ports: list[DaemonBfd], ns: str) -> tuple[DaemonBfd, str]:
    d = tempfile.mkdtemp(prefix="rrb-bfd-")
    port = DaemonBfd(Path(d))
    ports.append(port)
    return port, ns


def in_ns(ns: str, port: DaemonBfd, sessions: dict) -> None:  # type: ignore[type-arg]
    with entered(ns):  # the responder starts in the caller's namespace
        port.set_sessions(sessions)


def state(port: DaemonBfd, peer: str) -> str:
    s = port.sessions().get(ip_address(peer))
    return s.state if s else "absent"


def tor_bfd(topo: Topo, addr: str) -> dict[str, Any]:
    """The ToR's BFD session with addr (`show bfd peers json`), {} if it has none."""
    peers = topo.tor.vtysh_json("show bfd peers json") or []
    return next((p for p in peers if p.get("peer") == addr), {})


def advertising_node_with_bfd(topo: Topo, ports: list[DaemonBfd], **peer: Any
                              ) -> tuple[Node, Speaker, DaemonBfd, str]:
    """The first node: its speaker advertising 10.244.1.0/24 (peer_spec with `peer`), its
    responder in a BFD session with the ToR; returns once both are up at the ToR."""
    node = topo.nodes[0]
    topo.tor_neighbor(node)
    s = topo.make_speaker(node)
    s.start(global_config(node))
    s.set_peers([peer_spec(**peer)])
    s.set_paths({path_from_texts("10.244.1.0/24")})
    established(topo, node.addr4)
    port, ns = daemon(ports, node.ns.name)
    in_ns(ns, port, {ip_address("10.55.0.1"): FAST})
    wait_for(lambda: tor_bfd(topo, node.addr4).get("status") == "up", 20, 0.1,
             "FRR's BFD session up")
    wait_for(lambda: "10.244.1.0/24" in kernel_bgp(topo), 10, 0.1, "the route at the ToR")
    return node, s, port, ns


@pytest.fixture
def two_nodes() -> Iterator[Topo]:
    with topology("gobgp", 2, start_tor=False) as t:
        yield t


@pytest.fixture
def bfd_tor() -> Iterator[Topo]:
    """A ToR asking for BFD, and two nodes: the second keeps the ToR's bridge up when the
    first one's link fails (else FRR's fast external failover, not BFD, would act)."""
    with topology("gobgp", 2, bfd=True) as t:
        yield t


def test_real_contract(two_nodes: Topo, ports: list[DaemonBfd]) -> None:
    port, ns = daemon(ports, two_nodes.nodes[0].ns.name)
    with entered(ns):
        check_sessions_follow_the_wanted_set(port)
    wait_for(lambda: port.pid() is None, 10, 0.05, "the responder gone with its last session")


def test_two_responders_come_up_and_a_silent_one_is_detected(
        two_nodes: Topo, ports: list[DaemonBfd]) -> None:
    n1, n2 = two_nodes.nodes
    p1, ns1 = daemon(ports, n1.ns.name)
    p2, ns2 = daemon(ports, n2.ns.name)
    in_ns(ns1, p1, {ip_address(n2.addr4): FAST, ip_address(n2.addr6): FAST})
    in_ns(ns2, p2, {ip_address(n1.addr4): FAST, ip_address(n1.addr6): FAST})
    for port, peer in ((p1, n2), (p2, n1)):
        for a in (peer.addr4, peer.addr6):
            wait_for(lambda port=port, a=a: state(port, a) == "up", 15, 0.05,  # type: ignore[misc]
                     f"BFD up with {a}")
    pid = p2.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # silent: no AdminDown
    wait_for(lambda: state(p1, n2.addr4) == "down", 5, 0.02, "the silent peer detected")
    assert p1.sessions()[ip_address(n2.addr4)].diag == "detect_expired"


def test_frr_withdraws_a_failed_nodes_routes_on_bfd_before_the_hold_timer(
        bfd_tor: Topo, ports: list[DaemonBfd]) -> None:
    """The ToR asks for BFD on its NODES group; our responder answers. The node's link
    fails (its interface goes down: the ToR's side of the bridge stays up, as with a
    dead server): with a 60 s hold time only BFD explains the routes leaving the ToR's
    kernel within the test's wait."""
    node, _, port, _ = advertising_node_with_bfd(bfd_tor, ports, hold_time=60, keepalive=20)
    wait_for(lambda: state(port, "10.55.0.1") == "up", 5, 0.05, "ours up")
    node.ns.ip("link", "set", "eth0", "down")
    wait_for(lambda: "10.244.1.0/24" not in kernel_bgp(bfd_tor), 15, 0.05,
             "the failed node's route withdrawn by BFD")
    assert tor_bfd(bfd_tor, node.addr4).get("status") == "down"
    assert tor_bfd(bfd_tor, node.addr4).get("diagnostic") == "control detection time expired"
    assert bfd_tor.tor.neighbor_state(node.addr4) != "Established"


def test_an_agent_restart_adopts_the_responder_and_frr_sees_no_flap(
        bfd_tor: Topo, ports: list[DaemonBfd]) -> None:
    node = bfd_tor.nodes[0]
    bfd_tor.tor_neighbor(node)
    port, ns = daemon(ports, node.ns.name)
    in_ns(ns, port, {ip_address("10.55.0.1"): FAST})
    wait_for(lambda: tor_bfd(bfd_tor, node.addr4).get("status") == "up", 20, 0.1,
             "FRR's BFD session up")
    pid, disc = port.pid(), json.loads((port.dir / "state.json").read_text())
    port.close()  # the agent goes (kill -9 leaves the responder as well)
    again = DaemonBfd(port.dir)  # the next agent, same directory
    ports.append(again)
    in_ns(ns, again, {ip_address("10.55.0.1"): FAST})
    assert again.pid() == pid  # adopted, not replaced
    assert again.sessions()[ip_address("10.55.0.1")].state == "up"
    assert json.loads((port.dir / "state.json").read_text())["sessions"] == disc["sessions"]
    time.sleep(1.0)  # longer than the detection time: a flap would show
    counters = next(c for c in bfd_tor.tor.vtysh_json("show bfd peers counters json")
                    if c.get("peer") == node.addr4)
    assert (tor_bfd(bfd_tor, node.addr4).get("status"), counters["session-up"],
            counters["session-down"]) == ("up", 1, 0)


def test_a_restarted_agent_container_keeps_its_routes_at_the_tor(
        bfd_tor: Topo, ports: list[DaemonBfd]) -> None:
    """In a container the speaker and the responder die with the agent. The speaker's
    sockets close at once, so the ToR's session is already down, in graceful restart,
    when BFD goes Down a detection time later: there is no session left for BFD to reset
    and the routes stay (stale) until the restarted speaker's End-of-RIB. (A dead node's
    session is still up when BFD goes Down: that one is reset, the test above.)"""
    from tests.integration.bgp.test_graceful_restart import KernelPoller, no_stale

    node, s, port, ns = advertising_node_with_bfd(bfd_tor, ports)
    speaker, responder = s.pid, port.pid()  # type: ignore[attr-defined]
    assert speaker and responder
    with KernelPoller(bfd_tor, {"10.244.1.0/24"}) as poller:
        os.kill(speaker, signal.SIGKILL)
        os.kill(responder, signal.SIGKILL)
        wait_for(lambda: tor_bfd(bfd_tor, node.addr4).get("status") == "down", 10, 0.05,
                 "BFD down at the ToR")
        time.sleep(0.5)
        in_ns(ns, port, {ip_address("10.55.0.1"): FAST})  # the new agent's responder
        wait_for(lambda: tor_bfd(bfd_tor, node.addr4).get("status") == "up", 20, 0.1,
                 "BFD up again")
        wait_for(lambda: no_stale(bfd_tor), 30, 0.1, "End-of-RIB after the speaker's restart")
    assert poller.samples > 50
    assert poller.missing == [], f"routes left the ToR's kernel: {poller.missing[:3]}"


def test_a_multihop_session_between_loopbacks_fails_fast_at_the_tor(
        bfd_tor: Topo, ports: list[DaemonBfd]) -> None:
    """eBGP multihop between the node's loopback and the ToR's (the ToR's update-source
    lo, ebgp-multihop 2): FRR asks for a multihop BFD session (RFC 5883, port 4784) keyed
    by the two loopbacks, and our responder answers from the node's loopback. The node's
    link fails: the ToR's routes from it go within a second or two, by BFD, where the
    BGP hold timer (9 s) would take longer."""
    node = bfd_tor.nodes[0]
    bfd_tor.tor_neighbor(node, address=node.loopback, ebgp_multihop=2, update_source="lo")
    s = bfd_tor.make_speaker(node)
    s.start(global_config(node))
    s.set_peers([peer_spec("10.56.0.1", ebgp_multihop=2,
                           local_address=ip_address(node.loopback))])
    s.set_paths({path_from_texts("10.244.1.0/24")})
    established(bfd_tor, node.loopback)
    port, ns = daemon(ports, node.ns.name)
    in_ns(ns, port, {ip_address("10.56.0.1"): Settings(100, 100, 3, hops=2,
                                                       local=ip_address(node.loopback))})
    wait_for(lambda: tor_bfd(bfd_tor, node.loopback).get("status") == "up", 20, 0.1,
             "FRR's multihop BFD session up")
    theirs = tor_bfd(bfd_tor, node.loopback)
    assert theirs.get("multihop") is True and theirs.get("local") == "10.56.0.1"
    wait_for(lambda: state(port, "10.56.0.1") == "up", 5, 0.05, "ours up")
    wait_for(lambda: "10.244.1.0/24" in kernel_bgp(bfd_tor), 10, 0.1, "the route at the ToR")
    node.ns.ip("link", "set", "eth0", "down")
    wait_for(lambda: "10.244.1.0/24" not in kernel_bgp(bfd_tor), 4, 0.05,
             "the failed node's route withdrawn by BFD, before the hold timer")
    assert tor_bfd(bfd_tor, node.loopback).get("diagnostic") == "control detection time expired"
