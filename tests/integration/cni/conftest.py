"""A host namespace and pod namespaces of our own, and a runner that calls the real
`rackroute-cni` executable the way a container runtime does (CNI_* env + config on
stdin), with the plugin's network namespace set to the test's host namespace.

Everything is named `rrc<pid>…` and removed at teardown, even when a test fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PLUGIN = Path(sys.executable).parent / "rackroute-cni"
PID = os.getpid()
HOST_ADDR = "10.99.0.1"
HOST_ADDR6 = "fd99::1"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def ns_json(ns: str, *argv: str) -> Any:
    return json.loads(sh("ip", "-n", ns, "-j", *argv).stdout or "[]")


@dataclass
class CniRun:
    rc: int
    out: Any
    stderr: str


@dataclass
class CniLab:
    """One test's host namespace, its pods, and the plugin's data dir."""

    tag: str
    data_dir: Path
    host: str = ""
    pods: list[str] = field(default_factory=list)
    conf: dict[str, Any] = field(default_factory=dict)

    def pod(self) -> str:
        name = f"rrc{self.tag}p{len(self.pods)}"
        assert len(name) <= 15
        sh("ip", "netns", "add", name)
        self.pods.append(name)
        return name

    def netns_path(self, pod: str) -> str:
        return f"/var/run/netns/{pod}"

    def env(self, command: str, cid: str, pod: str | None, ifname: str = "eth0"
            ) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_PATH": "/opt/cni/bin",
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME={cid}"}
        if pod is not None:
            env["CNI_NETNS"] = self.netns_path(pod)
        return env

    def argv(self) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.host}", str(PLUGIN)]

    def stdin(self, prev: Any = None, **over: Any) -> str:
        conf = {**self.conf, **over}
        if prev is not None:
            conf["prevResult"] = prev
        return json.dumps(conf)

    def call(self, command: str, cid: str, pod: str | None, prev: Any = None,
             ifname: str = "eth0", **over: Any) -> CniRun:
        p = subprocess.run(self.argv(), input=self.stdin(prev, **over), capture_output=True,
                           text=True, env=self.env(command, cid, pod, ifname), timeout=60)
        return CniRun(p.returncode, json.loads(p.stdout) if p.stdout.strip() else None,
                      p.stderr)

    def add(self, cid: str, pod: str, **over: Any) -> dict[str, Any]:
        r = self.call("ADD", cid, pod, **over)
        assert r.rc == 0, (r.out, r.stderr)
        assert isinstance(r.out, dict)
        return r.out


def _cleanup(lab: CniLab) -> None:
    for ns in [*lab.pods, lab.host]:
        if ns:
            sh("ip", "netns", "del", ns, check=False)
    shutil.rmtree(lab.data_dir, ignore_errors=True)


_counter = iter(range(100))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[CniLab]:
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is not installed (pip install -e .)")
    tag = f"{PID}{next(_counter):02d}"  # up to 9 chars: rrc<tag>p<n> fits 15
    cl = CniLab(tag, tmp_path / "cni")
    try:
        cl.host = f"rrc{tag}h"
        sh("ip", "netns", "add", cl.host)
        sh("ip", "-n", cl.host, "addr", "add", f"{HOST_ADDR}/32", "dev", "lo")
        sh("ip", "-n", cl.host, "addr", "add", f"{HOST_ADDR6}/128", "dev", "lo")
        sh("ip", "-n", cl.host, "link", "set", "lo", "up")
        cl.conf = {"cniVersion": "1.0.0", "name": "rackroute", "type": "rackroute-cni",
                   "podCIDRs": ["10.244.0.0/24"], "mtu": 1400, "dataDir": str(cl.data_dir)}
        yield cl
    finally:
        _cleanup(cl)
