"""`rackroute policy`: what the NetworkPolicies make of each pod, and whether one
connection would pass, computed from the manifests or the cluster (not from a datapath).

  rackroute policy --manifests DIR                        every pod a policy isolates
  rackroute policy --manifests DIR --pod web/api          its entries, per direction
  rackroute policy --manifests DIR --check web/front web/api tcp/8080
                                                          allowed or refused, and why

A connection passes when the source's egress allows it and the destination's ingress
does (a side that is an address rather than a pod, or a pod no policy isolates in that
direction, allows everything). Pods are named ns/name; either side of --check may be an
IP address instead. It computes what the policies say (controller/desired/policy.py):
the entries an agent with --network-policy writes into its maps, so a policy can be
checked before it is applied, or without a node.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

import yaml

from bgp.types import IPAddress
from controller.desired.policy import (
    PROTO_NUMBERS,
    EndpointPolicy,
    PolicyEntry,
    allowed,
    compile_policies,
    has_address,
    matching_entry,
    range_text,
)
from controller.model.policy import Pod
from controller.report import table
from controller.sources.kube import POLICY_KINDS
from controller.sources.select import add_source_args
from controller.store import Snapshot


def endpoints(snap: Snapshot) -> dict[str, EndpointPolicy]:
    """Every pod under policy, on every node."""
    out: dict[str, EndpointPolicy] = {}
    for node in sorted({p.node for p in snap.pods.values() if p.node}):
        plan = compile_policies(snap.network_policies.values(), snap.pods.values(),
                                snap.namespaces, node)
        out.update(plan.endpoints)
    return out


def print_directions(d: dict[str, Any]) -> None:
    """A pod's (or an endpoint's) ingress and egress, as entries_doc gives them."""
    for direction in ("ingress", "egress"):
        es = d[direction]
        if isinstance(es, str):
            print(f"  {direction}: {es}")
            continue
        print(f"  {direction}: isolated, {len(es)} entries" +
              (" (nothing allowed)" if not es else ""))
        if es:
            print(table(["peer", "allows"], [[e["peer"], ", ".join(e["allow"])]
                                             for e in es], indent="    "))


def entries_doc(entries: tuple[PolicyEntry, ...] | None) -> list[dict[str, Any]] | str:
    if entries is None:
        return "not isolated"
    return [{"peer": str(e.prefix), "allow": [range_text(r) for r in e.ranges] or ["nothing"]}
            for e in entries]


def pod_doc(ep: EndpointPolicy) -> dict[str, Any]:
    return {"pod": ep.pod, "ips": [str(a) for a in ep.ips], "policies": list(ep.policies),
            "ingress": entries_doc(ep.ingress), "egress": entries_doc(ep.egress)}


def _side(snap: Snapshot, text: str) -> tuple[Pod | None, IPAddress]:
    """A pod key or an address → (the pod if any, its address)."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        pod = snap.pods.get(text)
        if pod is None:
            raise ValueError(f"{text!r}: neither an address nor a pod (ns/name)") from None
        if not has_address(pod):
            raise ValueError(f"pod {text} has no address of its own (not running, or on "
                             "the host's network)") from None
        return pod, pod.ips[0]
    pod = next((p for p in snap.pods.values() if has_address(p) and addr in p.ips), None)
    return pod, addr


def _verdict(ep: EndpointPolicy | None, direction: str, peer: IPAddress, proto: int,
             port: int) -> tuple[bool, str]:
    entries = None if ep is None else getattr(ep, direction)
    if entries is None:
        return True, "not isolated"
    hit = matching_entry(entries, peer)
    ok = allowed(entries, peer, proto, port)
    if hit is None:
        return ok, f"isolated by {', '.join(ep.policies) if ep else '-'}; no entry holds {peer}"
    rs = ", ".join(range_text(r) for r in hit.ranges) or "nothing"
    return ok, f"entry {hit.prefix} allows {rs}"


def check(snap: Snapshot, src: str, dst: str, what: str) -> tuple[bool, list[str]]:
    """Would a new connection src → dst (proto/port) pass? (verdict, reasons)."""
    proto_name, _, port_text = what.partition("/")
    if proto_name.upper() not in PROTO_NUMBERS or not port_text.isdigit() \
            or not 0 < int(port_text) < 65536:
        raise ValueError(f"{what!r}: expected tcp/PORT, udp/PORT or sctp/PORT")
    proto, port = PROTO_NUMBERS[proto_name.upper()], int(port_text)
    spod, saddr = _side(snap, src)
    dpod, daddr = _side(snap, dst)
    eps = endpoints(snap)
    reasons = []
    verdict = True
    for direction, pod, own, peer in (("egress", spod, saddr, daddr),
                                      ("ingress", dpod, daddr, saddr)):
        if pod is None:
            reasons.append(f"{direction}: {own} is no pod: no policy of its own")
            continue
        ok, why = _verdict(eps.get(pod.key), direction, peer, proto, port)
        verdict = verdict and ok
        reasons.append(f"{direction} of {pod.key}: {'allowed' if ok else 'refused'} ({why})")
    return verdict, reasons


def cmd_policy(args: argparse.Namespace) -> int:
    from controller.cli import read_once

    try:
        snap = read_once(args, kinds=POLICY_KINDS)
        if args.check:
            ok, reasons = check(snap, *args.check)
            print(("allowed" if ok else "refused") + f": {args.check[0]} -> "
                  f"{args.check[1]} {args.check[2]}")
            for r in reasons:
                print(f"  {r}")
            return 0 if ok else 1
        eps = endpoints(snap)
        if args.pod:
            if args.pod not in snap.pods:
                raise ValueError(f"--pod {args.pod}: no such pod")
            ep = eps.get(args.pod)
            docs = [pod_doc(ep)] if ep else []
            if ep is None:
                print(f"{args.pod}: no policy selects it (every direction open)")
                return 0
        else:
            docs = [pod_doc(e) for _, e in sorted(eps.items())]
    except ValueError as e:
        print(f"rackroute policy: {e}", file=sys.stderr)
        return 2
    for err in snap.errors:
        if any(err.ref.startswith(k + " ") for k in POLICY_KINDS):
            print(f"rackroute policy: {err.ref}: {'; '.join(err.messages)}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(docs, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(docs, sort_keys=False), end="")
    elif args.pod:
        d = docs[0]
        print(f"{d['pod']} ({', '.join(d['ips'])}), selected by {', '.join(d['policies'])}")
        print_directions(d)
    else:
        rows = [[d["pod"], ", ".join(d["ips"]),
                 "open" if isinstance(d["ingress"], str) else f"{len(d['ingress'])} entries",
                 "open" if isinstance(d["egress"], str) else f"{len(d['egress'])} entries",
                 ", ".join(d["policies"])] for d in docs]
        print(table(["pod", "ips", "ingress", "egress", "policies"], rows, indent=""))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="what the NetworkPolicies allow each pod, and "
                                      "whether one connection would pass")
    add_source_args(p)
    p.add_argument("--pod", help="one pod (ns/name): its entries per direction")
    p.add_argument("--check", nargs=3, metavar=("SRC", "DST", "PROTO/PORT"),
                   help="would a new connection pass (pods as ns/name, or addresses); "
                        "exit 0 if allowed, 1 if refused")
    p.add_argument("--output", "-o", choices=("table", "json", "yaml"), default="table")
    p.set_defaults(func=cmd_policy)
