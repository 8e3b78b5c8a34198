"""R6: an EndpointSlice changed in a manifest directory → the service's entry in the
pinned eBPF maps updated, through the real pipeline: files source (polling) → store →
reconcile loop → datapath reconciler → real maps in a test pin directory. p50/p99 over
the changes, each followed (ABAB) by the floor: one map write of one entry.

  python -m tests.bench r6 [--services 100] [--changes 30] [--poll 0.005] [--source kube]

The latency includes the source's poll interval (--poll) and its full re-read of the
directory, so it grows with the number of manifests; the part from the store's publish
to the map update (planning, sync, confirmation) is reported on its own line.

With --source kube the services live in a real kube-apiserver (tests/kube/apiserver.py)
and the change is a merge patch of the EndpointSlice through the API; the kube source
follows its watch. The latency then includes the API write and the watch delivery.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator
from ipaddress import IPv4Address as A
from pathlib import Path
from typing import Any

import yaml

from bpf import maps as m
from bpf.loader import Datapath, DatapathConfig
from bpf.mapstore import PinnedMap
from bpf.sync import Syncer, SyncMaps
from controller.reconcile.datapath import DatapathReconciler
from controller.reconcile.loop import Loop
from controller.sources.files import FileSource
from controller.sources.kube import AGENT_KINDS, KubeSource
from controller.sources.kubeapi import RESOURCES
from controller.store import Snapshot, Store
from tests.bench.common import save, stats, table
from tests.bench.nsutil import pin_root

NODE, NODE_IP = "n1", "192.0.2.1"
VIP0, EP0, NEW0 = int(A("10.96.0.0")), int(A("10.128.0.0")), int(A("10.160.0.0"))


def vip(i: int) -> str:
    return str(A(VIP0 + 1 + i))


def manifest(i: int, eps: list[str]) -> str:
    addrs = "\n".join(f"- addresses: [{a}]\n  nodeName: {NODE}\n  conditions: {{ready: true}}"
                      for a in eps)
    return f"""apiVersion: v1
kind: Service
metadata: {{name: s{i}, namespace: bench}}
spec:
  clusterIP: {vip(i)}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s{i}-a
  namespace: bench
  labels: {{kubernetes.io/service-name: s{i}}}
addressType: IPv4
endpoints:
{addrs}
ports: [{{port: 8080}}]
"""


NODE_YAML = f"""apiVersion: v1
kind: Node
metadata: {{name: {NODE}}}
status: {{addresses: [{{type: InternalIP, address: {NODE_IP}}}]}}
"""


class TimedStore(Store):
    """A store that remembers when the source last published (the split point)."""

    published = 0.0

    def publish(self, snap: Snapshot) -> None:
        self.published = time.perf_counter()
        super().publish(snap)


def backend_ips(maps: SyncMaps, ip: str) -> set[str]:
    """The backends the maps hold for ip:80/tcp right now."""
    raw = maps.svc.lookup(bytes(m.svc_key(A(ip), 80, 6)))
    if raw is None:
        return set()
    sv = m.SvcValue.from_buffer_copy(raw)
    tab = maps.maglev.lookup(sv.svc_id.to_bytes(4, "little"))
    if tab is None:
        return set()
    out = set()
    for bid in set(array("I", tab)):
        b = maps.backend.lookup(bid.to_bytes(4, "little"))
        if b is not None:
            v = m.BackendValue.from_buffer_copy(b)
            out.add(str(m.ip_of(v.addr, v.family)))
    return out


def wait_for(cond: object, timeout: float = 10.0) -> float:
    t_end = time.perf_counter() + timeout
    while not cond():  # type: ignore[operator]
        if time.perf_counter() > t_end:
            raise TimeoutError("the maps were not updated in time")
        time.sleep(0.0002)
    return time.perf_counter()


def one_write(port: PinnedMap, key: bytes, value: bytes) -> float:
    t0 = time.perf_counter()
    port.update_batch([(key, value)])
    return time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


@contextlib.contextmanager
def api_server(mdir: Path, n: int) -> Iterator[Any]:
    """A real API server holding the directory's node, services and slices (the
    clusterIPs its own); a client of it."""
    from controller.sources.kubeapi import HTTPKubeAPI, from_kubeconfig
    from tests.kube.apiserver import running_apiserver
    from tests.kube.conftest import apply, install_crds

    docs = [yaml.safe_load(NODE_YAML)]
    for i in range(n):
        for d in yaml.safe_load_all((mdir / f"s{i}.yaml").read_text()):
            d.get("spec", {}).pop("clusterIP", None)
            docs.append(d)
    with running_apiserver(mdir / "api", compaction="5m") as srv:
        install_crds(srv)
        client = HTTPKubeAPI(from_kubeconfig(srv.kubeconfig))
        apply(client, docs)
        try:
            yield client
        finally:
            client.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_r6")
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--changes", type=int, default=30)
    ap.add_argument("--poll", type=float, default=0.005)
    ap.add_argument("--source", choices=("files", "kube"), default="files")
    args = ap.parse_args(argv or [])
    n = args.services
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with pin_root("r6") as root, tempfile.TemporaryDirectory(prefix="rrq-r6-") as tmp, \
            contextlib.ExitStack() as stack:
        mdir = Path(tmp)
        (mdir / "node.yaml").write_text(NODE_YAML)
        for i in range(n):
            (mdir / f"s{i}.yaml").write_text(manifest(i, [str(A(EP0 + 2 * i)),
                                                          str(A(EP0 + 2 * i + 1))]))
        api = stack.enter_context(api_server(mdir, n)) if args.source == "kube" else None
        dp = Datapath(DatapathConfig("r6", pin_root=root)).load(("pod",))
        try:
            maps = dp.maps()
            store = TimedStore()
            loop = Loop(store, NODE, [DatapathReconciler(Syncer(maps))], resync=3600)
            src: FileSource | KubeSource = (
                KubeSource(api, store, AGENT_KINDS) if api is not None
                else FileSource(mdir, store, interval=args.poll))
            threads = [threading.Thread(target=src.run, args=(stop,), daemon=True),
                       threading.Thread(target=loop.run, args=(stop,), daemon=True)]
            for t in threads:
                t.start()
            probe = PinnedMap.open(str(root / "r6" / "rr_svc"))
            # the service addresses: the manifests', or those the API server gave
            vips = ({int(str(svc["metadata"]["name"])[1:]): str(svc["spec"]["clusterIP"])
                     for svc in api.list(RESOURCES["Service"], "bench")[0]}
                    if api is not None else {i: vip(i) for i in range(n)})
            wait_for(lambda: len(backend_ips(maps, vips[n - 1])) == 2, 60)
            pkey = bytes(m.svc_key(A(vips[0]), 80, 6))
            pval = probe.lookup(pkey)
            assert pval is not None
            lat: list[float] = []
            dpath: list[float] = []
            floor: list[float] = []
            for j in range(args.changes + 1):  # change 0 is the warm-up
                i = (j * 7) % n
                new = str(A(NEW0 + j))
                text = manifest(i, [str(A(EP0 + 2 * i)), new])
                if api is not None:
                    patch = {"endpoints": list(yaml.safe_load_all(text))[1]["endpoints"]}
                    t0 = time.perf_counter()
                    api.merge_patch(RESOURCES["EndpointSlice"], f"s{i}-a", patch, "bench")
                else:
                    t0 = time.perf_counter()
                    (mdir / f"s{i}.yaml").write_text(text)
                t1 = wait_for(lambda i=i, new=new: new in backend_ips(maps, vips[i]))
                f = one_write(probe, pkey, pval)
                if j:
                    lat.append(t1 - t0)
                    dpath.append(t1 - store.published)
                    floor.append(f)
            probe.close()
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)
            dp.close()

    ls, fs, ds = stats(lat), stats(floor), stats(dpath)
    p50, p99 = statistics.median(lat), pct(lat, 0.99)
    rows = [["slice change -> map updated", f"{p50 * 1000:.2f}", f"{p99 * 1000:.2f}",
             f"{ls['min'] * 1000:.2f}-{ls['max'] * 1000:.2f}"],
            ["  of which snapshot published -> map updated", f"{ds['median'] * 1000:.2f}",
             f"{pct(dpath, 0.99) * 1000:.2f}", f"{ds['min'] * 1000:.2f}-{ds['max'] * 1000:.2f}"],
            ["floor: one map write", f"{fs['median'] * 1000:.4f}",
             f"{pct(floor, 0.99) * 1000:.4f}", f"{fs['min'] * 1000:.4f}-{fs['max'] * 1000:.4f}"]]
    print(table(["what", "p50 ms", "p99 ms", "min-max ms"], rows))
    where = ("in a kube-apiserver, the kube source watching" if args.source == "kube"
             else f"in the directory, source poll {args.poll * 1000:.0f} ms")
    print(f"p50 ratio to the floor: {p50 / fs['median']:.0f}x; {n} services {where}, "
          f"{args.changes} changes")
    out = save("r6" if args.source == "files" else "r6-kube",
               {"source": args.source, "services": n, "changes": args.changes, "poll_s": args.poll,
                      "latency_s": {**ls, "p50": p50, "p99": p99},
                      "publish_to_map_s": {**ds, "p99": pct(dpath, 0.99)},
                      "floor_one_write_s": {**fs, "p99": pct(floor, 0.99)},
                      "p50_ratio_to_floor": p50 / fs["median"]})
    print(f"wrote {out}")

if __name__ == "__main__":
    main(sys.argv[1:])
