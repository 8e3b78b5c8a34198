"""Standalone datapath runner: load, attach, adopt the pinned maps, keep them in sync
with a JSON service table file. It is what the agent does for the datapath, without the
rest of the agent, and lets tests kill -9 a real loader mid-connection.

  python -m bpf.run --instance node1 --pod NS:IFNAME --uplink NS:IFNAME:NODEADDR \\
      --table services.json

Prints one JSON line per sync ({"adopted": n, "writes": w, ...}) and "ready" once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from bpf.loader import DEFAULT_PIN_ROOT, Datapath, DatapathConfig
from bpf.sync import Syncer
from bpf.table import table_from_json


def _split(spec: str) -> tuple[str | None, str]:
    ns, _, ifname = spec.rpartition(":")
    return ns or None, ifname


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpf.run")
    ap.add_argument("--instance", required=True)
    ap.add_argument("--pin-root", type=Path, default=DEFAULT_PIN_ROOT)
    ap.add_argument("--pod", action="append", default=[], help="[NETNS:]IFNAME")
    ap.add_argument("--uplink", action="append", default=[], help="[NETNS:]IFNAME:NODEADDR")
    ap.add_argument("--table", type=Path, required=True)
    ap.add_argument("--once", action="store_true")
    args = ap.parse_args(argv)

    dp = Datapath(DatapathConfig(args.instance, pin_root=args.pin_root)).load()
    syncer = Syncer(dp.maps())
    adopted = len(syncer.adopt())
    for spec in args.pod:
        ns, ifname = _split(spec)
        dp.attach_pod(ifname, ns)
    for spec in args.uplink:
        rest, _, addr = spec.rpartition(":")
        ns, ifname = _split(rest)
        dp.attach_uplink(ifname, IPv4Address(addr), ns)
    seen = -1.0
    first = True
    while True:
        mtime = args.table.stat().st_mtime
        if mtime != seen:
            seen = mtime
            res = syncer.sync(table_from_json(json.loads(args.table.read_text())))
            print(json.dumps({"adopted": adopted, "writes": res.writes, "deletes": res.deletes,
                              "programmed": len(res.programmed),
                              "errors": {str(k): v for k, v in res.errors.items()}}),
                  flush=True)
            if first:
                print("ready", flush=True)
                first = False
        if args.once:
            return 0
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
