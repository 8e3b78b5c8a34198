"""The CNI config reconciler: written once the node has a pod CIDR, MTU lowered while the
node tunnels, rewritten only on change, and what a runtime hands the plugin parses."""

from __future__ import annotations

import json
import logging
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from controller.cni.netconf import parse_netconf
from controller.model.crds import NodeNetwork
from controller.model.k8s import Node
from controller.model.meta import Meta
from controller.reconcile.cniconf import CniConfigReconciler, plugin_conf
from controller.reconcile.loop import PassContext
from controller.store import Snapshot


def snap(*cidrs: str) -> Snapshot:
    objs: list[object] = [Node(Meta("Node", "n1"), (ip_address("10.0.0.11"),))]
    if cidrs:
        objs.append(NodeNetwork(Meta("NodeNetwork", "n1"), tuple(ip_network(c) for c in cidrs)))
    return Snapshot.build(objs)


def test_written_when_cidr_known_and_mtu_follows_the_tunnel(tmp_path: Path) -> None:
    mtu: list[int | None] = [None]
    path = tmp_path / "net.d" / "10-rackroute.conflist"
    r = CniConfigReconciler(path, tmp_path / "ipam", Path("/sys/fs/bpf/rackroute/n1"),
                            lambda: mtu[0])
    r.reconcile(PassContext(snap(), "n1"))
    assert not path.exists()  # no pod CIDR yet: the runtime keeps the node not ready
    r.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    doc = json.loads(path.read_text())
    plugin = doc["plugins"][0]
    assert (plugin["podCIDRs"], plugin["mtu"]) == (["10.244.0.0/24"], 1500)
    assert plugin["bpf"] == {"pinDir": "/sys/fs/bpf/rackroute/n1"}
    before = path.stat().st_mtime_ns
    r.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    assert path.stat().st_mtime_ns == before  # unchanged: not rewritten
    mtu[0] = 1450
    r.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    assert json.loads(path.read_text())["plugins"][0]["mtu"] == 1450


def test_the_policy_wait_reaches_the_plugin(tmp_path: Path) -> None:
    r = CniConfigReconciler(tmp_path / "c.conflist", tmp_path / "ipam",
                            Path("/sys/fs/bpf/rackroute/n1"), policy_wait=2.5)
    r.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    conf = plugin_conf(json.loads((tmp_path / "c.conflist").read_text()))
    assert parse_netconf(conf).policy_wait == 2.5
    default = CniConfigReconciler(tmp_path / "d.conflist", tmp_path / "ipam",
                                  Path("/sys/fs/bpf/rackroute/n1"))
    default.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    assert "policyWait" not in json.loads((tmp_path / "d.conflist").read_text())[
        "plugins"][0]["bpf"]  # the plugin's own default


def test_plugin_conf_is_a_valid_network_config(tmp_path: Path) -> None:
    r = CniConfigReconciler(tmp_path / "c.conflist", tmp_path / "ipam", None)
    r.reconcile(PassContext(snap("10.244.0.0/24", "fd00:244::/64"), "n1"))
    conf = plugin_conf(json.loads((tmp_path / "c.conflist").read_text()))
    parsed = parse_netconf(json.loads(json.dumps(conf)))
    assert [str(c) for c in parsed.pod_cidrs] == ["10.244.0.0/24", "fd00:244::/64"]
    assert parsed.pin_dir is None


def test_a_deleted_or_edited_conflist_is_written_again(tmp_path: Path) -> None:
    """The file is compared, not the reconciler's memory: whatever removed or changed it
    (a node cleanup, a hand edit, another installer), the next pass puts it back."""
    path = tmp_path / "net.d" / "05-rackroute.conflist"
    r = CniConfigReconciler(path, tmp_path / "ipam", None, underlay_mtu=9000)
    ctx = PassContext(snap("10.244.0.0/24"), "n1")
    r.reconcile(ctx)
    want = json.loads(path.read_text())
    assert want["plugins"][0]["mtu"] == 9000
    path.unlink()
    r.reconcile(ctx)
    assert json.loads(path.read_text()) == want
    edited = dict(want, plugins=[dict(want["plugins"][0], mtu=1500)])
    path.write_text(json.dumps(edited))
    r.reconcile(ctx)
    assert json.loads(path.read_text()) == want
    path.write_text("{not json")
    r.reconcile(ctx)
    assert json.loads(path.read_text()) == want
    assert path.stat().st_mode & 0o777 == 0o644  # readable as the installer's
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp left


def test_a_conflist_equal_to_the_wanted_one_is_left_alone(tmp_path: Path) -> None:
    """The init container's first conflist, when it is already what the agent wants
    (same document, other formatting), is not rewritten."""
    path = tmp_path / "05-rackroute.conflist"
    r = CniConfigReconciler(path, tmp_path / "ipam", None, network="pods")
    ctx = PassContext(snap("10.244.0.0/24"), "n1")
    r.reconcile(ctx)
    doc = json.loads(path.read_text())
    assert doc["name"] == "pods"
    path.write_text(json.dumps(doc))  # compact, as another writer might
    before = path.stat().st_mtime_ns
    r.reconcile(ctx)
    assert path.stat().st_mtime_ns == before


def _bin_dir(tmp_path: Path, portmap: bool) -> Path:
    """A CNI bin directory, with the portmap executable or without it."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    if portmap:
        (d / "portmap").write_text("#!/bin/sh\n")
        (d / "portmap").chmod(0o755)
    return d


def test_host_ports_chain_portmap_after_the_plugin(tmp_path: Path) -> None:
    """With host ports on and portmap in the bin dir, portmap is the second plugin, with
    the portMappings capability (the runtime passes it the pods' hostPorts) and snat; the
    first plugin's config is unchanged and still what a runtime hands rackroute-cni."""
    path = tmp_path / "c.conflist"
    r = CniConfigReconciler(path, tmp_path / "ipam", None, host_ports=True,
                            bin_dir=_bin_dir(tmp_path, portmap=True))
    r.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    doc = json.loads(path.read_text())
    assert [p["type"] for p in doc["plugins"]] == ["rackroute-cni", "portmap"]
    assert doc["plugins"][1] == {"type": "portmap", "capabilities": {"portMappings": True},
                                 "snat": True}
    assert parse_netconf(plugin_conf(doc)).pod_cidrs[0] == ip_network("10.244.0.0/24")


def test_without_host_ports_the_conflist_holds_the_plugin_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.conflist"
    r = CniConfigReconciler(path, tmp_path / "ipam", None, host_ports=False,
                            bin_dir=_bin_dir(tmp_path, portmap=True))
    r.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    assert [p["type"] for p in json.loads(path.read_text())["plugins"]] == ["rackroute-cni"]


def test_a_missing_portmap_is_left_out_with_one_warning_then_added(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A conflist naming a plugin the runtime cannot find fails every pod: while portmap
    is not in the bin dir it is left out, one warning (not one per pass) names the
    missing file, and the conflist chains it once it is installed."""
    path = tmp_path / "c.conflist"
    bin_dir = _bin_dir(tmp_path, portmap=False)
    r = CniConfigReconciler(path, tmp_path / "ipam", None, host_ports=True, bin_dir=bin_dir)
    ctx = PassContext(snap("10.244.0.0/24"), "n1")
    with caplog.at_level(logging.WARNING, logger="rackroute.cni"):
        for _ in range(3):
            r.reconcile(ctx)
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(bin_dir / "portmap") in warnings[0], warnings
    assert [p["type"] for p in json.loads(path.read_text())["plugins"]] == ["rackroute-cni"]
    _bin_dir(tmp_path, portmap=True)
    r.reconcile(ctx)
    assert [p["type"] for p in json.loads(path.read_text())["plugins"]] == [
        "rackroute-cni", "portmap"]


@pytest.mark.parametrize("flag, chained", [("on", True), ("off", False)])
def test_the_agent_flags_decide_the_chain(tmp_path: Path, flag: str, chained: bool) -> None:
    """`rackroute agent --cni-host-ports on|off --cni-bin-dir DIR` reach the conflist the
    agent writes (portmap in DIR)."""
    from bgp.bfd_port import FakeBfd
    from bgp.fake import FakeSpeaker
    from controller.agent import Agent, AgentConfig
    from controller.cli import build_parser

    bin_dir = _bin_dir(tmp_path, portmap=True)
    args = build_parser().parse_args(["agent", "--node", "n1", "--manifests", "/m",
                                      "--cni-host-ports", flag, "--cni-bin-dir", str(bin_dir)])
    (tmp_path / "m").mkdir()
    conf = tmp_path / "net.d" / "05-rackroute.conflist"
    agent = Agent(AgentConfig(node="n1", manifests=tmp_path / "m", state_dir=tmp_path / "s",
                              cni_conf=conf, cni_host_ports=args.cni_host_ports == "on",
                              cni_bin_dir=Path(args.cni_bin_dir), health_check_address=None),
                  factory=lambda instance: FakeSpeaker(), bfd_port=FakeBfd())
    rec = next(r for r in agent.loop.reconcilers if r.name == "cni-config")
    rec.reconcile(PassContext(snap("10.244.0.0/24"), "n1"))
    types = [p["type"] for p in json.loads(conf.read_text())["plugins"]]
    assert types == (["rackroute-cni", "portmap"] if chained else ["rackroute-cni"])
