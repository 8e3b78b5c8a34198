"""R5 (control-plane half): Service created -> LB IP allocated -> route in the ToR's kernel.

The operator (`rackroute operator`) and the agent (tests/bench/r5_agent.py, GoBGP) run as
processes with a 20 ms manifest poll. One round writes a new Service (+ EndpointSlice on
the node) into the manifest directory and waits until its /32 is in the ToR's kernel
(seen by `ip -n <tor> monitor route`). The floor, measured alternately in the same run:
an FRR peer with `redistribute kernel` learns a route added with `ip route add` in its
namespace, and the ToR's kernel gets it. The split: the operator's allocation time is the
mtime of `.status/operator.yaml` when the service's IP first appears in it.

Topology (namespaces `rrv<run id>5<x>`, deleted at the end):

    n: agent (gobgpd) 10.58.0.11 AS 65011 ─┐
    f: FRR peer       10.58.0.13 AS 65013 ─┤ br0 in t: FRR ToR 10.58.0.1 AS 65000

Run: `python -m tests.bench r5` (env R5_ROUNDS, default 24 measured + 1 warm-up).

With R5_SOURCE=kube the cluster lives in a real kube-apiserver instead
(tests/kube/apiserver.py): each round creates the Service and its EndpointSlice through
the API, the operator (`--kubeconfig`) writes the IP into the Service's status, and the
real agent (`rackroute agent --kubeconfig`, through a relay into its namespace) follows
its watch; the allocation time is when a watch of the services sees the IP in the status.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from controller.lab.frr import BgpConfig, FrrRouter, Neighbor
from controller.lab.leftovers import kill_leftover_speakers, stop_all
from controller.lab.netns import Lab, run_cmd, run_id, veth, wait_for
from controller.status import read_yaml, status_dir
from tests.bench.common import save, table
from tests.manifests import LB_ADVERTISEMENT, tor_cluster

TOR = "10.58.0.1"
POLL = 0.02
WAIT = 30.0
REPO = Path(__file__).resolve().parents[2]


def base_docs() -> list[dict[str, Any]]:
    return tor_cluster(65011, TOR, "lb", [LB_ADVERTISEMENT]) + [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.58.0.11"}]}},
    ]


def service_docs(name: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "namespace": "bench",
                      "creationTimestamp": "2026-01-01T00:00:00Z"},
         "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-1", "namespace": "bench",
                      "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": ["10.244.0.9"], "nodeName": "n1"}],
         "ports": [{"port": 80}]},
    ]


class Monitor:
    """`ip monitor route` in the ToR: the first time each BGP /32 is added."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(["ip", "-n", ns, "-4", "monitor", "route"],
                                     stdout=subprocess.PIPE, text=True)
        self.seen: queue.Queue[tuple[str, float]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.time()
            if line.startswith("Deleted") or "proto bgp" not in line:
                continue
            self.seen.put((line.split()[0], t))

    def wait(self, prefix: str) -> float:
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{prefix} never reached the ToR's kernel")
            try:
                dst, t = self.seen.get(timeout=left)
            except queue.Empty:
                continue
            if dst == prefix:
                return t

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


class AllocWatch:
    """When each service's IP first appeared (`alloc`), and a wait for one."""

    def __init__(self) -> None:
        self.alloc: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, float]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            with self._lock:
                if key in self.alloc:
                    return self.alloc[key]
            time.sleep(0.002)
        raise RuntimeError(f"no allocation for {key}")


class StatusWatch(AllocWatch):
    """Polls .status/operator.yaml: when each service's IP first appears (file mtime)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.path = status_dir(root) / "operator.yaml"
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        last = 0
        while not self._stop.wait(0.002):
            try:
                m = self.path.stat().st_mtime_ns
            except OSError:
                continue
            if m == last:
                continue
            last = m
            for key, svc in read_yaml(self.path).get("services", {}).items():
                if svc.get("ingress") and key not in self.alloc:
                    with self._lock:
                        self.alloc[key] = (svc["ingress"][0], m / 1e9)

    def close(self) -> None:
        self._stop.set()


class ApiStatusWatch(AllocWatch):
    """Watches the services in the API: when each one's IP first appears in its status."""

    def __init__(self, api: Any) -> None:
        from controller.sources.kubeapi import RESOURCES

        super().__init__()
        self.api = api
        self.res = RESOURCES["Service"]
        _, rv = api.list(self.res, "bench")
        self._watch = api.watch(self.res, rv, "bench", timeout=3600)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for ev in self._watch:
            t = time.time()
            st = (ev.obj.get("status") or {}).get("loadBalancer") or {}
            ingress = st.get("ingress") or []
            key = f"bench/{ev.obj['metadata']['name']}"
            if ingress:
                with self._lock:
                    self.alloc.setdefault(key, (str(ingress[0]["ip"]), t))

    def close(self) -> None:
        self._watch.close()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(xs), "p99": pct(xs, 0.99), "min": min(xs), "max": max(xs)}


@contextlib.contextmanager
def api_server(node_ns: str, tmp: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A real API server holding the base cluster; (client, the operator's source
    arguments, the agent's command line after the interpreter)."""
    from controller.sources.kubeapi import HTTPKubeAPI, from_kubeconfig
    from tests.kube.apiserver import reached_from, running_apiserver
    from tests.kube.conftest import apply, install_crds

    work = tmp / "api"
    work.mkdir()
    with running_apiserver(work, compaction="5m") as api:
        install_crds(api)
        client = HTTPKubeAPI(from_kubeconfig(api.kubeconfig))
        apply(client, base_docs())
        try:
            with reached_from(api, node_ns, work / "kubeconfig-node") as node_kc:
                yield (client, ["--kubeconfig", str(api.kubeconfig)],
                       ["-m", "controller.cli", "agent", "--node", "n1", "--kubeconfig",
                        str(node_kc), "--speaker", "gobgp", "--state-dir",
                        str(tmp / "state"), "--metrics-port", "0"])
        finally:
            client.close()


def main() -> None:
    rounds = int(os.environ.get("R5_ROUNDS", "24"))
    source = os.environ.get("R5_SOURCE", "files")
    if source not in ("files", "kube"):
        raise SystemExit(f"R5_SOURCE: files or kube, got {source!r}")
    stack = contextlib.ExitStack()
    lab = Lab(f"rrv{run_id()}5")
    tmp = Path(tempfile.mkdtemp(prefix="rrv-r5-"))
    root = tmp / "manifests"
    root.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    mon: Monitor | None = None
    watch: StatusWatch | ApiStatusWatch | None = None
    kube: Any = None
    svc: list[float] = []
    alloc: list[float] = []
    announce: list[float] = []
    floor: list[float] = []
    started = time.monotonic()
    try:
        tor_ns = lab.netns("t")
        tor_ns.add_bridge("br0")
        tor_ns.add_address("br0", f"{TOR}/24")
        node = lab.netns("n")
        peer = lab.netns("f")
        for ns, x, addr in ((node, "n", "10.58.0.11"), (peer, "f", "10.58.0.13")):
            veth(ns, "eth0", tor_ns, f"port{x}", master="br0")
            ns.add_address("eth0", f"{addr}/24")
        tor = FrrRouter(tor_ns, BgpConfig(asn=65000, router_id=TOR,
                                          listen_ranges=("10.58.0.0/24",)))
        lab.defer(tor.close)
        tor.start()
        tor.add_neighbor(Neighbor(address="10.58.0.11", peer_group="NODES"))
        frr = FrrRouter(peer, BgpConfig(asn=65013, router_id="10.58.0.13", hostname="peer",
                                        neighbors=(Neighbor(address=TOR, remote_as="65000"),)))
        lab.defer(frr.close)
        frr.start()
        frr.configure("address-family ipv4 unicast", "redistribute kernel")

        logs = open(tmp / "processes.log", "wb")  # noqa: SIM115
        lab.defer(logs.close)
        if source == "kube":
            kube, op_source, agent_argv = stack.enter_context(api_server(node.name, tmp))
        else:
            (root / "00-base.yaml").write_text(yaml.safe_dump_all(base_docs()))
            op_source = ["--manifests", str(root), "--interval", str(POLL)]
            agent_argv = ["-m", "tests.bench.r5_agent", "n1", str(root), str(tmp / "state"),
                          str(POLL)]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "operator", "--metrics-port", "0",
             *op_source],
            stdout=logs, stderr=subprocess.STDOUT, cwd=REPO))
        procs.append(node.popen([sys.executable, *agent_argv], stdout=logs,
                                stderr=subprocess.STDOUT, cwd=REPO))
        for addr in ("10.58.0.11", "10.58.0.13"):
            wait_for(lambda a=addr: tor.neighbor_state(a) == "Established",  # type: ignore[misc]
                     60, 0.2, f"ToR session with {addr}")
        mon = Monitor(tor_ns.name)
        watch = ApiStatusWatch(kube) if kube is not None else StatusWatch(root)
        time.sleep(1.0)

        for i in range(rounds + 1):
            # A: a new Service in the manifest directory (written whole, then renamed in)
            name = f"svc-{i:03d}"
            if kube is not None:
                from tests.kube.conftest import apply

                t0 = time.time()
                apply(kube, service_docs(name))
            else:
                staged = tmp / f"{name}.yaml"
                staged.write_text(yaml.safe_dump_all(service_docs(name)))
                t0 = time.time()
                os.replace(staged, root / f"50-{name}.yaml")
            ip, t_alloc = watch.get(f"bench/{name}")
            t_kernel = mon.wait(f"{ip}")
            # B: the floor, an FRR peer learning a kernel route
            pfx = f"203.0.113.{i}"
            t1 = time.time()
            run_cmd(["ip", "-n", peer.name, "route", "add", "blackhole", f"{pfx}/32",
                     "proto", "static"])
            t_floor = mon.wait(pfx)
            warm = " (warm-up)" if i == 0 else ""
            print(f"round {i}{warm}: service {ip} {1e3 * (t_kernel - t0):.1f} ms "
                  f"(alloc {1e3 * (t_alloc - t0):.1f}, announce->kernel "
                  f"{1e3 * (t_kernel - t_alloc):.1f}); floor {1e3 * (t_floor - t1):.1f} ms",
                  flush=True)
            if i > 0:
                svc.append(t_kernel - t0)
                alloc.append(t_alloc - t0)
                announce.append(t_kernel - t_alloc)
                floor.append(t_floor - t1)
    finally:
        if watch:
            watch.close()
        if mon:
            mon.close()
        stop_all(procs, timeout=15)
        kill_leftover_speakers(tmp)
        stack.close()
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    st = {"service": summary(svc), "operator_alloc": summary(alloc),
          "alloc_to_kernel": summary(announce), "floor_frr": summary(floor)}
    ratio = [a / b for a, b in zip(svc, floor, strict=True)]
    st["ratio_service_over_floor"] = summary(ratio)
    p50r = st["service"]["p50"] / st["floor_frr"]["p50"]
    rows = [[k, *(f"{1e3 * v[q]:.1f}" for q in ("p50", "p99", "min", "max"))]
            for k, v in st.items() if k != "ratio_service_over_floor"]
    rows.append(["per-round ratio service/floor",
                 *(f"{st['ratio_service_over_floor'][q]:.2f}x"
                   for q in ("p50", "p99", "min", "max"))])
    how = ("through a kube-apiserver" if source == "kube"
           else f"in a manifest directory, poll {1e3 * POLL:.0f} ms")
    print(f"\nR5: {rounds} services created one after another (after a warm-up), each "
          f"followed by a floor measurement; {how}; run took {elapsed:.0f} s")
    print(table(["ms", "p50", "p99", "min", "max"], rows))
    print(f"goal p50 <= 2x floor: {'met' if p50r <= 2 else 'NOT met'} "
          f"(p50 service / p50 floor = {p50r:.2f}x)")
    path = save("r5" if source == "files" else "r5-kube",
                {"benchmark": "R5", "source": source, "rounds": rounds, "warmup": 1, "poll_s": POLL,
                       "unit": "seconds",
                       "samples": {"service": svc, "operator_alloc": alloc,
                                   "alloc_to_kernel": announce, "floor_frr": floor},
                       "stats": st, "p50_ratio": p50r, "goal": {"p50_over_floor_max": 2.0},
                       "elapsed_s": elapsed})
    print(f"wrote {path}")
