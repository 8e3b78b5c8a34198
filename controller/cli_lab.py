"""`rackroute lab up|down|status|exec|show`: the FRR lab in network namespaces."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controller.lab.netns import LabError
from controller.lab.runner import LabRunner

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def _runner(args: argparse.Namespace) -> LabRunner:
    return LabRunner(Path(args.state_dir))


def cmd_up(args: argparse.Namespace) -> int:
    from controller.lab.show import wait_ready

    r = _runner(args)
    topo = r.up(Path(args.manifests), args.speaker, args.routing_mode, args.tunnel_protocol)
    print(f"lab up: ToR, {len(topo.nodes)} nodes, {len(topo.pods)} pods, client "
          f"(state in {args.state_dir})")
    if not args.no_wait:
        wait_ready(r, timeout=args.timeout)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    for line in _runner(args).down():
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(_runner(args).status(), indent=2))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("rackroute lab exec NAME -- CMD ...", file=sys.stderr)
        return 2
    try:
        return _runner(args).exec(args.name, argv)
    except LabError as e:
        print(f"rackroute lab exec: {e}", file=sys.stderr)
        return 2


def cmd_show(args: argparse.Namespace) -> int:
    from controller.lab.show import show

    return show(_runner(args))


def cmd_clab(args: argparse.Namespace) -> int:
    from controller.lab.clab import write
    from controller.lab.topology import load_topology

    out = Path(args.out)
    for p in write(load_topology(Path(args.manifests)), out):
        print(f"wrote {p}")
    return 0


def register(sub: Sub) -> None:  # noqa: F821
    from controller.lab.runner import DEFAULT_MANIFESTS, STATE_DIR

    lab = sub.add_parser("lab", help="the FRR lab in network namespaces")
    lsub = lab.add_subparsers(dest="lab_command", required=True)
    up = lsub.add_parser("up", help="build the lab and start the agents")
    up.add_argument("--manifests", default=str(DEFAULT_MANIFESTS))
    up.add_argument("--speaker", choices=("gobgp", "exabgp"), default="gobgp")
    up.add_argument("--routing-mode", choices=("native", "tunnel", "hybrid"),
                    help="set the lab's routingMode (tunnel: pod CIDRs are not advertised)")
    up.add_argument("--tunnel-protocol", choices=("vxlan", "geneve"))
    up.add_argument("--no-wait", action="store_true", help="do not wait for BGP and routes")
    up.add_argument("--timeout", type=float, default=90.0)
    up.set_defaults(func=cmd_up)
    down = lsub.add_parser("down", help="remove everything the lab made")
    down.set_defaults(func=cmd_down)
    st = lsub.add_parser("status", help="processes and namespaces of the lab")
    st.set_defaults(func=cmd_status)
    ex = lsub.add_parser("exec", help="run a command in a node, pod, tor or client")
    ex.add_argument("name")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)
    sh = lsub.add_parser("show", help="sessions, ToR routes, a pod ping, curls to every LB IP")
    sh.set_defaults(func=cmd_show)
    cl = lsub.add_parser("clab", help="write the containerlab topology and FRR configs")
    cl.add_argument("--manifests", default=str(DEFAULT_MANIFESTS))
    cl.add_argument("--out", default=str(DEFAULT_MANIFESTS.parent))
    cl.set_defaults(func=cmd_clab)
    for p in (up, down, st, ex, sh):
        p.add_argument("--state-dir", default=str(STATE_DIR))


__all__ = ["register", "subprocess"]
