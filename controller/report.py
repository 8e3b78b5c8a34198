"""Render plans for people (tables) and for programs (JSON/YAML documents)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bgp.types import Path
from controller.desired.advertise import NodePlan
from controller.desired.bgpconfig import NodeBGP
from controller.desired.cluster import Allocations
from controller.store import Snapshot


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]
    return "\n".join(lines)


def _path_dict(p: Path, reasons: Sequence[str]) -> dict[str, Any]:
    return {
        "prefix": str(p.prefix),
        "nextHop": str(p.next_hop) if p.next_hop else "self",
        "communities": sorted(p.communities),
        "largeCommunities": sorted(p.large_communities),
        "localPreference": p.local_pref,
        "reasons": list(reasons),
    }


def plan_document(
    snap: Snapshot, alloc: Allocations, nodes: dict[str, tuple[NodeBGP, NodePlan]]
) -> dict[str, Any]:
    """The whole plan as plain data (for --output json|yaml)."""
    doc: dict[str, Any] = {
        "errors": [{"object": e.ref, "messages": list(e.messages)} for e in snap.errors],
        "podCIDRs": {
            n: {
                "cidrs": [str(c) for c in cidrs],
                "reason": alloc.pod_cidrs.conditions[n].reason,
                "message": alloc.pod_cidrs.conditions[n].message,
            }
            for n, cidrs in sorted(alloc.pod_cidrs.allocations.items())
        },
        "loadBalancerIPs": {
            k: {
                "ips": [str(i) for i in sa.ips],
                "pools": list(sa.pools),
                "reason": sa.condition.reason,
                "message": sa.condition.message,
            }
            for k, sa in sorted(alloc.lbipam.services.items())
        },
        "pools": {
            name: [c.to_dict() for c in conds] for name, conds in sorted(alloc.lbipam.pools.items())
        },
        "nodes": {},
    }
    for name, (bgp, plan) in nodes.items():
        doc["nodes"][name] = {
            "instances": [
                {
                    "name": i.name,
                    "localASN": i.global_config.asn,
                    "routerID": str(i.global_config.router_id),
                    "localPort": i.global_config.listen_port,
                }
                for i in bgp.instances
            ],
            "problems": [p.message for p in bgp.problems],
            "peers": [
                {
                    "instance": pp.instance,
                    "peer": pp.peer,
                    "address": str(pp.address),
                    "paths": [
                        _path_dict(p, pp.reasons.get(p.prefix, ())) for p in sorted(pp.paths)
                    ],
                }
                for pp in plan.peers
            ],
            "notAdvertised": [
                {"peer": s.peer, "subject": s.subject, "reason": s.reason}
                for s in plan.not_advertised
            ],
        }
    return doc


def plan_text(doc: dict[str, Any]) -> str:
    """The plan as tables."""
    out: list[str] = []
    errs = doc["errors"]
    out.append(f"Manifest errors ({len(errs)})")
    for e in errs:
        out.extend(f"  {m}" for m in e["messages"])
    out.append("")
    out.append("Pod CIDRs")
    out.append(
        table(
            ["NODE", "POD CIDRS", "STATUS"],
            [[n, ", ".join(v["cidrs"]) or "-", v["reason"]] for n, v in doc["podCIDRs"].items()],
        )
    )
    out.append("")
    out.append("LoadBalancer IPs")
    out.append(
        table(
            ["SERVICE", "IPS", "POOLS", "STATUS", "MESSAGE"],
            [
                [
                    k,
                    ", ".join(v["ips"]) or "-",
                    ", ".join(dict.fromkeys(v["pools"])) or "-",  # one pool of both families: once
                    v["reason"],
                    v["message"] if v["reason"] != "satisfied" else "",
                ]
                for k, v in doc["loadBalancerIPs"].items()
            ],
        )
    )
    for name, node in doc["nodes"].items():
        out.append("")
        insts = (
            ", ".join(
                f"{i['name']}: AS {i['localASN']} router-id {i['routerID']}"
                for i in node["instances"]
            )
            or "no BGP instance"
        )
        out.append(f"Node {name} ({insts})")
        for p in node["problems"]:
            out.append(f"  problem: {p}")
        for peer in node["peers"]:
            out.append(
                f"  peer {peer['instance']}/{peer['peer']} {peer['address']}: "
                f"{len(peer['paths'])} path(s)"
            )
            if peer["paths"]:
                out.append(
                    table(
                        ["PREFIX", "COMMUNITIES", "LARGE", "LOCAL-PREF", "WHY"],
                        [
                            [
                                p["prefix"],
                                " ".join(p["communities"]) or "-",
                                " ".join(p["largeCommunities"]) or "-",
                                p["localPreference"] if p["localPreference"] is not None else "-",
                                "; ".join(p["reasons"]),
                            ]
                            for p in peer["paths"]
                        ],
                        indent="    ",
                    )
                )
        if node["notAdvertised"]:
            out.append("  not advertised:")
            out.append(
                table(
                    ["PEER", "WHAT", "WHY NOT"],
                    [[s["peer"], s["subject"], s["reason"]] for s in node["notAdvertised"]],
                    indent="    ",
                )
            )
    return "\n".join(out)
