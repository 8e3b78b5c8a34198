"""The node's CNI network config, kept equal to what the node's pods need.

The container runtime reads it for every pod it creates: the node's pod CIDRs (from its
NodeNetwork, or the Node in `kubernetes` IPAM mode), the pod MTU (lowered while the node
tunnels: VXLAN / Geneve headers take 50 bytes), the IPAM store and the pinned datapath
programs the plugin attaches. Written atomically, and only when the file's content
differs from it (the file itself is compared on every pass, so a conflist that was
deleted or edited by hand is written again); nothing is written until the node has a pod
CIDR (so the runtime keeps the node not ready).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.desired.podcidr import node_pod_cidrs
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.cni")


def conflist(cidrs: list[str], mtu: int, data_dir: Path, pin_dir: Path | None,
             policy_wait: float | None = None, pod_programs: bool = True,
             name: str = "rackroute") -> dict[str, Any]:
    """The conflist document (pure). policy_wait: how long the plugin's ADD waits for a
    new pod's network policy (None: the plugin's default), with the pinned programs;
    pod_programs False: the plugin attaches only the network policy programs from them
    (the pods' veths carry none)."""
    plugin: dict[str, Any] = {
        "type": "rackroute-cni",
        "podCIDRs": cidrs,
        "mtu": mtu,
        "dataDir": str(data_dir),
    }
    if pin_dir is not None:
        plugin["bpf"] = {"pinDir": str(pin_dir)}
        if policy_wait is not None:
            plugin["bpf"]["policyWait"] = policy_wait
        if not pod_programs:
            plugin["bpf"]["podPrograms"] = False
    # cniVersions: a runtime that speaks 1.1.0 picks it (GC and STATUS), older ones 1.0.0
    return {"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": name,
            "plugins": [plugin]}


def read_conflist(path: Path) -> dict[str, Any] | None:
    """The JSON document in the file at path; None when it is missing, unreadable or not
    a JSON object (then it is to be written)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError too
        return None
    return doc if isinstance(doc, dict) else None


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write doc as JSON at path through a temporary file renamed over it: a runtime
    never reads half a config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from non-root readers
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def plugin_conf(doc: dict[str, Any]) -> dict[str, Any]:
    """The network config a runtime hands the plugin for a conflist's first plugin."""
    conf = dict(doc["plugins"][0])
    conf["cniVersion"] = doc["cniVersion"]
    conf["name"] = doc["name"]
    return conf


class CniConfigReconciler:
    """Writes the conflist at `path` whenever the file's content is not what the node's
    pods need: pod CIDRs or the pod MTU changed, or the file is missing or was edited."""

    name = "cni-config"

    def __init__(self, path: Path, data_dir: Path, pin_dir: Path | None,
                 tunnel_mtu: Callable[[], int | None] = lambda: None,
                 underlay_mtu: int = 1500, policy_wait: float | None = None,
                 pod_programs: bool = True, network: str = "rackroute") -> None:
        self.path, self.data_dir, self.pin_dir = path, data_dir, pin_dir
        self.policy_wait = policy_wait
        self.pod_programs = pod_programs
        self.network = network
        self.tunnel_mtu = tunnel_mtu
        self.underlay_mtu = underlay_mtu

    def reconcile(self, ctx: PassContext) -> None:
        cidrs = [str(c) for c in node_pod_cidrs(ctx.snap, ctx.node)]
        if not cidrs:
            return
        doc = conflist(cidrs, self.tunnel_mtu() or self.underlay_mtu, self.data_dir,
                       self.pin_dir, self.policy_wait, self.pod_programs, self.network)
        found = read_conflist(self.path)
        if found == doc:
            return
        write_atomic(self.path, doc)
        log.info("event=cni_config_written path=%s reason=%s pod_cidrs=%s mtu=%d", self.path,
                 "missing" if found is None else "changed", ",".join(cidrs),
                 doc["plugins"][0]["mtu"])

    def close(self) -> None:
        """The config stays: pods keep being created while the agent restarts."""
