"""`rackroute`: agent, operator, status, plan, bgp, service, policy, policy-maps, lab (the
CNI plugin is its own binary, `rackroute-cni`, as container runtimes call it)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from controller import logs
from controller.sources.select import add_source_args, add_watch_cilium_arg
from controller.store import Snapshot

Command = Callable[[argparse.Namespace], int]


def cmd_plan(args: argparse.Namespace) -> int:
    from controller.desired.cluster import apply_allocations, plan_allocations, plan_nodes
    from controller.report import plan_document, plan_text

    try:
        snap = read_once(args)
    except ValueError as e:
        print(f"rackroute plan: {e}", file=sys.stderr)
        return 2
    root = args.manifests or "the cluster"
    alloc = plan_allocations(snap)
    planned = apply_allocations(snap, alloc)
    if args.node and args.node not in planned.nodes:
        print(f"rackroute plan: --node {args.node}: no such Node in {root}", file=sys.stderr)
        return 2
    nodes = plan_nodes(planned, [args.node] if args.node else None)
    doc = plan_document(snap, alloc, nodes)
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    else:
        print(plan_text(doc))
    return 1 if args.strict and snap.errors else 0


def read_once(args: argparse.Namespace, kinds: Sequence[str] | None = None) -> Snapshot:
    """One snapshot from the source the arguments name (ValueError when it cannot); from
    the API server, of `kinds` (default: what an agent reads)."""
    from controller.sources.files import ManifestDir
    from controller.sources.kube import AGENT_KINDS, KubeSource, with_cilium
    from controller.sources.select import kube_api, secrets_namespace
    from controller.store import Store

    api = kube_api(args)
    if api is None:
        root = Path(args.manifests)
        if not root.is_dir():
            raise ValueError(f"--manifests {root}: not a directory")
        return ManifestDir(root).load()
    store = Store()
    src = KubeSource(api, store, with_cilium(tuple(kinds or AGENT_KINDS),
                                             getattr(args, "watch_cilium_crds", False)),
                     secrets_namespace(args))
    try:
        if not src.poll(timeout=30.0):
            raise ValueError(f"the API server did not answer every list: {dict(src.problems())}")
        return store.snapshot()
    finally:
        src.close()


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_operator(args: argparse.Namespace) -> int:
    from controller.leader import LeaderElector
    from controller.operator import run_operator
    from controller.sources.select import kube_api, own_namespace, secrets_namespace

    try:
        api = kube_api(args)
    except ValueError as e:
        print(f"rackroute operator: {e}", file=sys.stderr)
        return 2
    elector = None
    if args.leader_elect:
        if api is None:
            print("rackroute operator: --leader-elect needs the API server (--kubeconfig or "
                  "--in-cluster)", file=sys.stderr)
            return 2
        identity = (args.leader_elect_identity or os.environ.get("POD_NAME")
                    or f"{socket.gethostname()}_{os.getpid()}")
        elector = LeaderElector(api, args.leader_elect_namespace or own_namespace(), identity)
    from controller.opmetrics import OperatorState, serve

    state = OperatorState()
    server = serve(state, args.metrics_port, args.metrics_address) if args.metrics_port \
        else None
    try:
        run_operator(Path(args.manifests) if args.manifests else None, stop_event(),
                     args.interval, api, elector, secrets_namespace(args) if api else "",
                     watch_cilium=args.watch_cilium_crds, state=state)
    finally:
        if server is not None:
            server.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rackroute", description=__doc__)
    p.add_argument("--log-level", default="info")
    sub = p.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="print what every node would do, and why")
    add_source_args(plan)
    add_watch_cilium_arg(plan)
    plan.add_argument("--node", help="only this node")
    plan.add_argument("--output", "-o", choices=("table", "json", "yaml"), default="table")
    plan.add_argument("--strict", action="store_true", help="exit 1 if any manifest is bad")
    plan.set_defaults(func=cmd_plan)

    op = sub.add_parser("operator", help="allocate pod CIDRs and LoadBalancer IPs")
    add_source_args(op)
    add_watch_cilium_arg(op)
    op.add_argument("--leader-elect", action="store_true",
                    help="write only while holding the Lease rackroute-operator (several "
                         "replicas, one writer)")
    op.add_argument("--leader-elect-namespace", default="",
                    help="the Lease's namespace (default: POD_NAMESPACE, the service "
                         "account's, else kube-system)")
    op.add_argument("--leader-elect-identity", default="",
                    help="this candidate's name (default: POD_NAME, else host_pid)")
    op.add_argument("--interval", type=float, default=0.2, help="poll interval, seconds")
    op.add_argument("--metrics-port", type=int, default=9963,
                    help="/metrics, /readyz and /healthz on this port (0: none)")
    op.add_argument("--metrics-address", default="0.0.0.0",
                    help="the address they listen on")
    op.set_defaults(func=cmd_operator)
    for register in EXTRA_COMMANDS:
        register(sub)
    return p


# Later subsystems add their subcommands here (each a function taking the subparsers).
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []
import controller.cli_service  # noqa: E402, F401  (registers `service`)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    func: Command = args.func
    return func(args)


def _register_subsystems() -> None:
    from controller import cli_bgp, cli_lab, cli_policy, cli_policy_maps, cli_status

    EXTRA_COMMANDS.append(cli_bgp.register)
    EXTRA_COMMANDS.append(cli_status.register)
    EXTRA_COMMANDS.append(cli_lab.register)
    EXTRA_COMMANDS.append(cli_policy.register)
    EXTRA_COMMANDS.append(cli_policy_maps.register)


_register_subsystems()

if __name__ == "__main__":
    sys.exit(main())
