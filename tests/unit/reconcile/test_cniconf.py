"""The CNI config reconciler: written once the node has a pod CIDR, MTU lowered while the
node tunnels, rewritten only on change, and what a runtime hands the plugin parses."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import Path

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
