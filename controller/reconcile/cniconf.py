"""The node's CNI network config, kept equal to what the node's pods need.

The container runtime reads it for every pod it creates: the node's pod CIDRs (from its
NodeNetwork, or the Node in `kubernetes` IPAM mode), the pod MTU (lowered while the node
tunnels: VXLAN / Geneve headers take 50 bytes), the IPAM store and the pinned datapath
programs the plugin attaches. Written atomically, and only when the file's content
differs from it (the file itself is compared on every pass, so a conflist that was
deleted or edited by hand is written again); nothing is written until the node has a pod
CIDR (so the runtime keeps the node not ready).

With host ports on (the agent's --cni-host-ports, the default) the standard `portmap`
plugin is chained after rackroute-cni, as Calico does: the runtime hands it the pods'
`hostPort`s (its `portMappings` capability) and rackroute-cni's result, and it DNATs the
node's ports to the pod. It is chained only while its executable is in the CNI bin
directory (a conflist naming a missing plugin would fail every pod's ADD); while it is
not, one warning names the missing file, and the conflist gains it once it appears.
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

DEFAULT_BIN_DIR = Path("/opt/cni/bin")  # where runtimes look for CNI plugins
PORTMAP = "portmap"  # the standard CNI plugin (containernetworking/plugins) for hostPort


def portmap_plugin() -> dict[str, Any]:
    """The conflist entry chaining `portmap` after rackroute-cni: the runtime passes the
    pod's hostPorts as runtimeConfig.portMappings; snat masquerades hairpin and localhost
    connections to a host port so the pod's replies come back through the node."""
    return {"type": PORTMAP, "capabilities": {"portMappings": True}, "snat": True}


def conflist(cidrs: list[str], mtu: int, data_dir: Path, pin_dir: Path | None,
             policy_wait: float | None = None, pod_programs: bool = True,
             name: str = "rackroute", host_ports: bool = False) -> dict[str, Any]:
    """The conflist document (pure). policy_wait: how long the plugin's ADD waits for a
    new pod's network policy (None: the plugin's default), with the pinned programs;
    pod_programs False: the plugin attaches only the network policy programs from them
    (the pods' veths carry none); host_ports: portmap chained after rackroute-cni."""
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
    plugins = [plugin, portmap_plugin()] if host_ports else [plugin]
    # cniVersions: a runtime that speaks 1.1.0 picks it (GC and STATUS), older ones 1.0.0
    return {"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": name,
            "plugins": plugins}


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


def plugin_conf(doc: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """The network config a runtime hands a conflist's plugin (the first: rackroute-cni),
    before it adds runtimeConfig and prevResult."""
    conf = dict(doc["plugins"][index])
    conf["cniVersion"] = doc["cniVersion"]
    conf["name"] = doc["name"]
    return conf


class CniConfigReconciler:
    """Writes the conflist at `path` whenever the file's content is not what the node's
    pods need: pod CIDRs or the pod MTU changed, portmap appeared in or left the CNI bin
    directory (with host ports on), or the file is missing or was edited."""

    name = "cni-config"

    def __init__(self, path: Path, data_dir: Path, pin_dir: Path | None,
                 tunnel_mtu: Callable[[], int | None] = lambda: None,
                 underlay_mtu: int = 1500, policy_wait: float | None = None,
                 pod_programs: bool = True, network: str = "rackroute",
                 host_ports: bool = False, bin_dir: Path = DEFAULT_BIN_DIR) -> None:
        self.path, self.data_dir, self.pin_dir = path, data_dir, pin_dir
        self.policy_wait = policy_wait
        self.pod_programs = pod_programs
        self.network = network
        self.tunnel_mtu = tunnel_mtu
        self.underlay_mtu = underlay_mtu
        self.host_ports, self.bin_dir = host_ports, bin_dir
        self._warned_missing = False  # one warning while portmap stays missing

    def _chain_portmap(self) -> bool:
        """Whether the conflist chains portmap: host ports on and its executable in the
        CNI bin directory; a warning naming the missing file once it is not there."""
        if not self.host_ports:
            return False
        binary = self.bin_dir / PORTMAP
        if binary.is_file():
            self._warned_missing = False
            return True
        if not self._warned_missing:
            log.warning("event=cni_host_ports_unavailable missing=%s: pods' hostPorts get no "
                        "port until the standard portmap CNI plugin is installed there "
                        "(--cni-host-ports off: no host ports, no warning)",
                        binary)
            self._warned_missing = True
        return False

    def reconcile(self, ctx: PassContext) -> None:
        cidrs = [str(c) for c in node_pod_cidrs(ctx.snap, ctx.node)]
        if not cidrs:
            return
        doc = conflist(cidrs, self.tunnel_mtu() or self.underlay_mtu, self.data_dir,
                       self.pin_dir, self.policy_wait, self.pod_programs, self.network,
                       self._chain_portmap())
        found = read_conflist(self.path)
        if found == doc:
            return
        write_atomic(self.path, doc)
        log.info("event=cni_config_written path=%s reason=%s pod_cidrs=%s mtu=%d plugins=%s",
                 self.path, "missing" if found is None else "changed", ",".join(cidrs),
                 doc["plugins"][0]["mtu"], ",".join(p["type"] for p in doc["plugins"]))

    def close(self) -> None:
        """The config stays: pods keep being created while the agent restarts."""
