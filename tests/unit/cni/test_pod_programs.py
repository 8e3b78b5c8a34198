"""Which pinned programs the CNI plugin attaches to a new pod, as the agent's conflist
says: the pod programs on the host veth, and the network policy ones on the pod's own
interface whenever the agent enforces policy, even when the veths carry nothing (no
per-packet LB, kernel host routing): the agent attaches policy to existing pods only
at start, so a pod made later would otherwise run unguarded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bgp.bfd_port import FakeBfd
from bgp.fake import FakeSpeaker
from controller.cni import bpfattach
from controller.cni.netconf import parse_netconf
from controller.cni.spec import CniError
from controller.datapath_setup import DatapathSettings
from controller.reconcile.cniconf import plugin_conf
from controller.reconcile.loop import PassContext
from tests.unit.reconcile.test_cniconf import snap

CGROUP = Path("/sys/fs/cgroup/kubepods")


def settings(per_packet_lb: bool, host_routing: bool, network_policy: bool
             ) -> DatapathSettings:
    return DatapathSettings("n1", socket_lb_cgroup=CGROUP, per_packet_lb=per_packet_lb,
                            host_routing=host_routing, network_policy=network_policy)


@pytest.mark.parametrize(("per_packet_lb", "host_routing", "network_policy", "pin_dir"), [
    (True, True, False, True),
    (False, True, False, True),    # the forwarding program alone
    (True, False, False, True),
    (False, False, False, False),  # nothing on pods: nothing for the plugin to attach
    (False, False, True, True),    # the policy programs alone
    (True, True, True, True),
])
def test_the_plugin_gets_the_pin_dir_whenever_it_has_programs_to_attach(
        per_packet_lb: bool, host_routing: bool, network_policy: bool, pin_dir: bool) -> None:
    s = settings(per_packet_lb, host_routing, network_policy)
    assert s.cni_pin_dir == (Path("/sys/fs/bpf/rackroute/n1") if pin_dir else None)
    assert s.pod_programs == (per_packet_lb or host_routing)


def _agent_conflist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    s: DatapathSettings) -> dict[str, Any]:
    """The conflist the agent writes with datapath settings s (the datapath's start
    replaced: nothing is loaded)."""
    import controller.datapath_setup as setup
    from controller.agent import Agent, AgentConfig

    monkeypatch.setattr(setup, "start_datapath", lambda _s: (None, []))
    (tmp_path / "m").mkdir(parents=True)
    conf = tmp_path / "net.d" / "05-rackroute.conflist"
    agent = Agent(AgentConfig(node="n1", manifests=tmp_path / "m", state_dir=tmp_path / "s",
                              datapath=s, cni_conf=conf, cni_policy_wait=3.0,
                              health_check_address=None),
                  factory=lambda instance: FakeSpeaker(), bfd_port=FakeBfd())
    rec = next(r for r in agent.loop.reconcilers if r.name == "cni-config")
    rec.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    doc: dict[str, Any] = json.loads(conf.read_text())
    return doc


def test_agent_conflist_attaches_policy_alone_without_pod_programs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _agent_conflist(tmp_path, monkeypatch, settings(False, False, True))
    assert doc["plugins"][0]["bpf"] == {"pinDir": "/sys/fs/bpf/rackroute/n1",
                                        "policyWait": 3.0, "podPrograms": False}
    parsed = parse_netconf(plugin_conf(doc))
    assert (parsed.pin_dir, parsed.pod_programs, parsed.policy_wait) == (
        Path("/sys/fs/bpf/rackroute/n1"), False, 3.0)


def test_agent_conflist_with_pod_programs_and_without_any(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _agent_conflist(tmp_path / "a", monkeypatch, settings(True, False, True))
    assert doc["plugins"][0]["bpf"] == {"pinDir": "/sys/fs/bpf/rackroute/n1",
                                        "policyWait": 3.0}
    assert parse_netconf(plugin_conf(doc)).pod_programs
    doc = _agent_conflist(tmp_path / "b", monkeypatch, settings(False, False, False))
    assert "bpf" not in doc["plugins"][0]


def test_netconf_pod_programs() -> None:
    base = {"cniVersion": "1.0.0", "name": "n", "type": "rackroute-cni",
            "podCIDRs": ["10.244.0.0/24"]}
    assert parse_netconf({**base, "bpf": {"pinDir": "/p"}}).pod_programs
    assert not parse_netconf({**base, "bpf": {"pinDir": "/p", "podPrograms": False}}
                             ).pod_programs
    with pytest.raises(CniError) as e:
        parse_netconf({**base, "bpf": {"pinDir": "/p", "podPrograms": "no"}})
    assert e.value.code == 7 and "bpf.podPrograms" in e.value.msg


def test_attach_without_pod_programs_guards_the_pod_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bpf.progpin as progpin

    done: list[tuple[str, ...]] = []
    monkeypatch.setattr(progpin, "attach_pinned",
                        lambda ifname, pin_dir, netns=None: done.append(("veth", ifname)))

    def policy(ifname: str, pin_dir: Path, netns: str | None = None) -> bool:
        done.append(("pod", ifname, str(netns)))
        return True

    monkeypatch.setattr(progpin, "attach_policy_pinned", policy)
    # nothing pinned: the agent is not running, ADD is refused (the runtime retries)
    with pytest.raises(bpfattach.BpfAttachError):
        bpfattach.attach("rr0123456789a", tmp_path, "ns1", "eth0", pod_programs=False)
    assert done == []
    progpin.prog_path(tmp_path, progpin.POD_INGRESS).touch()
    assert bpfattach.attach("rr0123456789a", tmp_path, "ns1", "eth0", pod_programs=False)
    assert done == [("pod", "eth0", "ns1")]
    done.clear()
    assert bpfattach.attach("rr0123456789a", tmp_path, "ns1", "eth0")
    assert done == [("veth", "rr0123456789a"), ("pod", "eth0", "ns1")]
