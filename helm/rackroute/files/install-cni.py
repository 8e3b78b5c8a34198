"""Install rackroute-cni on the host and write its conflist (the agent's init container).

1. Copies the rackroute-cni executable into the host's CNI bin directory (atomically:
   write beside, then rename, so a runtime never runs a half-written file).
2. Finds this node's pod CIDRs from the Kubernetes API: the NodeNetwork named like the
   node (IPAM mode cluster-pool, written by the operator) or Node.spec.podCIDRs (mode
   kubernetes). It waits until they exist; the kubelet keeps the node NotReady until a
   conflist appears, so no pod lands before.
3. Writes the conflist atomically into the host's CNI config directory: the node can
   go Ready before the agent runs. With CNI_HOST_PORTS=1 (the chart's cni.hostPorts) the
   standard `portmap` plugin is chained after rackroute-cni for the pods' hostPorts,
   when its executable is in the CNI bin directory (else a warning names it). The agent
   (`rackroute agent --cni-conf`) then keeps it: the pod MTU lowered while the node
   tunnels, pod CIDR changes, portmap installed later, a deleted or edited file written
   again.

With CNI_CONF_BY_AGENT=1 (the chart's `source: manifests`, where the cluster is not in
the API server) it stops after step 1: the agent writes the conflist itself
(`rackroute agent --cni-conf`), from the pod CIDRs it plans.

Standard library only; configured by environment variables set in the DaemonSet.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PORTMAP = "portmap"  # the standard CNI plugin for hostPorts, chained after rackroute-cni


def conflist(
    name: str, pod_cidrs: list[str], mtu: int, data_dir: str, pin_dir: str,
    pod_programs: bool = True, policy_wait: float | None = None, host_ports: bool = False,
) -> dict[str, Any]:
    """The network configuration list the container runtime reads (the agent's
    controller/reconcile/cniconf.py writes the same document, and keeps it so);
    host_ports: portmap chained after rackroute-cni."""
    plugin: dict[str, Any] = {
        "type": "rackroute-cni",
        "podCIDRs": pod_cidrs,
        "mtu": mtu,
        "dataDir": data_dir,
    }
    if pin_dir:
        plugin["bpf"] = {"pinDir": pin_dir}
        if policy_wait is not None:
            plugin["bpf"]["policyWait"] = policy_wait
        if not pod_programs:  # the network policy programs alone
            plugin["bpf"]["podPrograms"] = False
    plugins = [plugin]
    if host_ports:
        plugins.append({"type": PORTMAP, "capabilities": {"portMappings": True}, "snat": True})
    return {"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": name,
            "plugins": plugins}


def chain_portmap(wanted: bool, bin_dir: Path) -> bool:
    """Host ports asked for and portmap in the CNI bin directory (a conflist naming a
    missing plugin would fail every pod); a warning naming the missing file otherwise."""
    if not wanted:
        return False
    if (bin_dir / PORTMAP).is_file():
        return True
    print(f"warning: {bin_dir / PORTMAP} is missing: pods' hostPorts get no port until the "
          "standard portmap CNI plugin is installed there", file=sys.stderr, flush=True)
    return False


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def api_get(path: str) -> dict[str, Any] | None:
    """GET from the API server with the pod's service account; None on 404."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    ctx = ssl.create_default_context(cafile=str(SA / "ca.crt"))
    req = urllib.request.Request(
        f"https://{host}:{port}{path}",
        headers={"Authorization": f"Bearer {(SA / 'token').read_text().strip()}"},
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            doc: dict[str, Any] = json.load(resp)
            return doc
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def pod_cidrs(node: str, mode: str) -> list[str]:
    if mode == "kubernetes":
        doc = api_get(f"/api/v1/nodes/{node}") or {}
    else:
        doc = api_get(f"/apis/rackroute.io/v1alpha1/nodenetworks/{node}") or {}
    cidrs = (doc.get("spec") or {}).get("podCIDRs") or []
    return [str(c) for c in cidrs]


def main() -> int:
    env = os.environ
    node = env["NODE_NAME"]
    bin_dir, conf_dir = Path(env["CNI_BIN_DIR"]), Path(env["CNI_CONF_DIR"])
    source = Path(env.get("CNI_SOURCE", "/usr/local/bin/rackroute-cni"))
    bin_dir.mkdir(parents=True, exist_ok=True)
    tmp = bin_dir / ".rackroute-cni.tmp"
    shutil.copyfile(source, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, bin_dir / "rackroute-cni")
    print(f"installed {bin_dir / 'rackroute-cni'}", flush=True)
    if env.get("CNI_CONF_BY_AGENT") == "1":
        print("the agent writes the conflist", flush=True)
        return 0

    mode = env.get("IPAM_MODE", "cluster-pool")
    while True:
        try:
            cidrs = pod_cidrs(node, mode)
        except (OSError, urllib.error.URLError, ValueError) as e:
            print(f"waiting for the API server: {e}", file=sys.stderr, flush=True)
            cidrs = []
        if cidrs:
            break
        print(f"waiting for pod CIDRs of node {node} (ipam mode {mode})", flush=True)
        time.sleep(5)

    doc = conflist(
        env.get("CNI_NETWORK_NAME", "rackroute"),
        cidrs,
        int(env.get("CNI_MTU", "1500")),
        env.get("CNI_DATA_DIR", "/var/lib/rackroute/cni"),
        env.get("CNI_BPF_PIN_DIR", ""),
        env.get("CNI_BPF_POD_PROGRAMS", "1") != "0",
        float(env["CNI_BPF_POLICY_WAIT"]) if env.get("CNI_BPF_POLICY_WAIT") else None,
        chain_portmap(env.get("CNI_HOST_PORTS", "1") != "0", bin_dir),
    )
    conf_dir.mkdir(parents=True, exist_ok=True)
    target = conf_dir / env.get("CNI_CONF_NAME", "05-rackroute.conflist")
    write_atomic(target, (json.dumps(doc, indent=2) + "\n").encode(), 0o644)
    print(f"wrote {target}: podCIDRs {', '.join(cidrs)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
