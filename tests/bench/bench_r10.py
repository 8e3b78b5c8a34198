"""R10: memory of the real agent (`rackroute agent --datapath`) with N = 0 (idle), 1k and
10k services × 2 endpoints in its manifest directory: the agent process's resident set
once every service is in its pinned maps (and its peak), and the kernel memory of those
maps (memlock, as the kernel accounts it). Each round starts a fresh agent per N (the
order turns each round) in a network namespace made for the run, with an uplink (a veth)
holding the node address and a pin directory of its own; warm-up dropped.

  python -m tests.bench r10 [--sizes 0,1000,10000] [--rounds 3] [--source files|kube|both]

With --source kube the agent reads the same services from a real kube-apiserver
(tests/kube/apiserver.py; one per N, loaded before the rounds, clusterIPs its own) through
a relay on the namespace's loopback, so the Kubernetes source's cache is measured too.

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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from ipaddress import IPv4Address as A
from pathlib import Path
from typing import Any

import yaml

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


def one_run(ns: str, root: Path, n: int, source: list[str], timeout: float
            ) -> tuple[float, float, dict[str, int], float]:
    """Start an agent on n services (its source: `--manifests DIR` or `--kubeconfig F`),
    wait until all are programmed and the agent has settled; (RSS MiB, peak MiB, map
    bytes, seconds to programmed)."""
    pin_dir = root / INSTANCE
    with tempfile.TemporaryDirectory(prefix="rrq-r10-state-") as state:
        # only the network namespace (ip netns exec would also give the agent a mount
        # namespace of its own, with a bpffs the benchmark cannot see)
        cmd = ["nsenter", f"--net=/var/run/netns/{ns}", sys.executable, "-m",
               "controller.cli", "agent",
               "--node", NODE, *source, "--state-dir", state,
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


def docs(n: int) -> list[dict[str, Any]]:
    """The node and n services with their EndpointSlices, as API objects (the server
    allocates the clusterIPs: its range holds the manifests' own first address)."""
    out: list[dict[str, Any]] = [yaml.safe_load(NODE_YAML)]
    for i in range(n):
        for d in yaml.safe_load_all(manifest(i, [str(A(EP0 + 2 * i)),
                                                 str(A(EP0 + 2 * i + 1))])):
            d.get("spec", {}).pop("clusterIP", None)
            out.append(d)
    return out


@contextmanager
def kube_source(ns: str, n: int, tmp: Path) -> Iterator[list[str]]:
    """A real API server holding n services, and the agent's source arguments for it."""
    from controller.sources.kubeapi import HTTPKubeAPI, from_kubeconfig
    from tests.kube.apiserver import reached_from, running_apiserver
    from tests.kube.conftest import apply, install_crds

    work = tmp / f"api{n}"
    work.mkdir()
    with running_apiserver(work, compaction="5m") as api:
        install_crds(api)
        client = HTTPKubeAPI(from_kubeconfig(api.kubeconfig))
        t0 = time.monotonic()
        everything = docs(n)
        # four writers: the server takes about four times one client's rate
        chunks = [everything[:1]] + [everything[1 + k::4] for k in range(4)]
        apply(client, chunks[0])
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda c: apply(HTTPKubeAPI(client.cfg), c), chunks[1:]))
        client.close()
        print(f"  N={n}: {len(everything)} objects created in the API server in "
              f"{time.monotonic() - t0:.0f} s", flush=True)
        with reached_from(api, ns, work / "kubeconfig-ns") as path:
            yield ["--kubeconfig", str(path)]


def measure(ns: str, root: Path, sizes: list[int], rounds: int, timeout: float,
            sources: dict[int, list[str]] | None, tmp: Path, kube: bool
            ) -> tuple[dict[int, list[float]], dict[int, list[float]], dict[int, list[float]],
                       dict[str, int]]:
    """RSS, peak and time-to-programmed samples per N (round 0, the warm-up, dropped)."""
    rss: dict[int, list[float]] = {n: [] for n in sizes}
    peak: dict[int, list[float]] = {n: [] for n in sizes}
    ready: dict[int, list[float]] = {n: [] for n in sizes}
    maps: dict[str, int] = {}

    def rounds_of(r: int, n: int, source: list[str]) -> None:
        nonlocal maps
        mb, hwm, mp, secs = one_run(ns, root, n, source, timeout)
        print(f"  round {r}{' (warm-up)' if not r else ''}: N={n} RSS {mb:.1f} MiB "
              f"(peak {hwm:.1f}), programmed in {secs:.1f} s", flush=True)
        if r:
            rss[n].append(mb)
            peak[n].append(hwm)
            ready[n].append(secs)
            maps = mp

    if not kube:
        assert sources is not None
        for r in range(rounds + 1):  # round 0: warm-up
            order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]
            for n in order:
                rounds_of(r, n, sources[n])
    else:
        for n in sizes:  # one API server per N, loaded once
            with kube_source(ns, n, tmp) as source:
                for r in range(rounds + 1):
                    rounds_of(r, n, source)
    return rss, peak, ready, maps


def report(label: str, sizes: list[int], rounds: int, rss: dict[int, list[float]],
           peak: dict[int, list[float]], ready: dict[int, list[float]],
           maps: dict[str, int]) -> dict[str, object]:
    base = stats(rss[sizes[0]])["median"] if sizes[0] == 0 else None
    rows = []
    doc: dict[str, object] = {"rounds": rounds, "goal": f"agent <= {GOAL_MB:.0f} MB at "
                              "10k services", "map_bytes": maps}
    for n in sizes:
        st, pk, rd = stats(rss[n]), stats(peak[n]), stats(ready[n])
        growth = ((st["median"] - base) / (n / 1000) if base is not None and n else None)
        rows.append([str(n), f"{st['median']:.1f}", f"{st['min']:.1f}-{st['max']:.1f}",
                     f"{pk['median']:.1f}", "" if growth is None else f"{growth:.1f}",
                     f"{rd['median']:.1f}"])
        doc[str(n)] = {"rss_mib": st, "peak_mib": pk, "programmed_s": rd,
                       "rss_growth_mib_per_1k": growth}
    print(f"source: {label}")
    print(table(["N", "RSS MiB", "min-max", "peak MiB", "MiB per 1k over idle",
                 "programmed in s"], rows))
    if base and 10000 in rss:
        r10k = stats(rss[10000])["median"]
        print(f"RSS(10k) / RSS(idle) = {r10k / base:.2f}; agent at 10k: {r10k:.0f} MiB "
              f"(goal <= {GOAL_MB:.0f} MB: {'met' if r10k * 1.048576 <= GOAL_MB else 'missed'})")
        doc["ratio_10k_idle"] = r10k / base
    return doc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_r10")
    ap.add_argument("--sizes", default="0,1000,10000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--source", choices=("files", "kube", "both"), default="files")
    args = ap.parse_args(argv or [])
    sizes = [int(x) for x in args.sizes.split(",")]
    out: dict[str, object] = {}
    maps: dict[str, int] = {}
    with pin_root("r10") as root, netns(ns_name("r10")) as (ns,), \
            tempfile.TemporaryDirectory(prefix="rrq-r10-") as tmp:
        # the uplink: one end of a veth pair (this kernel has no dummy devices)
        nsx(ns, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
        nsx(ns, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "up0")
        nsx(ns, "ip", "link", "set", "up0", "up")
        nsx(ns, "ip", "link", "set", "up0p", "up")
        if args.source in ("files", "both"):
            sources = {}
            for n in sizes:
                d = Path(tmp) / f"n{n}"
                d.mkdir()
                write_manifests(d, n)
                sources[n] = ["--manifests", str(d)]
            rss, peak, ready, maps = measure(ns, root, sizes, args.rounds, args.timeout,
                                             sources, Path(tmp), kube=False)
            out["files"] = report("manifest directory", sizes, args.rounds, rss, peak,
                                  ready, maps)
        if args.source in ("kube", "both"):
            rss, peak, ready, maps = measure(ns, root, sizes, args.rounds, args.timeout,
                                             None, Path(tmp), kube=True)
            out["kube"] = report("kube-apiserver", sizes, args.rounds, rss, peak, ready,
                                 maps)
    total = sum(maps.values())
    print(table(["map", "bytes"], [[k, f"{v:,}"] for k, v in sorted(maps.items())]
                + [["total", f"{total:,}"]]))
    doc = out["files"] if args.source == "files" else out
    assert isinstance(doc, dict)
    print(f"wrote {save('r10', doc)}")


if __name__ == "__main__":
    main(sys.argv[1:])
