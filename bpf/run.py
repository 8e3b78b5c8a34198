"""Standalone datapath runner: load, attach, adopt the pinned maps, keep them in sync
with a JSON service table file. It is what the agent does for the datapath, without the
rest of the agent, and lets tests kill -9 a real loader mid-connection.

  python -m bpf.run --instance node1 --pod NS:IFNAME --uplink NS:IFNAME@NODEADDR[,NODEADDR6] \\
      --table services.json

--uplink names the node's addresses after '@': an IPv4 and/or an IPv6 one (the SNAT
sources of their families). The older NS:IFNAME:IPV4ADDR still works.

Prints one JSON line per sync ({"adopted": n, "writes": w, ...}) and "ready" once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from bpf.loader import DEFAULT_PIN_ROOT, Datapath, DatapathConfig
from bpf.sync import Syncer
from bpf.table import table_from_json


def _split(spec: str) -> tuple[str | None, str]:
    ns, _, ifname = spec.rpartition(":")
    return ns or None, ifname


def uplink_spec(spec: str) -> tuple[str | None, str, IPv4Address | None, IPv6Address | None]:
    """[NETNS:]IFNAME@ADDR[,ADDR] (one IPv4 and/or one IPv6 node address), or the older
    [NETNS:]IFNAME:IPV4ADDR -> (netns, ifname, IPv4 address, IPv6 address)."""
    v4: IPv4Address | None = None
    v6: IPv6Address | None = None
    if "@" in spec:
        dev, _, addrs = spec.partition("@")
        for a in addrs.split(","):
            try:
                ip = ip_address(a.strip())
            except ValueError:
                raise ValueError(f"--uplink {spec}: {a!r} is not an IP address") from None
            if isinstance(ip, IPv4Address):
                if v4 is not None:
                    raise ValueError(f"--uplink {spec}: two IPv4 addresses")
                v4 = ip
            else:
                if v6 is not None:
                    raise ValueError(f"--uplink {spec}: two IPv6 addresses")
                v6 = ip
    else:
        dev, _, a = spec.rpartition(":")
        try:
            v4 = IPv4Address(a)
        except ValueError:
            raise ValueError(f"--uplink {spec}: expected [NETNS:]IFNAME@ADDR[,ADDR]"
                             " or [NETNS:]IFNAME:IPV4ADDR") from None
    ns, ifname = _split(dev)
    if not ifname:
        raise ValueError(f"--uplink {spec}: no interface name")
    return ns, ifname, v4, v6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpf.run")
    ap.add_argument("--instance", required=True)
    ap.add_argument("--pin-root", type=Path, default=DEFAULT_PIN_ROOT)
    ap.add_argument("--pod", action="append", default=[], help="[NETNS:]IFNAME")
    ap.add_argument("--uplink", action="append", default=[],
                    help="[NETNS:]IFNAME@NODEADDR[,NODEADDR6] (or [NETNS:]IFNAME:IPV4ADDR)")
    ap.add_argument("--table", type=Path, required=True)
    ap.add_argument("--once", action="store_true")
    args = ap.parse_args(argv)
    try:
        uplinks = [uplink_spec(u) for u in args.uplink]
    except ValueError as e:
        ap.error(str(e))

    dp = Datapath(DatapathConfig(args.instance, pin_root=args.pin_root)).load()
    syncer = Syncer(dp.maps())
    adopted = len(syncer.adopt())
    for spec in args.pod:
        ns, ifname = _split(spec)
        dp.attach_pod(ifname, ns)
    for ns, ifname, v4, v6 in uplinks:
        dp.attach_uplink(ifname, v4, ns, node_addr6=v6)
    dp.arm_replies()
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
