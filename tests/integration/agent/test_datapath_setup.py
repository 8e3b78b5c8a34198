"""The agent's datapath start-up, as a real process in a node namespace: programs on the
uplink and on pod veths that already exist, pins for the CNI, socket LB on its cgroup,
map sizes from its flags."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from bpf.mapstore import PinnedMap
from bpf.progpin import pinned_programs
from controller.lab.netns import Netns, namespace, wait_for

CGROUP2 = Path("/sys/fs/cgroup/unified")
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.62.1.0/24", "podCIDRs": ["10.62.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.61.0.2"}]}}
CONFIG = {"apiVersion": "rackroute.io/v1alpha1", "kind": "RackrouteConfig",
          "metadata": {"name": "default"}, "spec": {"ipam": {"mode": "kubernetes"}}}


@pytest.fixture
def node() -> Iterator[Netns]:
    with namespace(f"rrd{os.getpid() % 100000}") as ns:
        ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        ns.ip("link", "add", "rr0123456789a", "type", "veth", "peer", "name", "p0")
        for dev in ("eth0", "eth1", "rr0123456789a", "p0"):
            ns.link_up(dev)
        ns.add_address("eth0", "10.61.0.2/24")
        yield ns


def filters(ns: Netns, dev: str, direction: str) -> str:
    return ns.run(["tc", "filter", "show", "dev", dev, direction]).stdout


@contextmanager
def agent_env() -> Iterator[tuple[Path, Path, Path]]:
    """(work dir with the manifests, pin root, socket LB cgroup), all removed afterwards."""
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip(f"needs a cgroup v2 mount at {CGROUP2}")
    tmp = Path(tempfile.mkdtemp(prefix="rrd-"))
    pin_root = Path(f"/sys/fs/bpf/rackroute-agenttest-{os.getpid()}")
    cgroup = CGROUP2 / f"rackroute-agenttest-{os.getpid()}"
    (tmp / "m").mkdir()
    (tmp / "m" / "node.yaml").write_text(yaml.safe_dump(NODE))
    (tmp / "m" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    try:
        yield tmp, pin_root, cgroup
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)
        if cgroup.exists():
            cgroup.rmdir()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def agent(node: Netns, tmp: Path, pin_root: Path, cgroup: Path,
          *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The agent with the datapath and socket LB (extra: more flags), once it reported
    its datapath ready: (process, its log so far). Stopped with SIGTERM (and must exit
    0), killed if it is still running when the block fails."""
    path = tmp / f"agent-{len(list(tmp.glob('agent-*.log')))}.log"
    log = open(path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{node.name}", "--", sys.executable, "-m",
         "controller.cli", "agent", "--node", "n1", "--manifests", str(tmp / "m"),
         "--state-dir", str(tmp / "s"), "--metrics-port", "0", "--datapath",
         "--bpf-pin-root", str(pin_root), "--socket-lb-cgroup", str(cgroup),
         "--bpf-lb-max-tables", "512", "--bpf-ct-max", "8192", *extra],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).parents[3]))
    try:
        wait_for(lambda: "event=datapath_ready" in path.read_text()
                 or proc.poll() is not None, 90, 0.2, "datapath_ready")
        text = path.read_text()
        assert "event=datapath_ready" in text, text[-2000:]
        yield proc, text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_agent_datapath_start_up(node: Netns) -> None:
    with agent_env() as (tmp, pin_root, cgroup):
        with agent(node, tmp, pin_root, cgroup, "--metrics-port", "19962") as (_, text):
            assert "pods_reattached=1" in text
            # a fresh conntrack: nothing to mark
            assert 'reply_filter="armed now (0 words)"' in text
            assert "rr_uplink_ingress" in filters(node, "eth0", "ingress")
            assert "rr_pod_ingress" in filters(node, "rr0123456789a", "ingress")
            assert "rr_pod_egress" in filters(node, "rr0123456789a", "egress")
            assert {"rr_pod_ingress", "rr_pod_egress"} <= set(
                pinned_programs(pin_root / "n1"))
            shown = subprocess.run(["bpftool", "cgroup", "show", str(cgroup)],
                                   capture_output=True, text=True, check=True).stdout
            assert "connect4" in shown and "sendmsg4" in shown and "connect6" in shown
            sizes = {}
            for name in ("rr_maglev", "rr_ct", "rr_ct6", "rr_svc"):
                pm = PinnedMap.open(str(pin_root / "n1" / name))
                sizes[name] = pm.max_entries
                pm.close()
            assert sizes == {"rr_maglev": 512, "rr_ct": 8192, "rr_ct6": 2048,
                             "rr_svc": 65536}
            # the node's proxy health, as kube-proxy answers it, once a pass programmed
            wait_for(lambda: node.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                       "http://127.0.0.1:10256/healthz"],
                                      check=False).stdout == "200", 20, 0.2, "healthz 200")
            # the maps' fill, as the metrics endpoint reads it from the kernel
            metrics = node.run(["curl", "-s", "http://127.0.0.1:19962/metrics"]).stdout
            assert 'rackroute_datapath_map_capacity{map="rr_ct",node="n1"} 8192.0' in metrics
            assert 'rackroute_datapath_map_entries{map="rr_svc",node="n1"} 0.0' in metrics
            assert 'rackroute_datapath_filter_armed{filter="rr_replies",node="n1"} 1.0' in metrics
        # programs stay in the kernel when the agent stops
        assert "rr_pod_ingress" in filters(node, "rr0123456789a", "ingress")


def test_without_per_packet_lb_pods_keep_only_the_forwarding_program(node: Netns) -> None:
    with agent_env() as (tmp, pin_root, cgroup):
        with agent(node, tmp, pin_root, cgroup):
            assert "rr_pod_egress" in filters(node, "rr0123456789a", "egress")
        conflist = tmp / "cni.conflist"
        with agent(node, tmp, pin_root, cgroup, "--per-packet-lb", "off",
                   "--cni-conf", str(conflist)) as (_, text):
            assert "pods_detached=0" in text and "pods_reattached=1" in text
            assert "reply_filter=armed " in text  # armed by the first start
            # forwarding in BPF stays (built without the service translation); nothing
            # is left to reverse on the way into the pod
            assert "rr_pod_ingress" in filters(node, "rr0123456789a", "ingress")
            assert "bpf" not in filters(node, "rr0123456789a", "egress")
            assert "rr_pod_egress" not in pinned_programs(pin_root / "n1")
            assert "rr_uplink_ingress" in filters(node, "eth0", "ingress")
            shown = subprocess.run(["bpftool", "cgroup", "show", str(cgroup)],
                                   capture_output=True, text=True, check=True).stdout
            assert "connect4" in shown and "sendmsg4" in shown
            wait_for(conflist.exists, 30, 0.2, "the CNI conflist")
            plugin = json.loads(conflist.read_text())["plugins"][0]
            assert plugin["bpf"] == {"pinDir": str(pin_root / "n1")}  # ingress alone
        conflist.unlink()
        with agent(node, tmp, pin_root, cgroup, "--per-packet-lb", "off",
                   "--host-routing", "kernel", "--cni-conf", str(conflist)) as (_, text):
            # the socket hooks alone: the pods' veths carry nothing
            assert "pods_detached=1" in text and "pods_reattached=0" in text
            assert "rr_pod" not in filters(node, "rr0123456789a", "ingress")
            assert "rr_pod" not in filters(node, "rr0123456789a", "egress")
            wait_for(conflist.exists, 30, 0.2, "the CNI conflist")
            plugin = json.loads(conflist.read_text())["plugins"][0]
            assert "bpf" not in plugin  # the plugin attaches no pod programs


def test_per_packet_lb_off_needs_socket_lb() -> None:
    r = subprocess.run([sys.executable, "-m", "controller.cli", "agent", "--node", "n1",
                        "--manifests", ".", "--datapath", "--per-packet-lb", "off"],
                       capture_output=True, text=True, timeout=60,
                       cwd=str(Path(__file__).parents[3]))
    assert r.returncode == 2
    assert "--per-packet-lb off needs --datapath and --socket-lb-cgroup" in r.stderr


NODE6 = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
         "spec": {"podCIDR": "fd00:62:1::/64", "podCIDRs": ["fd00:62:1::/64"]},
         "status": {"addresses": [{"type": "InternalIP", "address": "fd00:61::2"}]}}


def test_an_ipv6_only_node_starts_and_stale_pod_veth_entries_are_pruned() -> None:
    """An uplink with no IPv4 address: the datapath starts with the IPv6 SNAT source
    alone. An uplink with no address at all is refused, naming it. And an rr_pod_ifs
    entry whose interface is gone is removed at the next resync, the live pod's kept."""
    from bpf import maps as m

    with namespace(f"rrd6{os.getpid() % 100000}") as ns, agent_env() as (tmp, pin_root,
                                                                        cgroup):
        ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        ns.ip("link", "add", "rr0123456789a", "type", "veth", "peer", "name", "p0")
        for dev in ("eth0", "eth1", "rr0123456789a", "p0"):
            ns.link_up(dev)
        (tmp / "m" / "node.yaml").write_text(yaml.safe_dump(NODE6))
        bare = subprocess.run(
            ["nsenter", f"--net=/run/netns/{ns.name}", "--", sys.executable, "-m",
             "controller.cli", "agent", "--node", "n1", "--manifests", str(tmp / "m"),
             "--state-dir", str(tmp / "s"), "--metrics-port", "0", "--datapath",
             "--bpf-pin-root", str(pin_root), "--bpf-lb-max-tables", "512",
             "--bpf-ct-max", "8192"],
            capture_output=True, text=True, timeout=120, cwd=str(Path(__file__).parents[3]))
        assert bare.returncode != 0
        assert "--uplink eth0: has neither an IPv4 nor a global IPv6 address" in \
            bare.stdout + bare.stderr
        ns.ip("-6", "addr", "add", "fd00:61::2/64", "dev", "eth0", "nodad")
        with agent(ns, tmp, pin_root, cgroup, "--resync", "1") as (_, text):
            assert 'node_addr=- node_addr6=fd00:61::2' in text, text[-2000:]
            assert "rr_uplink_ingress" in filters(ns, "eth0", "ingress")
            cfg = PinnedMap.open(str(pin_root / "n1" / "rr_config"))
            try:
                raw = cfg.lookup(bytes(4))
                assert raw is not None
                val = m.Config.from_buffer_copy(raw)
            finally:
                cfg.close()
            assert bytes(val.node_addr) == bytes(16)  # no IPv4 SNAT source
            assert bytes(val.node_addr6) == ipaddress.IPv6Address("fd00:61::2").packed
            pods = PinnedMap.open(str(pin_root / "n1" / "rr_pod_ifs"))
            try:
                live = {k for k, _ in pods.items()}
                assert len(live) == 1  # the pod veth, recorded when re-attached
                gone = (0x7FFFFFF0).to_bytes(4, "little")
                pods.update_batch([(gone, bytes(8))])
                wait_for(lambda: pods.lookup(gone) is None, 20, 0.2, "the stale entry pruned")
                assert {k for k, _ in pods.items()} == live
            finally:
                pods.close()


POLICY_DOCS = [
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "api", "namespace": "web", "labels": {"app": "api"}},
     "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "app"}]},
     "status": {"phase": "Running", "podIPs": [{"ip": "10.62.1.5"}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "api", "namespace": "web"},
     "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "ingress": [
         {"ports": [{"port": 8080}]}]}},
]


def test_network_policy_reaches_pods_that_exist_and_goes_when_switched_off(
        node: Netns) -> None:
    """--network-policy: the policy programs are pinned, attached to the pod that existed
    before (found through its veth in its own namespace) and the maps hold the pod's
    compiled entries; an agent started without it removes the pins and empties the maps,
    so the programs still on the pod let everything pass."""
    from bpf import maps as m

    pod = f"rrd{os.getpid() % 100000}p"
    with namespace(pod) as pns, agent_env() as (tmp, pin_root, cgroup):
        # a pod as the CNI plugin leaves it: its veth's host side here, its eth0 there,
        # and its gateway's neighbour entry holding the host side's MAC
        node.ip("link", "add", "rr0123456789b", "type", "veth", "peer", "name", "eth0",
                "netns", pns.name)
        node.link_up("rr0123456789b")
        pns.link_up("eth0")
        mac = json.loads(node.ip("-j", "link", "show", "rr0123456789b").stdout)[0]["address"]
        pns.ip("addr", "add", "10.62.1.5/32", "dev", "eth0")
        pns.ip("neigh", "replace", "169.254.1.1", "lladdr", mac, "dev", "eth0", "nud",
               "permanent")
        (tmp / "m" / "policy.yaml").write_text(yaml.safe_dump_all(POLICY_DOCS))
        with agent(node, tmp, pin_root, cgroup, "--network-policy") as (_, text):
            assert "network_policy=\"on (1 pods)\"" in text, text[-2000:]
            assert {"rr_pol_to_pod", "rr_pol_from_pod"} <= set(pinned_programs(pin_root / "n1"))
            assert "rr_pol_to_pod" in pns.run(["tc", "filter", "show", "dev", "eth0",
                                               "ingress"]).stdout
            assert "rr_pol_from_pod" in pns.run(["tc", "filter", "show", "dev", "eth0",
                                                 "egress"]).stdout
            eps = PinnedMap.open(str(pin_root / "n1" / "rr_pol_eps"))
            try:
                wait_for(lambda: len(list(eps.items())) == 1, 20, 0.2, "the pod's endpoint")
                (raw,) = [v for _, v in eps.items()]
                assert m.PolEp.from_buffer_copy(raw).flags == 0x1  # isolated for ingress
            finally:
                eps.close()
        with agent(node, tmp, pin_root, cgroup) as (_, text):
            assert "network_policy=off" in text
            assert "rr_pol_to_pod" not in pinned_programs(pin_root / "n1")
            eps = PinnedMap.open(str(pin_root / "n1" / "rr_pol_eps"))
            try:
                assert list(eps.items()) == []
            finally:
                eps.close()


NEW_POD_DOCS = [
    {"apiVersion": "v1", "kind": "Pod",  # scheduled, its sandbox not made: no address yet
     "metadata": {"name": "api", "namespace": "web", "labels": {"app": "api"}, "uid": "u-api"},
     "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "app"}]},
     "status": {"phase": "Pending"}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "late", "namespace": "web", "labels": {"app": "api"}},
     "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "app"}]},
     "status": {"phase": "Pending"}},
    POLICY_DOCS[1],
]


def cni(node: Netns, conf: dict[str, object], command: str, cid: str, pod_ns: str,
        name: str) -> tuple[int, dict[str, object]]:
    """The real plugin, run as a runtime runs it, in the node's namespace."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
           "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_NETNS": f"/run/netns/{pod_ns}",
           "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME={name};"
                       f"K8S_POD_UID=u-{name}"}
    r = subprocess.run(["nsenter", f"--net=/run/netns/{node.name}", "--",
                        str(Path(sys.executable).parent / "rackroute-cni")],
                       input=json.dumps(conf), capture_output=True, text=True, env=env,
                       timeout=60)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}


def test_a_new_pod_is_under_its_policy_when_its_add_returns(node: Netns) -> None:
    """Under --network-policy the plugin's ADD hands the agent the new pod's address and
    returns only once the agent has programmed the pod's policy: right after ADD the maps
    guard the pod, although its Pod status has no address yet (the API server would
    learn it only after the sandbox is up). With no agent to answer, ADD is refused after
    bpf.policyWait, naming the pod, and leaves no veth and no address behind."""
    from bpf import maps as m
    from controller.cni.netsetup import host_ifname

    pods = [f"rrd{os.getpid() % 100000}{c}" for c in "qr"]
    with namespace(pods[0]), namespace(pods[1]), agent_env() as (tmp, pin_root, cgroup):
        (tmp / "m" / "policy.yaml").write_text(yaml.safe_dump_all(NEW_POD_DOCS))
        conflist, data = tmp / "net.d" / "10-rackroute.conflist", tmp / "cni"
        with agent(node, tmp, pin_root, cgroup, "--network-policy", "--cni-conf",
                   str(conflist), "--cni-data-dir", str(data)):
            wait_for(conflist.exists, 20, 0.2, "the CNI config")
            doc = json.loads(conflist.read_text())
            conf = {"cniVersion": doc["cniVersion"], "name": doc["name"], **doc["plugins"][0]}
            rc, res = cni(node, conf, "ADD", "c1", pods[0], "api")
            assert rc == 0, res
            ip = ipaddress.ip_address(str(res["ips"][0]["address"]).split("/")[0])  # type: ignore[index]
            eps = PinnedMap.open(str(pin_root / "n1" / "rr_pol_eps"))
            try:
                held = {m.ip_of(m.PolEpKey.from_buffer_copy(k).addr,
                                m.PolEpKey.from_buffer_copy(k).family):
                        m.PolEp.from_buffer_copy(v).flags for k, v in eps.items()}
            finally:
                eps.close()
            assert held == {ip: 0x1}  # isolated for ingress, as ADD returned
        # the agent gone (its programs stay pinned): a new pod waits, then is refused
        conf["bpf"] = {**conf["bpf"], "policyWait": 1}  # type: ignore[dict-item]
        rc, res = cni(node, conf, "ADD", "c2", pods[1], "late")
        assert rc != 0 and res["code"] == 106, res
        assert "web/late" in str(res["msg"]) and "policyWait" in str(res["details"])
        links = node.ip("-o", "link").stdout
        assert host_ifname("c1", "eth0") in links and host_ifname("c2", "eth0") not in links
        assert sorted(p.name for p in (data / "ips").iterdir()) == [str(ip)]  # c1's only
        assert not list((data / "pods").glob("c2-*"))
