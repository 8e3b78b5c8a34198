"""R10: memory of the real agent (`rackroute agent --datapath`) with N = 0 (idle), 1k and
10k services × 2 endpoints in its manifest directory: the agent process's resident set
once every service is in its pinned maps (and its peak), and the kernel memory of those
maps (memlock, as the kernel accounts it). Each round starts a fresh agent per N (the
order turns each round) in a network namespace made for the run, with an uplink (a veth)
holding the node address and a pin directory of its own; warm-up dropped.

  python -m tests.bench r10 [--sizes 0,1000,10000] [--rounds 3]

Reported: RSS median (min-max) per N, its growth per 1k services over the idle agent,
RSS(10k) / RSS(idle), and map bytes per map. The maps are preallocated at their
configured sizes (the agent's --bpf-* flags), so they do not grow with N.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address as A
from pathlib import Path

from bpf import libbpf, mapstat
from bpf.mapstore import PinnedMap
from tests.bench.bench_r6 import EP0, NODE, NODE_IP, NODE_YAML, manifest
from tests.bench.common import save, stats, table
from tests.bench.nsutil import netns, ns_name, nsx, pin_root

INSTANCE = "r10"
GOAL_MB = 200.0  # agent RSS at 10k services


def write_manifests(d: Path, n: int) -> None:
    (d / "node.yaml").write_text(NODE_YAML)
    for i in range(n):
        (d / f"s{i}.yaml").write_text(manifest(i, [str(A(EP0 + 2 * i)),
                                                   str(A(EP0 + 2 * i + 1))]))


def programmed(pin_dir: Path) -> int:
    """Service entries in the agent's pinned service map (0 before it exists)."""
    path = pin_dir / "rr_svc"
    if not path.exists():
        return 0
    pm = PinnedMap.open(str(path))
    try:
        keys = pm.keys()  # (a generator of the map's keys, one syscall each)
        return sum(1 for _ in keys)
    finally:
        pm.close()


def map_bytes(pin_dir: Path) -> dict[str, int]:
    """name -> the kernel's memlock accounting of each pinned map."""
    out: dict[str, int] = {}
    for p in sorted(pin_dir.iterdir()):
        try:
            fd = libbpf.obj_get(str(p))
        except OSError:
            continue  # a pinned program, not a map
        try:
            out[p.name] = mapstat.memlock(fd)
        finally:
            os.close(fd)
    return out


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of pid in KiB."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0])
    return vals["VmRSS"], vals["VmHWM"]


def one_run(ns: str, root: Path, n: int, manifests: Path, timeout: float
            ) -> tuple[float, float, dict[str, int], float]:
    """Start an agent on the manifests of n services, wait until all are programmed and
    the agent has settled; (RSS MiB, peak MiB, map bytes, seconds to programmed)."""
    pin_dir = root / INSTANCE
    with tempfile.TemporaryDirectory(prefix="rrq-r10-state-") as state:
        # only the network namespace (ip netns exec would also give the agent a mount
        # namespace of its own, with a bpffs the benchmark cannot see)
        cmd = ["nsenter", f"--net=/var/run/netns/{ns}", sys.executable, "-m",
               "controller.cli", "agent",
               "--node", NODE, "--manifests", str(manifests), "--state-dir", state,
               "--datapath", "--uplink", "up0", "--bpf-pin-root", str(root),
               "--bpf-instance", INSTANCE]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            t0 = time.monotonic()
            while programmed(pin_dir) < n or not (pin_dir / "rr_svc").exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"the agent exited: {proc.stderr.read()[-2000:]}"
                                       if proc.stderr else "the agent exited")
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"{programmed(pin_dir)} of {n} services programmed")
                time.sleep(0.1)
            ready = time.monotonic() - t0
            time.sleep(2.0)  # a status pass and a resync tick: the steady state
            rss, hwm = rss_kb(proc.pid)
            maps = map_bytes(pin_dir)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            for p in pin_dir.iterdir() if pin_dir.is_dir() else ():
                p.unlink()
    return rss / 1024, hwm / 1024, maps, ready


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_r10")
    ap.add_argument("--sizes", default="0,1000,10000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=180.0)
    args = ap.parse_args(argv or [])
    sizes = [int(x) for x in args.sizes.split(",")]
    rss: dict[int, list[float]] = {n: [] for n in sizes}
    peak: dict[int, list[float]] = {n: [] for n in sizes}
    ready: dict[int, list[float]] = {n: [] for n in sizes}
    maps: dict[str, int] = {}
    with pin_root("r10") as root, netns(ns_name("r10")) as (ns,), \
            tempfile.TemporaryDirectory(prefix="rrq-r10-") as tmp:
        # the uplink: one end of a veth pair (this kernel has no dummy devices)
        nsx(ns, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
        nsx(ns, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "up0")
        nsx(ns, "ip", "link", "set", "up0", "up")
        nsx(ns, "ip", "link", "set", "up0p", "up")
        dirs = {}
        for n in sizes:
            dirs[n] = Path(tmp) / f"n{n}"
            dirs[n].mkdir()
            write_manifests(dirs[n], n)
        for r in range(args.rounds + 1):  # round 0: warm-up
            order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]
            for n in order:
                mb, hwm, mp, secs = one_run(ns, root, n, dirs[n], args.timeout)
                print(f"  round {r}{' (warm-up)' if not r else ''}: N={n} RSS {mb:.1f} MiB "
                      f"(peak {hwm:.1f}), programmed in {secs:.1f} s", flush=True)
                if r:
                    rss[n].append(mb)
                    peak[n].append(hwm)
                    ready[n].append(secs)
                    maps = mp
    base = stats(rss[sizes[0]])["median"] if sizes[0] == 0 else None
    rows = []
    doc: dict[str, object] = {"rounds": args.rounds, "goal": f"agent <= {GOAL_MB:.0f} MB at "
                              "10k services", "map_bytes": maps}
    for n in sizes:
        st, pk, rd = stats(rss[n]), stats(peak[n]), stats(ready[n])
        growth = ((st["median"] - base) / (n / 1000) if base is not None and n else None)
        rows.append([str(n), f"{st['median']:.1f}", f"{st['min']:.1f}-{st['max']:.1f}",
                     f"{pk['median']:.1f}", "" if growth is None else f"{growth:.1f}",
                     f"{rd['median']:.1f}"])
        doc[str(n)] = {"rss_mib": st, "peak_mib": pk, "programmed_s": rd,
                       "rss_growth_mib_per_1k": growth}
    print(table(["N", "RSS MiB", "min-max", "peak MiB", "MiB per 1k over idle",
                 "programmed in s"], rows))
    total = sum(maps.values())
    print(table(["map", "bytes"], [[k, f"{v:,}"] for k, v in sorted(maps.items())]
                + [["total", f"{total:,}"]]))
    if base and 10000 in rss:
        r10k = stats(rss[10000])["median"]
        print(f"RSS(10k) / RSS(idle) = {r10k / base:.2f}; agent at 10k: {r10k:.0f} MiB "
              f"(goal <= {GOAL_MB:.0f} MB: {'met' if r10k * 1.048576 <= GOAL_MB else 'missed'})")
        doc["ratio_10k_idle"] = r10k / base
    print(f"wrote {save('r10', doc)}")


if __name__ == "__main__":
    main(sys.argv[1:])
