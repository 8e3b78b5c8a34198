"""R2: programming N services × 2 endpoints from scratch, and one change with N present:
our batched map sync (real pinned maps) vs kube-proxy-style `iptables-restore` (nft and
legacy backends) inside a network namespace made for the run. ABAB rounds, warm-up
dropped, median/min/max and per-round ratios.

  python -m tests.bench r2 [--services 10000] [--rounds 5]

Ours, full: an empty map set, cold Maglev caches, a new Syncer (adopt + sync).
  maglev: the default algorithm (a Maglev table computed per backend set), filled by the
    C library (.gen/libmaglev.so, `make native`);
  maglev-numpy: the same without the C library (the numpy fill it replaced; equal tables);
  random: the kube-proxy-equivalent choice (a uniform table, nothing to compute).
Ours, one change: one service's second endpoint replaced, N present; "same objects" hands
the syncer the previous table with one entry replaced, "fresh table" a table rebuilt
from scratch (equal, not identical objects), as the reconciler's planner produces.
iptables, one change: the --noflush partial update kube-proxy writes for one service.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address as A

from bpf import maglev
from bpf.loader import Datapath, DatapathConfig
from bpf.sync import Syncer, SyncMaps
from bpf.table import Algorithm, Backend, Proto, Service, ServiceKey
from controller.desired.services import PlanMemo, plan_services
from controller.model.k8s import Endpoint, EndpointPort, EndpointSlice, ServicePort
from controller.model.k8s import Service as K8sService
from controller.model.meta import Meta
from controller.store import Snapshot
from tests.bench.common import ratio_stats, save, stats, table
from tests.bench.kubeproxy_rules import Svc, full_ruleset, one_service_update
from tests.bench.nsutil import in_netns, netns, ns_name, pin_root, sh

VIP0, EP0, ALT0 = int(A("10.96.0.0")), int(A("10.128.0.0")), int(A("10.160.0.0"))
RESTORE = {"nft": "iptables-nft-restore", "legacy": "iptables-legacy-restore"}


def endpoints(i: int, alt: bool) -> tuple[tuple[str, int], tuple[str, int]]:
    second = str(A(ALT0 + i)) if alt else str(A(EP0 + 2 * i + 1))
    return (str(A(EP0 + 2 * i)), 8080), (second, 8080)


def our_table(n: int, alg: Algorithm, changed: int = -1) -> dict[ServiceKey, Service]:
    out = {}
    for i in range(n):
        eps = endpoints(i, i == changed)
        out[ServiceKey(A(VIP0 + i), 80, Proto.TCP)] = Service(
            tuple(Backend(A(ip), p) for ip, p in eps), algorithm=alg, name=f"bench/s{i}")
    return out


def k8s_objects(n: int) -> tuple[list[object], list[EndpointSlice]]:
    """The same services as manifests: Services and EndpointSlices (the second list holds
    the alternative slices, one per service)."""
    objs: list[object] = []
    alt: list[EndpointSlice] = []
    ports = (EndpointPort(8080, "TCP", ""),)
    for i in range(n):
        objs.append(K8sService(Meta("Service", f"s{i}", "bench"), cluster_ips=(A(VIP0 + i),),
                               ports=(ServicePort(80, "TCP", "", 8080),)))
        for changed, out in ((False, objs), (True, alt)):
            eps = tuple(Endpoint((A(ip),), node_name="n2")
                        for ip, _ in endpoints(i, changed))
            out.append(EndpointSlice(Meta("EndpointSlice", f"s{i}-a", "bench"), f"s{i}",
                                     "IPv4", eps, ports))
    return objs, alt


def kp_services(n: int) -> list[Svc]:
    return [Svc(str(A(VIP0 + i)), 80, endpoints(i, False)) for i in range(n)]


def restore(ns: str, which: str, text: str, noflush: bool = False) -> None:
    with in_netns(ns):
        sh(RESTORE[which], *(["--noflush"] if noflush else []), input=text)


def flush(ns: str, which: str) -> None:
    restore(ns, which, "*nat\nCOMMIT\n")


def run_rounds(variants: dict[str, tuple[Callable[[], None], Callable[[], object]]],
               rounds: int) -> dict[str, list[float]]:
    """ABAB with an untimed setup before each timed run; round 0 is the warm-up."""
    out: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds + 1):
        for name, (setup, fn) in variants.items():
            setup()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r:
                out[name].append(dt)
        print(f"  round {r}{' (warm-up)' if not r else ''}: "
              + ", ".join(f"{k} {v[-1] * 1000:.1f} ms" for k, v in out.items() if v and r),
              flush=True)
    return out


def clear(maps: SyncMaps) -> None:
    Syncer(maps).sync({})
    maglev._slots.cache_clear()
    maglev._params.cache_clear()


def without_native(fn: Callable[[], object]) -> Callable[[], object]:
    """fn run as if the C fill library were not built."""
    def run() -> object:
        real = maglev._native
        maglev._native = lambda: None  # type: ignore[assignment]
        try:
            return fn()
        finally:
            maglev._native = real
    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_r2")
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv or [])
    n = args.services
    if not maglev.native():
        print(f"note: {maglev.native_path()} is not built (make native); "
              "ours-maglev uses the numpy or pure-Python fill", flush=True)
    base = {a: our_table(n, a) for a in Algorithm}
    kp = kp_services(n)
    kp_full = full_ruleset(kp)
    mid = n - 1  # the last service changes
    changed = Svc(kp[mid].vip, 80, endpoints(mid, True))
    kp_there, kp_back = one_service_update(mid, kp[mid], changed), one_service_update(
        mid, changed, kp[mid])

    with pin_root("r2") as root, netns(ns_name("r2")) as (ns,):
        dp = Datapath(DatapathConfig("r2", pin_root=root)).load(("pod",))
        try:
            maps = dp.maps()
            full = {
                "ours-maglev": (lambda: clear(maps),
                                lambda: Syncer(maps).sync(base[Algorithm.MAGLEV])),
                "ours-maglev-numpy": (lambda: clear(maps), without_native(
                    lambda: Syncer(maps).sync(base[Algorithm.MAGLEV]))),
                "ours-random": (lambda: clear(maps),
                                lambda: Syncer(maps).sync(base[Algorithm.RANDOM])),
                "iptables-nft": (lambda: flush(ns, "nft"),
                                 lambda: restore(ns, "nft", kp_full)),
                "iptables-legacy": (lambda: flush(ns, "legacy"),
                                    lambda: restore(ns, "legacy", kp_full)),
            }
            print(f"R2 full: {n} services x 2 endpoints from scratch", flush=True)
            full_t = run_rounds(full, args.rounds)

            # one change with n present
            clear(maps)
            syncer = Syncer(maps)
            syncer.sync(base[Algorithm.MAGLEV])
            flip = {"ours": False, "nft": False, "legacy": False}
            same_alt = dict(base[Algorithm.MAGLEV])
            alt_key = ServiceKey(A(VIP0 + mid), 80, Proto.TCP)
            same_alt[alt_key] = our_table(n, Algorithm.MAGLEV, mid)[alt_key]
            fresh: list[dict[ServiceKey, Service]] = []

            def ours_same() -> None:  # the maps flip between the two states
                flip["ours"] = not flip["ours"]
                res = syncer.sync(same_alt if flip["ours"] else base[Algorithm.MAGLEV])
                assert res.writes >= 1 and not res.errors

            def fresh_setup() -> None:
                flip["ours"] = not flip["ours"]
                fresh[:] = [our_table(n, Algorithm.MAGLEV, mid if flip["ours"] else -1)]

            def ours_fresh() -> None:
                res = syncer.sync(fresh[0])
                assert res.writes >= 1 and not res.errors

            objs, alt = k8s_objects(n)
            memo = PlanMemo()
            planned: list[dict[ServiceKey, Service]] = []
            plan_t: list[float] = []
            plan_services(Snapshot.build(objs), "n1", (), memo)

            def planned_setup() -> None:
                flip["ours"] = not flip["ours"]
                snap = Snapshot.build(objs + [alt[mid]] if flip["ours"] else objs)
                t0 = time.perf_counter()
                planned[:] = [dict(plan_services(snap, "n1", (), memo).table)]
                plan_t.append(time.perf_counter() - t0)

            def ours_planned() -> None:
                res = syncer.sync(planned[0])
                assert res.writes >= 1 and not res.errors

            def kp_one(which: str) -> Callable[[], None]:
                def run() -> None:
                    flip[which] = not flip[which]
                    restore(ns, which, kp_there if flip[which] else kp_back, noflush=True)
                return run

            for which in ("nft", "legacy"):
                restore(ns, which, kp_full)
            one = {
                "ours (same objects)": (lambda: None, ours_same),
                "ours (fresh table)": (fresh_setup, ours_fresh),
                "iptables-nft": (lambda: None, kp_one("nft")),
                "iptables-legacy": (lambda: None, kp_one("legacy")),
            }
            print(f"R2 one change with {n} present", flush=True)
            one_t = run_rounds(one, args.rounds)
            # on its own: the runs above hand the syncer other objects for every entry
            planned_sync = {"ours (planned table)": (planned_setup, ours_planned),
                            "iptables-nft": (lambda: None, kp_one("nft")),
                            "iptables-legacy": (lambda: None, kp_one("legacy"))}
            print(f"R2 one change with {n} present, planned", flush=True)
            syncer = Syncer(maps)  # adopts; remembers the planner's objects from here on
            syncer.sync(plan_services(Snapshot.build(objs), "n1", (), memo).table)
            flip["ours"] = False  # the maps hold the unchanged table, as planned
            planned_t = run_rounds(planned_sync, args.rounds)
            print(f"  planning {n} services with the memo (untimed above): "
                  f"median {stats(plan_t[1:])['median'] * 1000:.1f} ms", flush=True)
            for which in ("nft", "legacy"):
                flush(ns, which)
            clear(maps)
        finally:
            dp.close()

    rows = []
    doc: dict[str, object] = {"services": n, "endpoints_per_service": 2,
                              "rounds": args.rounds}
    for label, res, ours in (("full", full_t, ("ours-maglev", "ours-maglev-numpy",
                                               "ours-random")),
                             ("one change", one_t, ("ours (same objects)",
                                                    "ours (fresh table)")),
                             ("one change, planned", planned_t,
                              ("ours (planned table)",))):
        section: dict[str, object] = {}
        for name, samples in res.items():
            st = stats(samples)
            section[name] = {"seconds": st}
            row = [label, name, f"{st['median'] * 1000:.2f}",
                   f"{st['min'] * 1000:.2f}-{st['max'] * 1000:.2f}"]
            if name.startswith("iptables"):
                for o in ours:
                    rs = ratio_stats(samples, res[o])
                    section[f"{name} / {o}"] = rs
                    row.append(f"{rs['median']:.1f}x vs {o} ({rs['min']:.1f}-{rs['max']:.1f})")
            rows.append(row)
        doc[label] = section
    print(table(["case", "variant", "median ms", "min-max ms", "baseline / ours (median, "
                 "min-max)"], [r[:4] + ["; ".join(r[4:])] for r in rows]))
    print(f"wrote {save('r2', doc)}")


if __name__ == "__main__":
    main(sys.argv[1:])
