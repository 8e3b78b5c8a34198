"""`rackroute service list`: the services and backends programmed in the pinned maps.

It reads the kernel's maps (not the desired state), so it shows what the datapath does:
each service address with its flags and the backends its Maglev/random table holds.
Registered through controller.cli.EXTRA_COMMANDS when controller.cli imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bpf.table import ServiceTable

Subparsers = Any  # argparse._SubParsersAction[argparse.ArgumentParser]


def _flags(svc: Any) -> str:
    out = []
    if svc.nodeport:
        out.append("nodeport")
    elif svc.external:
        out.append("external")
    if svc.local_only:
        out.append("local")
    if svc.affinity_timeout:
        out.append(f"affinity={svc.affinity_timeout}s")
    out.append(svc.algorithm.value)
    return ",".join(out)


def render_table(table: ServiceTable) -> str:
    """One line per service entry, its backends indented below it."""
    from bpf.table import ServiceKey

    lines = [f"{'SERVICE':<28} {'FLAGS':<32} BACKENDS"]
    for k in sorted(table, key=ServiceKey.sort_key):
        s = table[k]
        lines.append(f"{k!s:<28} {_flags(s):<32} {len(s.backends)}")
        for b in s.backends:
            tags = ["local" if b.local else "remote"]
            if b.state.value != "ready":
                tags.append(b.state.value)
            lines.append(f"  -> {b.name:<36} {' '.join(tags)}")
    lines.append(f"{len(table)} service entries")
    return "\n".join(lines)


def cmd_service_list(args: argparse.Namespace) -> int:
    from bpf.loader import DatapathConfig, open_maps
    from bpf.sync import read_table
    from bpf.table import table_to_json

    cfg = DatapathConfig(args.instance, pin_root=Path(args.pin_root))
    try:
        maps = open_maps(cfg)
    except OSError as e:
        print(f"rackroute service list: cannot open the maps pinned in {cfg.pin_dir}: "
              f"{e.strerror or e} (is the agent running with --instance {args.instance}?)",
              file=sys.stderr)
        return 2
    try:
        table = read_table(maps)
    finally:
        for port in (maps.svc, maps.backend, maps.maglev):
            closer = getattr(port, "close", None)
            if callable(closer):
                closer()
    if args.output == "json":
        print(json.dumps(table_to_json(table), indent=2))
    else:
        print(render_table(table))
    return 0


def register(sub: Subparsers) -> None:
    from bpf.loader import DEFAULT_PIN_ROOT

    svc = sub.add_parser("service", help="inspect the eBPF service datapath")
    ssub = svc.add_subparsers(dest="service_command", required=True)
    ls = ssub.add_parser("list", help="services and backends programmed in the pinned maps")
    ls.add_argument("--instance", default="default",
                    help="datapath instance (its pin subdirectory)")
    ls.add_argument("--pin-root", default=str(DEFAULT_PIN_ROOT), help="bpffs pin root")
    ls.add_argument("--output", "-o", choices=("table", "json"), default="table")
    ls.set_defaults(func=cmd_service_list)


def _install() -> None:
    """Add `register` to the CLI's EXTRA_COMMANDS, also when the CLI runs as __main__."""
    for name in ("controller.cli", "__main__"):
        extra = getattr(sys.modules.get(name), "EXTRA_COMMANDS", None)
        if isinstance(extra, list) and register not in extra:
            extra.append(register)


_install()
