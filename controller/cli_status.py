"""`rackroute status`: one screen for the whole cluster, from what the agents and the
operator report (never from the desired state): each node's health, its routing, its
BGP sessions and BFD, the LoadBalancer IPs allocated and the pools; then every line of
trouble, naming where it comes from.

From a manifest directory it reads the status files (`.status/node-*.yaml` and
`operator.yaml`); from the cluster, the BGPNodeConfigs, the NodeNetworks' status, the
Services' and the pools'.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from controller.report import table
from controller.sources.kubeapi import RESOURCES, KubeAPI
from controller.sources.select import add_source_args, kube_api
from controller.status import read_operator

Doc = dict[str, Any]


def node_rows(bgp: dict[str, Doc], nets: dict[str, Doc]) -> list[list[object]]:
    """NODE, HEALTH, ROUTING, BGP (established/peers), BFD (up/sessions), PROBLEMS."""
    rows: list[list[object]] = []
    for node in sorted(set(bgp) | set(nets)):
        peers = [p for i in (bgp.get(node) or {}).get("instances", []) for p in i["peers"]]
        up = sum(p.get("state") == "established" for p in peers)
        bfd = [p["bfd"] for p in peers if p.get("bfd")]
        net = nets.get(node)
        health = "-" if net is None else ("ok" if net.get("healthy") else "unhealthy")
        routing = "-" if net is None else (
            f"tunnel from {net['tunnelEndpoint']}" if net.get("tunnelEndpoint")
            else str(net.get("routing") or "native"))
        problems = len((net or {}).get("problems") or []) + len(
            (bgp.get(node) or {}).get("problems") or [])
        rows.append([node, health, routing, f"{up}/{len(peers)}",
                     f"{sum(b.get('state') == 'up' for b in bfd)}/{len(bfd)}" if bfd else "-",
                     problems])
    return rows


def trouble(bgp: dict[str, Doc], nets: dict[str, Doc]) -> list[str]:
    """Every line of trouble: sessions not up (why), the nodes' and BGP's problems."""
    out: list[str] = []
    for node in sorted(set(bgp) | set(nets)):
        for inst in (bgp.get(node) or {}).get("instances", []):
            for p in inst["peers"]:
                if p.get("lastError"):
                    out.append(f"{node}: peer {p['peerAddress']} ({inst['name']}/{p['name']}) "
                               f"not up: {p['lastError']}")
        out += [f"{node}: {x}" for x in (nets.get(node) or {}).get("problems") or []]
        out += [f"{node}: bgp: {x}" for x in (bgp.get(node) or {}).get("problems") or []]
    return out


def from_files(root: Path) -> tuple[dict[str, Doc], dict[str, Doc], dict[str, Any]]:
    """(BGP documents, network documents, services and pools) from the status files."""
    from controller.status import read_nodes

    bgp = read_nodes(root)
    nets = {n: d["network"] for n, d in bgp.items() if isinstance(d.get("network"), dict)}
    op = read_operator(root)
    pools = {ref.split(" ", 1)[1]: e.get("conditions") or []
             for ref, e in (op.raw.get("objects") or {}).items()
             if ref.startswith("LoadBalancerIPPool ")}
    return bgp, nets, {"services": {k: [str(a) for a in v] for k, v in op.ingress.items()},
                       "pools": pools}


def from_cluster(api: KubeAPI) -> tuple[dict[str, Doc], dict[str, Doc], dict[str, Any]]:
    """The same from the API server."""
    from controller.kubenodestatus import RES, node_doc

    bgp = {str(i["metadata"]["name"]): node_doc(i) for i in api.list(RES)[0]}
    nets = {str(i["metadata"]["name"]): i.get("status") or {}
            for i in api.list(RESOURCES["NodeNetwork"])[0]}
    services: dict[str, list[str]] = {}
    for s in api.list(RESOURCES["Service"])[0]:
        ing = ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ing:
            key = f"{s['metadata'].get('namespace', '')}/{s['metadata']['name']}"
            services[key] = [str(x.get("ip")) for x in ing if x.get("ip")]
    pools = {str(i["metadata"]["name"]): (i.get("status") or {}).get("conditions") or []
             for i in api.list(RESOURCES["LoadBalancerIPPool"])[0]}
    return bgp, nets, {"services": services, "pools": pools}


def pool_rows(pools: dict[str, list[Doc]]) -> list[list[object]]:
    """POOL and what its conditions say (counts, conflicts)."""
    rows: list[list[object]] = []
    for name, conds in sorted(pools.items()):
        said = {c.get("type"): c for c in conds}
        counts = " ".join(f"{t.removeprefix('IPs').lower()}={said[t].get('message', '')}"
                          for t in ("IPsTotal", "IPsAvailable", "IPsUsed") if t in said)
        conflict = said.get("PoolConflict", {}).get("status") == "True"
        rows.append([name, counts or "-", "conflict" if conflict else "-"])
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    api = kube_api(args)
    bgp, nets, cluster = from_cluster(api) if api else from_files(Path(args.manifests))
    if args.node:
        bgp = {k: v for k, v in bgp.items() if k == args.node}
        nets = {k: v for k, v in nets.items() if k == args.node}
    said = trouble(bgp, nets)
    if args.output == "json":
        print(json.dumps({"nodes": {n: {"network": nets.get(n), "bgp": bgp.get(n)}
                                    for n in sorted(set(bgp) | set(nets))},
                          "services": cluster["services"], "pools": cluster["pools"],
                          "trouble": said}, indent=2, default=str))
        return 0
    if not bgp and not nets:
        print("no agent has reported (is an agent running?)")
        return 1
    print(table(["NODE", "HEALTH", "ROUTING", "BGP UP", "BFD UP", "PROBLEMS"],
                node_rows(bgp, nets), indent=""))
    addrs = sum(len(v) for v in cluster["services"].values())
    print(f"\nLoadBalancer IPs: {addrs} on {len(cluster['services'])} services")
    if cluster["pools"]:
        print(table(["POOL", "IPS", "CONFLICT"], pool_rows(cluster["pools"]), indent=""))
    if said:
        print()
        for line in said:
            print(line)
    return 0


def register(sub: Any) -> None:
    st = sub.add_parser("status", help="the cluster at a glance: nodes, sessions, "
                                       "addresses, and every line of trouble")
    add_source_args(st)
    st.add_argument("--node", help="only this node")
    st.add_argument("--output", "-o", choices=("table", "json"), default="table")
    st.set_defaults(func=cmd_status)
