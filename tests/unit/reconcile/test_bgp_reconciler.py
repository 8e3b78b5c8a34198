"""The BGP reconciler against the fake speaker: peers, paths, gate, removal, problems."""

from __future__ import annotations

import ipaddress
import logging
import shutil
from pathlib import Path

import pytest

from bgp.bfd_port import FakeBfd
from bgp.fake import FakeSpeaker
from bgp.types import Path as BgpPath
from bgp.types import SessionState
from controller.agent import Agent, AgentConfig
from controller.operator import Operator
from controller.reconcile.bgp import BGPReconciler, merge_paths
from controller.reconcile.gate import ConfirmedGate
from controller.reconcile.loop import Loop, PassContext
from controller.sources.files import ManifestDir
from controller.status import read_nodes
from controller.store import Store

LAB = Path(__file__).resolve().parents[3] / "examples" / "frr-lab" / "manifests"
IP = ipaddress.ip_address
N = ipaddress.ip_network


class Fakes:
    def __init__(self) -> None:
        self.made: dict[str, FakeSpeaker] = {}

    def __call__(self, instance: str) -> FakeSpeaker:
        sp = FakeSpeaker()
        self.made[instance] = sp
        return sp


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    shutil.copytree(LAB, root)
    Operator(root).reconcile(ManifestDir(root).load())  # allocations in status
    return root


def run_pass(root: Path, rec: BGPReconciler, node: str = "node-1", **kw: object) -> PassContext:
    store = Store(ManifestDir(root).load())
    ctx = PassContext(store.snapshot(), node, **kw)  # type: ignore[arg-type]
    rec.reconcile(ctx)
    return ctx


def announced(sp: FakeSpeaker) -> set[str]:
    return {str(p.prefix) for p in sp.advertised()}


def test_peers_and_paths_follow_the_plan(lab: Path) -> None:
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    run_pass(lab, rec)
    sp = fakes.made["tor"]
    assert sp.config is not None and (sp.config.asn, str(sp.config.router_id)) == (
        65011,
        "10.0.0.11",
    )
    assert [str(p.address) for p in sp.peers()] == ["10.0.0.1", "fd00:10::1"]
    assert announced(sp) == {"10.244.0.0/24", "10.96.100.1/32", "10.96.100.2/32", "10.96.200.10/32",
                             "fd00:244::/64", "fd00:96:100::1/128", "fd00:96:100::2/128"}
    lb = next(p for p in sp.advertised() if str(p.prefix) == "10.96.100.2/32")
    assert lb.communities == frozenset({"65000:200"})
    assert lb.large_communities == frozenset({"65000:1:2"})


def test_node3_does_not_announce_the_local_service(lab: Path) -> None:
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    run_pass(lab, rec, "node-3")
    assert "10.96.100.2/32" not in announced(fakes.made["tor"])
    assert "fd00:96:100::2/128" not in announced(fakes.made["tor"])


def test_gate_holds_paths_until_datapath_confirms(lab: Path) -> None:
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    managed = frozenset({IP("10.96.100.1"), IP("10.96.100.2"), IP("10.96.200.10"),
                         IP("fd00:96:100::1"), IP("fd00:96:100::2")})
    run_pass(lab, rec, gate=ConfirmedGate(managed, frozenset({IP("10.96.100.1")})))
    sp = fakes.made["tor"]
    assert announced(sp) == {"10.244.0.0/24", "fd00:244::/64", "10.96.100.1/32"}
    assert rec.view.held["tor"] == frozenset({N("10.96.100.2/32"), N("10.96.200.10/32"),
                                              N("fd00:96:100::1/128"), N("fd00:96:100::2/128")})
    run_pass(lab, rec, gate=ConfirmedGate(managed, managed))
    assert announced(sp) >= {"10.96.100.2/32", "10.96.200.10/32", "fd00:96:100::1/128"}
    assert rec.view.held["tor"] == frozenset()


def test_removed_service_withdrawn_and_changed_manifest_applied(lab: Path) -> None:
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    run_pass(lab, rec)
    svc = lab / "40-services.yaml"
    svc.write_text(
        "---\n".join(p for p in svc.read_text().split("---\n") if "name: web-cluster" not in p)
    )
    adv = lab / "20-bgp.yaml"
    adv.write_text(adv.read_text().replace('standard: ["65000:100"]', 'standard: ["65000:101"]'))
    run_pass(lab, rec)
    sp = fakes.made["tor"]
    assert "10.96.100.1/32" not in announced(sp)
    pod = next(p for p in sp.advertised() if str(p.prefix) == "10.244.0.0/24")
    assert pod.communities == frozenset({"65000:101"})


def test_removed_peer_and_instance(lab: Path) -> None:
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    run_pass(lab, rec)
    sp = fakes.made["tor"]
    bgp = lab / "20-bgp.yaml"
    bgp.write_text(
        bgp.read_text().replace(
            "matchLabels: {rackroute.io/bgp: enabled}", "matchLabels: {rackroute.io/bgp: never}"
        )
    )
    run_pass(lab, rec)
    assert rec.instances == {}
    assert sp.config is None or announced(sp) == set()


def test_bad_peer_config_leaves_other_peers_working(
    lab: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bgp = lab / "20-bgp.yaml"
    bgp.write_text(
        bgp.read_text().replace(
            "      peerConfigRef: {name: default}\n",
            "      peerConfigRef: {name: default}\n"
            "    - name: tor-b\n      peerAddress: 10.0.0.2\n      peerASN: 65000\n"
            "      peerConfigRef: {name: missing}\n",
        )
    )
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    with caplog.at_level(logging.WARNING):
        run_pass(lab, rec)
    assert [str(p.address) for p in fakes.made["tor"].peers()] == ["10.0.0.1", "fd00:10::1"]
    assert any("BGPPeerConfig 'missing' not found" in r.getMessage() for r in caplog.records)
    assert "10.96.100.1/32" in announced(fakes.made["tor"])


def test_node_drain_changes_the_speaker_paths_and_is_logged_once_per_change(
    lab: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """node-1's Node labelled exclude-from-external-load-balancers and annotated
    graceful-shutdown: its LoadBalancer IPs leave the speaker, the rest is tagged 65535:0;
    one log line per change."""
    nodes = lab / "10-nodes.yaml"
    plain = nodes.read_text()
    head = "  name: node-1\n  labels: {rackroute.io/bgp: enabled, "
    assert head in plain
    fakes = Fakes()
    rec = BGPReconciler(fakes)

    def drain_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "event=bgp_node_drain" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="rackroute.bgp"):
        run_pass(lab, rec)
        assert drain_lines() == []
        nodes.write_text(plain.replace(head, "  name: node-1\n  annotations: "
                                       "{bgp.rackroute.io/graceful-shutdown: 'true'}\n"
                                       "  labels: {node.kubernetes.io/exclude-from-external-"
                                       "load-balancers: '', rackroute.io/bgp: enabled, "))
        run_pass(lab, rec)
        run_pass(lab, rec)
        sp = fakes.made["tor"]
        assert announced(sp) == {"10.244.0.0/24", "fd00:244::/64"}
        assert all("65535:0" in p.communities for p in sp.advertised())
        (line,) = drain_lines()
        assert "exclude_lb=True graceful_shutdown=True" in line
        nodes.write_text(plain)
        run_pass(lab, rec)
    assert "10.96.100.1/32" in announced(sp)
    assert not any("65535:0" in p.communities for p in sp.advertised())
    assert len(drain_lines()) == 2 and "mode=none" in drain_lines()[1]


def test_the_dual_stack_lab_has_no_shared_plan_problem(lab: Path) -> None:
    """Its two peers carry one family each: each gets all of its family, nothing more."""
    rec = BGPReconciler(Fakes())
    run_pass(lab, rec)
    assert rec.view.problems == ()


RS_PEER = """---
apiVersion: rackroute.io/v1alpha1
kind: BGPPeerConfig
metadata: {name: pods-only}
spec:
  families:
  - {afi: ipv4, safi: unicast, advertisements: {matchLabels: {advertise: pods}}}
---
apiVersion: rackroute.io/v1alpha1
kind: BGPAdvertisement
metadata: {name: pods, labels: {advertise: pods}}
spec:
  advertisements:
  - {advertisementType: PodCIDR, attributes: {communities: {standard: ["65009:1"]}}}
"""


def with_pods_only_peer(lab: Path) -> None:
    """A second IPv4 peer (10.0.0.9) whose BGPPeerConfig selects only pod CIDRs, with its
    own BGPAdvertisement and community."""
    bgp = lab / "20-bgp.yaml"
    bgp.write_text(bgp.read_text().replace(
        "      peerConfigRef: {name: default}\n",
        "      peerConfigRef: {name: default}\n"
        "    - name: rs\n      peerAddress: 10.0.0.9\n      peerASN: 65009\n"
        "      peerConfigRef: {name: pods-only}\n") + RS_PEER)


def by_prefix(paths: set[BgpPath]) -> dict[str, frozenset[str]]:
    return {str(p.prefix): p.communities for p in paths}


def test_peers_of_one_instance_planned_differently_each_get_their_own(lab: Path) -> None:
    """With per-peer exports (the fake, as gobgpd) each peer gets exactly its plan: the
    pods-only peer the pod CIDR with its community alone, tor-a its pod CIDR and
    LoadBalancer IPs with theirs; the instance announces the union once."""
    with_pods_only_peer(lab)
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    run_pass(lab, rec)
    sp = fakes.made["tor"]
    for a in ("10.0.0.1", "10.0.0.9"):
        sp.set_state(IP(a), SessionState.ESTABLISHED)
    assert rec.view.problems == ()
    assert by_prefix(sp.advertised(IP("10.0.0.9"))) == {"10.244.0.0/24": frozenset({"65009:1"})}
    assert by_prefix(sp.advertised(IP("10.0.0.1"))) == {
        "10.244.0.0/24": frozenset({"65000:100"}), "10.96.100.1/32": frozenset({"65000:200"}),
        "10.96.100.2/32": frozenset({"65000:200"}), "10.96.200.10/32": frozenset({"65000:200"})}
    assert "10.96.100.1/32" in announced(sp)


def test_without_per_peer_exports_the_union_is_sent_and_said(lab: Path) -> None:
    """A speaker that sends one set of paths to all its peers (ExaBGP): the pods-only peer
    gets the LoadBalancer IPs too and the pod CIDR with both communities; the problem
    says so and where to go."""
    from bgp.types import Feature

    with_pods_only_peer(lab)
    made: list[FakeSpeaker] = []

    def one_set(instance: str) -> FakeSpeaker:
        sp = FakeSpeaker()
        sp.features = sp.features - {Feature.PER_PEER_EXPORT}
        made.append(sp)
        return sp

    rec = BGPReconciler(one_set)
    run_pass(lab, rec)
    (msg,) = rec.view.problems
    assert msg.startswith("BGP instance tor: its peers' BGPPeerConfigs (spec.families[]."
                          "advertisements) select different advertisements")
    assert "rs also gets 10.96.100.1/32, 10.96.100.2/32, 10.96.200.10/32" in msg
    assert "rs gets 10.244.0.0/24 with the other peers' communities" in msg
    assert "tor-a gets 10.244.0.0/24 with the other peers' communities" in msg
    assert "a bgpInstance of its own" in msg
    pod = next(p for p in made[0].advertised() if str(p.prefix) == "10.244.0.0/24")
    assert pod.communities == frozenset({"65000:100", "65009:1"})  # what is said is sent
    from controller.bgpstatus import node_status

    assert msg in node_status("node-1", rec)["problems"]  # BGPNodeConfig's ConfigValid


def test_a_peer_asn_the_speaker_cannot_take_is_reported_and_left_out(lab: Path) -> None:
    """peerASN 0 with a speaker that needs the ASN (gobgpd): that peer is not configured,
    the problem names the field, the other peers work."""
    from bgp.types import Feature

    bgp = lab / "20-bgp.yaml"
    bgp.write_text(bgp.read_text().replace(
        "      peerConfigRef: {name: default}\n",
        "      peerConfigRef: {name: default}\n"
        "    - name: any-as\n      peerAddress: 10.0.0.8\n      peerASN: 0\n"
        "      peerConfigRef: {name: default}\n"))

    def fixed_asn(instance: str) -> FakeSpeaker:
        sp = FakeSpeaker()
        sp.features = sp.features - {Feature.DYNAMIC_PEER_ASN}
        return sp

    made: list[FakeSpeaker] = []
    rec = BGPReconciler(lambda name: made.append(fixed_asn(name)) or made[-1])
    run_pass(lab, rec)
    assert [str(p.address) for p in made[0].peers()] == ["10.0.0.1", "fd00:10::1"]
    (msg,) = rec.view.problems
    assert msg.startswith("BGPClusterConfig spec.bgpInstances[tor].peers[any-as].peerASN: 0")
    rec2 = BGPReconciler(Fakes())  # a speaker that can: configured, no problem
    run_pass(lab, rec2)
    assert rec2.view.problems == ()


def test_timers_the_speaker_cannot_apply_are_said(lab: Path) -> None:
    """The lab's BGPPeerConfig asks for a 3 s keepalive with a 9 s hold (hold / 3: fine
    anywhere) and a 5 s connect retry: a speaker without its own connect retry (ExaBGP)
    says so, naming the field; a 2 s keepalive is said too; gobgpd applies both."""
    from bgp.types import Feature

    def exabgp_like(instance: str) -> FakeSpeaker:
        sp = FakeSpeaker()
        sp.features = sp.features - {Feature.KEEPALIVE, Feature.CONNECT_RETRY}
        return sp

    rec = BGPReconciler(exabgp_like)
    run_pass(lab, rec)
    assert sorted(rec.view.problems) == [
        "BGPPeerConfig default: spec.timers.connectRetryTimeSeconds 5: not applied by this "
        "speaker (it retries on its own schedule) to peer tor/tor-a",
        "BGPPeerConfig ipv6: spec.timers.connectRetryTimeSeconds 5: not applied by this "
        "speaker (it retries on its own schedule) to peer tor/tor-a6",
    ]
    bgp = lab / "20-bgp.yaml"
    bgp.write_text(bgp.read_text().replace("connectRetryTimeSeconds: 5, holdTimeSeconds: 9, "
                                           "keepAliveTimeSeconds: 3",
                                           "holdTimeSeconds: 9, keepAliveTimeSeconds: 2"))
    run_pass(lab, rec)
    assert sorted(rec.view.problems) == [
        "BGPPeerConfig default: spec.timers.keepAliveTimeSeconds 2: this speaker sends "
        "keepalives every holdTimeSeconds / 3 (3 s) to peer tor/tor-a",
        "BGPPeerConfig ipv6: spec.timers.keepAliveTimeSeconds 2: this speaker sends "
        "keepalives every holdTimeSeconds / 3 (3 s) to peer tor/tor-a6",
    ]
    full = BGPReconciler(Fakes())
    run_pass(lab, full)
    assert full.view.problems == ()


def test_merge_paths_unites_attributes() -> None:
    a = BgpPath(N("10.0.0.0/24"), communities=frozenset({"1:1"}), local_pref=100)
    b = BgpPath(
        N("10.0.0.0/24"),
        communities=frozenset({"2:2"}),
        large_communities=frozenset({"1:2:3"}),
        local_pref=200,
    )
    (m,) = merge_paths([a, b]).values()
    assert m.communities == frozenset({"1:1", "2:2"})
    assert m.large_communities == frozenset({"1:2:3"})
    assert m.local_pref == 200


def test_agent_writes_status_with_session_state(lab: Path) -> None:
    fakes = Fakes()
    agent = Agent(AgentConfig(node="node-2", manifests=lab, speaker="gobgp"), factory=fakes,
                  bfd_port=FakeBfd())
    agent.source.poll()
    agent.loop.run_once()
    sp = fakes.made["tor"]
    sp.set_state(IP("10.0.0.1"), SessionState.ESTABLISHED)
    assert agent.write_status() is True
    doc = read_nodes(lab)["node-2"]
    (inst,) = doc["instances"]
    peer, peer6 = inst["peers"]
    assert (peer6["peerAddress"], peer6["state"]) == ("fd00:10::1", "active")
    assert (inst["localASN"], peer["peerAddress"], peer["state"]) == (
        65012,
        "10.0.0.1",
        "established",
    )
    assert peer["establishedTime"] is not None
    assert peer["appliedTimers"] == {"holdTimeSeconds": 9, "keepAliveTimeSeconds": 3,
                                     "connectRetryTimeSeconds": 5}
    assert "10.244.1.0/24" in peer["plannedPaths"]
    assert agent.write_status() is False  # unchanged: not rewritten
    text = (lab / ".status" / "node-node-2.yaml").read_text()
    assert "10.96.100.2/32" in text
    sample = agent.metrics.registry.get_sample_value(
        "rackroute_bgp_session_established",
        {"node": "node-2", "instance": "tor", "peer": "tor-a", "peer_address": "10.0.0.1"},
    )
    assert sample == 1.0


def test_loop_runs_reconcilers_in_order_and_survives_failure(lab: Path) -> None:
    calls: list[str] = []

    class Boom:
        name = "boom"

        def reconcile(self, ctx: PassContext) -> None:
            calls.append("boom")
            raise RuntimeError("x")

        def finalize(self, ctx: PassContext) -> None:
            calls.append("boom.finalize")

        def close(self) -> None:
            pass

    fakes = Fakes()
    rec = BGPReconciler(fakes)
    store = Store(ManifestDir(lab).load())
    loop = Loop(store, "node-1", [Boom(), rec])
    ctx = loop.run_once()
    assert calls == ["boom", "boom.finalize"]
    assert "boom" in ctx.errors
    assert announced(fakes.made["tor"])  # BGP still ran
