"""The agent's datapath start-up, as a real process in a node namespace: programs on the
uplink and on pod veths that already exist, pins for the CNI, socket LB on its cgroup,
map sizes from its flags."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bpf.mapstore import PinnedMap
from bpf.progpin import pinned_programs
from controller.lab.netns import Netns, namespace, wait_for

CGROUP2 = Path("/sys/fs/cgroup/unified")
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.61.0.2"}]}}


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


def test_agent_datapath_start_up(node: Netns) -> None:
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip(f"needs a cgroup v2 mount at {CGROUP2}")
    tmp = Path(tempfile.mkdtemp(prefix="rrd-"))
    pin_root = Path(f"/sys/fs/bpf/rackroute-agenttest-{os.getpid()}")
    cgroup = CGROUP2 / f"rackroute-agenttest-{os.getpid()}"
    (tmp / "m").mkdir()
    (tmp / "m" / "node.yaml").write_text(yaml.safe_dump(NODE))
    log = open(tmp / "agent.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{node.name}", "--", sys.executable, "-m",
         "controller.cli", "agent", "--node", "n1", "--manifests", str(tmp / "m"),
         "--state-dir", str(tmp / "s"), "--metrics-port", "0", "--datapath",
         "--bpf-pin-root", str(pin_root), "--socket-lb-cgroup", str(cgroup),
         "--bpf-lb-max-tables", "512", "--bpf-ct-max", "8192"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).parents[3]))
    try:
        wait_for(lambda: "event=datapath_ready" in (tmp / "agent.log").read_text()
                 or proc.poll() is not None, 90, 0.2, "datapath_ready")
        text = (tmp / "agent.log").read_text()
        assert "event=datapath_ready" in text, text[-2000:]
        assert "pods_reattached=1" in text
        assert 'reply_filter="armed now (0 words)"' in text  # a fresh conntrack: nothing to mark
        assert "rr_uplink_ingress" in filters(node, "eth0", "ingress")
        assert "rr_pod_ingress" in filters(node, "rr0123456789a", "ingress")
        assert "rr_pod_egress" in filters(node, "rr0123456789a", "egress")
        assert {"rr_pod_ingress", "rr_pod_egress"} <= set(pinned_programs(pin_root / "n1"))
        shown = subprocess.run(["bpftool", "cgroup", "show", str(cgroup)],
                               capture_output=True, text=True, check=True).stdout
        assert "connect4" in shown and "sendmsg4" in shown and "connect6" in shown
        sizes = {}
        for name in ("rr_maglev", "rr_ct", "rr_ct6", "rr_svc"):
            pm = PinnedMap.open(str(pin_root / "n1" / name))
            sizes[name] = pm.max_entries
            pm.close()
        assert sizes == {"rr_maglev": 512, "rr_ct": 8192, "rr_ct6": 2048, "rr_svc": 65536}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        # programs stay in the kernel when the agent stops
        assert "rr_pod_ingress" in filters(node, "rr0123456789a", "ingress")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(pin_root, ignore_errors=True)
        if cgroup.exists():
            cgroup.rmdir()
        shutil.rmtree(tmp, ignore_errors=True)
