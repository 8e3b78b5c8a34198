"""`rackroute service list` and `rackroute service conntrack`: what the pinned maps hold.

Both read the kernel's maps (not the desired state), so they show what the datapath does:
`list` each service address with its flags and the backends its Maglev/random table
holds; `conntrack` each flow in the conntrack maps with the backend it went to (decoded
and paired by bpf.ctdump). Registered through controller.cli.EXTRA_COMMANDS when
controller.cli imports this module.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpf.table import ServiceTable

if TYPE_CHECKING:
    from bpf.ctdump import Flow, ServiceFilter

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
    if svc.source_ranges is not None:  # loadBalancerSourceRanges: new flows only from these
        out.append("from=" + ("+".join(str(n) for n in svc.source_ranges) or "nobody"))
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
        for port in (maps.svc, maps.backend, maps.maglev, maps.vips, maps.ranges):
            closer = getattr(port, "close", None)
            if callable(closer):
                closer()
    if args.output == "json":
        print(json.dumps(table_to_json(table), indent=2))
    else:
        print(render_table(table))
    return 0


def _expired_cell(flow: Flow) -> str:
    dirs = flow.expired_dirs
    if not dirs:
        return "-"
    if len(dirs) == len(flow.timings):
        return "yes"
    return {"forward": "fwd", "reply": "reply"}[dirs[0]]


def render_ct_table(flows: list[Flow]) -> str:
    """One line per flow: its endpoints, state, age and idle seconds, whether an entry
    has expired (yes: every entry; fwd/reply: that one only) and which entries exist."""
    head = ("PROTO", "CLIENT", "SERVICE", "BACKEND", "SNAT", "STATE", "AGE", "IDLE",
            "EXPIRED", "ENTRIES")
    entries = {None: "both", "forward": "fwd-only", "reply": "reply-only"}
    rows = [head] + [
        (f.proto_name, str(f.client), str(f.service), str(f.backend),
         str(f.snat) if f.snat else "-", f.state, f"{f.age:.1f}", f"{f.idle:.1f}",
         _expired_cell(f), entries[f.orphan])
        for f in flows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    orphans = sum(1 for f in flows if f.orphan)
    expired = sum(1 for f in flows if f.expired)
    noun = "flow" if len(flows) == 1 else "flows"
    lines.append(f"{len(flows)} {noun} ({orphans} with one entry only, {expired} expired)")
    return "\n".join(lines)


def _ct_fail(msg: str) -> int:
    print(f"rackroute service conntrack: {msg}", file=sys.stderr)
    return 1


def cmd_service_conntrack(args: argparse.Namespace) -> int:
    from bpf import ctdump
    from bpf import maps as m
    from bpf.loader import DatapathConfig, kernel_hz
    from bpf.mapstore import PinnedMap

    cfg = DatapathConfig(args.instance, pin_root=Path(args.pin_root))
    hint = f"(is the agent running with --instance {args.instance}?)"
    if not cfg.pin_dir.is_dir():
        return _ct_fail(f"no pin directory {cfg.pin_dir} {hint}")
    opened: list[PinnedMap] = []
    try:
        for name, key, value in (("rr_ct", m.Ct4Key, m.Ct4Value),
                                 ("rr_ct6", m.CtKey, m.Ct6Value)):
            path = cfg.pin_dir / name
            try:
                port = PinnedMap.open(str(path))
            except OSError as e:
                return _ct_fail(f"cannot open the map pinned at {path}: "
                                f"{os.strerror(e.errno) if e.errno else e} {hint}")
            opened.append(port)
            want = (ctypes.sizeof(key), ctypes.sizeof(value))
            if (port.key_size, port.value_size) != want:
                return _ct_fail(f"{path}: key/value of {port.key_size}/{port.value_size} "
                                f"bytes, expected {want[0]}/{want[1]} (another datapath "
                                "version?)")
        try:
            entries = ctdump.read_entries(opened[0], opened[1])
        except OSError as e:
            return _ct_fail(f"cannot read the conntrack maps in {cfg.pin_dir}: {e}")
    finally:
        for port in opened:
            port.close()
    try:
        now = ctdump.read_jiffies()  # after the maps: no entry is newer
    except (OSError, ValueError) as e:
        return _ct_fail(f"cannot read the current jiffies: {e}")
    life = ctdump.Lifetimes(kernel_hz(), args.ct_tcp_lifetime, args.ct_close_lifetime,
                            args.ct_udp_lifetime)
    flows = ctdump.pair(entries, now, life)
    if args.service is not None:
        flows = [f for f in flows if args.service.matches(f)]
    if args.delete:
        return _ct_delete(cfg.pin_dir, flows)
    if args.output == "json":
        print(json.dumps([f.to_json() for f in flows], indent=2))
    else:
        print(render_ct_table(flows))
    return 0


def _ct_delete(pin_dir: Path, flows: list[Flow]) -> int:
    """Delete the entries of flows (both directions), as `conntrack -D` would: their next
    packet is a new flow, balanced anew. An entry already gone is no error."""
    from bpf import ctdump
    from bpf.mapstore import MapWriteError, PinnedMap

    by_map: dict[str, list[bytes]] = {"rr_ct": [], "rr_ct6": []}
    for f in flows:
        for version, key in ctdump.flow_keys(f):
            by_map["rr_ct" if version == 4 else "rr_ct6"].append(key)
    deleted = 0
    for name, keys in by_map.items():
        if not keys:
            continue
        port = PinnedMap.open(str(pin_dir / name))
        try:
            for key in keys:  # one by one: an entry the LRU evicted meanwhile is skipped
                try:
                    port.delete_batch([key])
                    deleted += 1
                except MapWriteError:
                    pass
        finally:
            port.close()
    noun = "flow" if len(flows) == 1 else "flows"
    print(f"deleted {deleted} conntrack entries of {len(flows)} {noun}")
    return 0


def _service_filter(text: str) -> ServiceFilter:
    from bpf import ctdump

    try:
        return ctdump.ServiceFilter.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _common(p: argparse.ArgumentParser) -> None:
    from bpf.loader import DEFAULT_PIN_ROOT

    p.add_argument("--instance", default="default",
                   help="datapath instance (its pin subdirectory)")
    p.add_argument("--pin-root", default=str(DEFAULT_PIN_ROOT), help="bpffs pin root")
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")


def cmd_service_maps(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from bpf import mapstat
    from bpf.loader import DatapathConfig

    cfg = DatapathConfig(args.instance, pin_root=Path(args.pin_root))
    if not cfg.pin_dir.is_dir():
        print(f"rackroute service maps: no pin directory {cfg.pin_dir} (is the agent running "
              f"with --instance {args.instance}?)", file=sys.stderr)
        return 2
    stats, filters = mapstat.map_stats(cfg.pin_dir), mapstat.filter_stats(cfg.pin_dir)
    if args.output == "json":
        print(json.dumps({"maps": [asdict(s) | {"fill": round(s.fill, 4)} for s in stats],
                          "filters": [asdict(f) for f in filters]}, indent=2))
    else:
        print(mapstat.render(stats, filters))
    return 0


def register(sub: Subparsers) -> None:
    from bpf.loader import DatapathConfig

    svc = sub.add_parser("service", help="inspect the eBPF service datapath")
    ssub = svc.add_subparsers(dest="service_command", required=True)
    ls = ssub.add_parser("list", help="services and backends programmed in the pinned maps")
    _common(ls)
    ls.set_defaults(func=cmd_service_list)

    ct_ = ssub.add_parser("conntrack", help="flows in the pinned conntrack maps and the "
                          "backend each went to")
    _common(ct_)
    ct_.add_argument("--service", type=_service_filter, metavar="ADDR[:PORT][/PROTO]",
                     help="only flows to this service address (IPv6 with a port: [ADDR]:PORT)")
    for name, what in (("tcp", "an established TCP flow"), ("close", "a TCP flow after its FIN"),
                       ("udp", "a UDP flow")):
        ct_.add_argument(f"--ct-{name}-lifetime", type=int,
                         default=getattr(DatapathConfig, f"ct_{name}_lifetime"),
                         metavar="SECONDS",
                         help=f"idle lifetime of {what}, as the datapath was built with "
                              "(to tell expired entries; default: %(default)s)")
    ct_.add_argument("--delete", action="store_true",
                     help="delete the listed flows' entries (with --service: that service's "
                          "flows only), as conntrack -D does; their next packet starts anew")
    ct_.set_defaults(func=cmd_service_conntrack)

    mp = ssub.add_parser("maps", help="the pinned maps: entries against capacity, memory, "
                         "and the address filters' state")
    _common(mp)
    mp.set_defaults(func=cmd_service_maps)


def _install() -> None:
    """Add `register` to the CLI's EXTRA_COMMANDS, also when the CLI runs as __main__."""
    for name in ("controller.cli", "__main__"):
        extra = getattr(sys.modules.get(name), "EXTRA_COMMANDS", None)
        if isinstance(extra, list) and register not in extra:
            extra.append(register)


_install()
