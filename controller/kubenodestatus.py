"""An agent's BGP status as its node's BGPNodeConfig object (with the kube source).

The agent's status document (controller/bgpstatus.py) becomes the object named after the
node: the spec holds the resolved instances and peers, the status each session's state,
timers and route counts in the CRD's shape (Cilium's BGPNodeConfig status), and a
`ConfigValid` condition that carries the node's BGP problems. `node_doc` turns the object
back into the status document's shape for `rackroute bgp peers`. The agent also reports on
its node's NodeNetwork (which the operator creates): how other nodes reach its pods
(`routing`, and the `tunnelEndpoint` while it tunnels) and whether its last pass went
through without an error (`healthy`), with the time of that report, so
`kubectl get nodenetworks` shows each node's state. It writes only when one of them
changes: every agent watches NodeNetworks, and a periodic write would wake them all.
The per-route lists stay out of the objects (they would grow with the routes); `bgp
routes` reads them from the status files of a manifest directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from controller.sources.kubeapi import RESOURCES, ApiError, KubeAPI, Obj

log = logging.getLogger("rackroute.agent")
RES = RESOURCES["BGPNodeConfig"]
NODE_NETWORK = RESOURCES["NodeNetwork"]
MANAGED_BY = {"app.kubernetes.io/managed-by": "rackroute-agent"}


def _family(name: str) -> tuple[str, str]:
    afi, _, safi = name.partition("-")
    return afi, safi or "unicast"


def node_config(doc: dict[str, Any], now: str) -> Obj:
    """The BGPNodeConfig object for a node's status document (pure but for `now`)."""
    spec_insts: list[dict[str, Any]] = []
    st_insts: list[dict[str, Any]] = []
    total = established = 0
    for inst in doc.get("instances") or []:
        spec_peers, st_peers = [], []
        for p in inst.get("peers") or []:
            total += 1
            established += p.get("state") == "established"
            spec_peers.append({"name": p["name"], "peerAddress": p["peerAddress"],
                               "peerASN": p["peerASN"]})
            peer: dict[str, Any] = {
                "name": p["name"], "peerAddress": p["peerAddress"], "peerASN": p["peerASN"],
                "peeringState": p.get("state") or "unknown",
                "appliedTimers": {k: v for k, v in (p.get("appliedTimers") or {}).items()
                                  if v is not None},
                "routeCount": [
                    {"afi": _family(f)[0], "safi": _family(f)[1],
                     "received": c.get("received", 0), "advertised": c.get("advertised", 0)}
                    for f, c in sorted((p.get("routeCount") or {}).items())],
            }
            if p.get("establishedTime"):
                peer["establishedTime"] = p["establishedTime"]
            if p.get("lastError"):
                peer["lastError"] = p["lastError"]
            if p.get("bfd"):
                peer["bfd"] = {"state": p["bfd"]["state"], "diagnostic": p["bfd"]["diag"]}
            st_peers.append(peer)
        spec_inst: dict[str, Any] = {"name": inst["name"], "localASN": inst["localASN"],
                                     "routerID": inst["routerID"], "peers": spec_peers}
        if (inst.get("localPort") or 0) > 0:  # -1: not listening (active only)
            spec_inst["localPort"] = inst["localPort"]
        spec_insts.append(spec_inst)
        st_insts.append({"name": inst["name"], "peers": st_peers})
    problems = list(doc.get("problems") or [])
    cond = {"type": "ConfigValid", "status": "False" if problems else "True",
            "reason": "Problems" if problems else "NoProblems",
            "message": "; ".join(problems)[:32768], "lastTransitionTime": now}
    return {
        "apiVersion": RES.api_version, "kind": RES.kind,
        "metadata": {"name": doc["node"], "labels": dict(MANAGED_BY)},
        "spec": {"bgpInstances": spec_insts},
        "status": {"bgpInstances": st_insts, "peers": total, "establishedPeers": established,
                   "conditions": [cond]},
    }


def node_doc(obj: Obj) -> dict[str, Any]:
    """A BGPNodeConfig back in the status document's shape (what `bgp peers` prints)."""
    spec = {i.get("name"): i for i in (obj.get("spec") or {}).get("bgpInstances") or []}
    status = obj.get("status") or {}
    instances = []
    for inst in status.get("bgpInstances") or []:
        s = spec.get(inst.get("name")) or {}
        instances.append({
            "name": inst.get("name"), "localASN": s.get("localASN"),
            "routerID": s.get("routerID"), "localPort": s.get("localPort"),
            "peers": [{
                "name": p.get("name"), "peerAddress": p.get("peerAddress"),
                "peerASN": p.get("peerASN"), "state": p.get("peeringState"),
                "establishedTime": p.get("establishedTime"),
                "appliedTimers": p.get("appliedTimers") or {},
                "routeCount": {f"{c.get('afi')}-{c.get('safi')}":
                               {"received": c.get("received"), "advertised": c.get("advertised")}
                               for c in p.get("routeCount") or []},
                "lastError": p.get("lastError"),
                "bfd": {"state": p["bfd"].get("state"), "diag": p["bfd"].get("diagnostic")}
                if p.get("bfd") else None,
            } for p in inst.get("peers") or []],
        })
    problems = [c.get("message") for c in status.get("conditions") or []
                if c.get("type") == "ConfigValid" and c.get("status") == "False"]
    return {"node": (obj.get("metadata") or {}).get("name"), "instances": instances,
            "problems": [m for p in problems for m in str(p).split("; ") if m],
            "routes": {}, "notAdvertised": []}


MAX_PROBLEMS = 16  # NodeNetwork status.problems: items, and characters per item
MAX_PROBLEM_LEN = 1024


def network_status(healthy: bool, tunnel_endpoint: str | None, now: str,
                   problems: Sequence[str] = ()) -> dict[str, Any]:
    """The agent's part of its NodeNetwork's status (the operator writes the conditions;
    a merge patch of these fields leaves them alone). `problems`: why the node is not
    healthy, or what it could not read, one line per concern (the first MAX_PROBLEMS, each
    cut at MAX_PROBLEM_LEN characters), so `kubectl get nodenetwork NODE -o yaml` says
    what a log would."""
    shown = [p if len(p) <= MAX_PROBLEM_LEN else p[:MAX_PROBLEM_LEN - 1] + "…"
             for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown[-1] = f"… and {len(problems) - MAX_PROBLEMS + 1} more (the agent's log)"
    return {"healthy": healthy, "routing": "tunnel" if tunnel_endpoint else "native",
            "tunnelEndpoint": tunnel_endpoint, "problems": shown, "lastHeartbeatTime": now}


class KubeNodeStatus:
    """Writes a node's BGPNodeConfig (created when missing, spec and status patched) and
    its part of the node's NodeNetwork status."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self._spec: Any = None  # the spec last written
        self._net: dict[str, Any] | None = None  # the NodeNetwork fields last written

    def write_network(self, node: str, status: dict[str, Any]) -> bool:
        """Patch the NodeNetwork's status when a field changed (its time aside); False
        when nothing was written (unchanged, or no NodeNetwork yet)."""
        fields = {k: v for k, v in status.items() if k != "lastHeartbeatTime"}
        if fields == self._net:
            return False
        try:
            self.api.merge_patch(NODE_NETWORK, node, {"status": status}, sub="status")
        except ApiError as e:
            if e.status == 404:
                return False  # the operator has not created it yet
            raise
        self._net = fields
        return True

    def write(self, doc: dict[str, Any], now: str) -> None:
        obj = node_config(doc, now)
        name = obj["metadata"]["name"]
        if self._spec != obj["spec"]:
            try:
                self.api.merge_patch(RES, name, {"metadata": obj["metadata"],
                                                 "spec": obj["spec"]})
            except ApiError as e:
                if e.status != 404:
                    raise
                self.api.create(RES, obj)
                log.info("event=bgp_node_config_created node=%s", name)
            self._spec = obj["spec"]
        try:
            self.api.merge_patch(RES, name, {"status": obj["status"]}, sub="status")
        except ApiError:
            self._spec = None  # deleted behind us: create it again next time
            raise
