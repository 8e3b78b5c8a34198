"""`rackroute policy-maps`: what this node's network policy maps hold, read from their
pins (not from the policies): each pod address under policy with its endpoint, the
directions it is isolated in and its entries, and the programs' verdict counters. What
the kernel enforces, next to what `rackroute policy` says the policies mean.

  rackroute policy-maps [--instance NODE] [--pin-root /sys/fs/bpf/rackroute] [-o json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bpf.loader import DEFAULT_PIN_ROOT
from controller.cli_policy import entries_doc, print_directions


def cmd_policy_maps(args: argparse.Namespace) -> int:
    from bpf.mapstore import PinnedMap
    from bpf.policy import read_drops, read_programmed, read_stats

    pin_dir = Path(args.pin_root) / args.instance
    try:
        eps = PinnedMap.open(str(pin_dir / "rr_pol_eps"))
    except OSError as e:
        print(f"rackroute policy-maps: cannot open the policy maps pinned in {pin_dir}: "
              f"{e.strerror or e} (is the agent running with --network-policy and "
              f"--instance {args.instance}?)", file=sys.stderr)
        return 2
    try:
        rules = PinnedMap.open(str(pin_dir / "rr_pol"))
        try:
            programmed = read_programmed(eps, rules)
        finally:
            rules.close()
        counters = read_stats(pin_dir)
        drops = read_drops(pin_dir, [p.ep_id for p in programmed]) \
            if (pin_dir / "rr_pol_drops").exists() else {}
    finally:
        eps.close()
    docs: list[dict[str, Any]] = [
        {"endpoint": p.ep_id, "addresses": [str(a) for a in p.addresses],
         "ingress": entries_doc(p.ingress), "egress": entries_doc(p.egress),
         "dropped": drops.get(p.ep_id, 0)}
        for p in programmed]
    if args.output == "json":
        print(json.dumps({"endpoints": docs, "packets": counters}, indent=2))
        return 0
    if not docs:
        print("no pod of this node is under policy")
    for d in docs:
        print(f"endpoint {d['endpoint']}: {', '.join(d['addresses']) or '(no address)'}, "
              f"{d['dropped']} packets refused")
        print_directions(d)
    print("packets: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("policy-maps", help="what this node's network policy maps hold, "
                                           "and the verdict counters")
    p.add_argument("--instance", default="default",
                   help="datapath instance (its pin subdirectory; the agent's is its node)")
    p.add_argument("--pin-root", default=str(DEFAULT_PIN_ROOT), help="bpffs pin root")
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_policy_maps)
