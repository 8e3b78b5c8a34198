"""The fake BfdPort keeps the contract; the desired sessions and the reconciler (pure)."""

from __future__ import annotations

import logging
from ipaddress import ip_address
from pathlib import Path

import pytest

from bgp.bfd import Settings
from bgp.bfd_daemon import parse_sessions
from bgp.bfd_port import FakeBfd, session_entry
from controller.desired.bfd import desired_bfd
from controller.desired.bgpconfig import resolve_node
from controller.reconcile.bfd import BfdReconciler
from controller.reconcile.loop import PassContext
from controller.sources.files import ManifestDir
from tests.unit.bgp.bfd_contract import check_sessions_follow_the_wanted_set

LAB = Path(__file__).resolve().parents[3] / "examples" / "frr-lab" / "manifests"


def test_fake_contract() -> None:
    check_sessions_follow_the_wanted_set(FakeBfd())


def lab_with(tmp_path: Path, bfd: str) -> Path:
    for f in LAB.glob("*.yaml"):
        text = f.read_text()
        if f.name == "20-bgp.yaml":  # the IPv4 peers' config gets bfd, the IPv6 one none
            lines = text.splitlines(keepends=True)
            at = [i for i, line in enumerate(lines) if line.startswith("  bfd: ")]
            assert len(at) == 2, "the lab's two BGPPeerConfigs set bfd"
            lines[at[0]], lines[at[1]] = f"  bfd: {bfd}\n", "  bfd: {enabled: false}\n"
            text = "".join(lines)
        (tmp_path / f.name).write_text(text)
    return tmp_path


def test_a_session_per_peer_whose_config_enables_bfd(tmp_path: Path) -> None:
    snap = ManifestDir(lab_with(tmp_path, "{enabled: true, minRxMs: 100, minTxMs: 200, "
                                          "multiplier: 4}")).load()
    want = desired_bfd(resolve_node(snap, snap.nodes["node-1"]))
    assert want == {ip_address("10.0.0.1"): Settings(100, 200, 4)}
    assert not want[ip_address("10.0.0.1")].multihop
    snap = ManifestDir(lab_with(tmp_path, "{enabled: false}")).load()
    assert desired_bfd(resolve_node(snap, snap.nodes["node-1"])) == {}


def test_a_multihop_peer_gets_a_multihop_session_as_far_as_its_bgp_session(
        tmp_path: Path) -> None:
    d = lab_with(tmp_path, "{enabled: true}")
    f = d / "20-bgp.yaml"
    f.write_text(f.read_text().replace("  bfd: {enabled: true}\n",
                                       "  bfd: {enabled: true}\n  ebgpMultihop: 3\n", 1))
    snap = ManifestDir(d).load()
    want = desired_bfd(resolve_node(snap, snap.nodes["node-1"]))
    s = want[ip_address("10.0.0.1")]
    assert (s.hops, s.multihop, s.min_ttl()) == (3, True, 253)
    assert session_entry(ip_address("10.0.0.1"), s)["hops"] == 3


def test_the_reconciler_runs_the_planned_sessions_and_logs_their_changes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = FakeBfd()
    rec = BfdReconciler(port)
    snap = ManifestDir(lab_with(tmp_path, "{enabled: true}")).load()
    ctx = PassContext(snap, "node-2")
    with caplog.at_level(logging.INFO, logger="rackroute.bfd"):
        rec.reconcile(ctx)
        assert port.wanted == {ip_address("10.0.0.1"): Settings()} and ctx.errors == {}
        port.set_state(ip_address("10.0.0.1"), "up")
        rec.reconcile(PassContext(snap, "node-2"))
    assert "event=bfd_session peer=10.0.0.1 state=pending" in caplog.text
    assert "event=bfd_session peer=10.0.0.1 state=up" in caplog.text
    assert rec.sessions()[ip_address("10.0.0.1")].state == "up"
    rec.reconcile(PassContext(ManifestDir(lab_with(tmp_path, "{enabled: false}")).load(),
                              "node-2"))
    assert port.wanted == {} and rec.sessions() == {}


def test_a_responder_that_cannot_run_is_this_passes_error(tmp_path: Path) -> None:
    class Broken(FakeBfd):
        def set_sessions(self, sessions: dict) -> None:  # type: ignore[type-arg]
            raise OSError("UDP 3784 is taken")

    rec = BfdReconciler(Broken())
    ctx = PassContext(ManifestDir(lab_with(tmp_path, "{enabled: true}")).load(), "node-1")
    rec.reconcile(ctx)
    assert ctx.errors == {"bfd": "BFD responder: UDP 3784 is taken"}


def test_a_session_starts_once_its_bgp_session_is_established_and_stays(
        tmp_path: Path) -> None:
    """FRR's bgpd registers the peer with bfdd again when the BGP session comes up, and a
    BFD session already Up would go Down on the new one's first packet: start after."""
    tor = ip_address("10.0.0.1")
    up: set[object] = set()
    port = FakeBfd()
    rec = BfdReconciler(port, lambda: frozenset(up))  # type: ignore[arg-type]
    snap = ManifestDir(lab_with(tmp_path, "{enabled: true}")).load()
    rec.reconcile(PassContext(snap, "node-1"))
    assert port.wanted == {} and rec.waiting == {tor}  # BGP not up yet
    up.add(tor)
    rec.reconcile(PassContext(snap, "node-1"))
    assert set(port.wanted) == {tor} and rec.waiting == frozenset()
    up.clear()  # BGP down again: BFD goes on (it says why)
    rec.reconcile(PassContext(snap, "node-1"))
    assert set(port.wanted) == {tor}
    # a restarted agent keeps the session the responder already runs
    again = BfdReconciler(port, lambda: frozenset())
    again.reconcile(PassContext(snap, "node-1"))
    assert set(port.wanted) == {tor}


def test_sessions_json_carries_a_multihop_session_and_its_local_address() -> None:
    """What the port writes the responder reads back the same; a single-hop entry keeps
    its old shape (a running responder sees no change)."""
    import json

    one = Settings(100, 100, 3)
    far = Settings(300, 300, 3, hops=2, local=ip_address("10.56.0.11"))
    entries = [session_entry(ip_address("10.55.0.1"), one),
               session_entry(ip_address("10.56.0.1"), far)]
    assert set(entries[0]) == {"peer", "minRxMs", "minTxMs", "multiplier"}
    assert parse_sessions(json.dumps({"sessions": entries})) == {
        ip_address("10.55.0.1"): one, ip_address("10.56.0.1"): far}
    with pytest.raises(ValueError, match=r"sessions\[0\]"):
        parse_sessions(json.dumps({"sessions": [{"peer": "10.0.0.1", "hops": 0}]}))
