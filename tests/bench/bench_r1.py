"""R1: TCP connect rate through a service VIP with N = 100, 1k, 10k services (the VIP
under test last), eBPF LB vs kube-proxy-style iptables DNAT (nft, legacy) vs a direct
connection to the backend (the limit). Three namespaces made for the run: a client, a
host (router; the LB runs here: our pod-veth TC programs on the client's and the
backend's veths, as on a node whose pods both are, or the iptables nat rules) and a
backend. "ebpf" is the TC path alone (translated packets routed by the program and
handed into the backend's namespace, --host-routing bpf); "ebpf-sock" adds the
socket-level hooks (the client process in a cgroup made for the run, as a pod is with the
agent's --socket-lb-cgroup), where connect() itself picks the backend; "ebpf-sock-only"
is the socket hooks with the pods' forwarding program alone (the agent's --per-packet-lb
off: no service translation on the veths, no egress program);
"direct-bpf" connects to the backend itself with the pod programs attached (no service:
what forwarding in BPF alone gives, so ebpf / direct-bpf is the load balancer's own
cost). The load is a small C program (tests/bench/connrate.c, built into .gen/ by
the run): connects in a tight loop, so an interpreter's per-connection cost does not
dilute the paths' differences. Rounds per N, the variants' order turning each round
(ours next to the direct limit every time), warm-up dropped; each run is bounded in
connections and seconds.

  python -m tests.bench r1 [--sizes 100,1000,10000] [--rounds 21] [--conns 6000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address as A
from pathlib import Path

from bpf.loader import Datapath, DatapathConfig, detach_tc
from bpf.sync import Syncer
from bpf.table import Algorithm, Backend, Proto, Service, ServiceKey
from tests.bench.common import ratio_stats, save, stats, table
from tests.bench.kubeproxy_rules import Svc, full_ruleset
from tests.bench.nsutil import in_netns, netns, ns_name, nsx, pin_root, sh

C_IP, H1, H2, B_IP = "10.77.1.2", "10.77.1.1", "10.77.2.1", "10.77.2.2"
BPORT = 8080
VIP0 = int(A("10.96.0.0"))
RESTORE = {"nft": "iptables-nft-restore", "legacy": "iptables-legacy-restore"}
CGROUP2 = Path("/sys/fs/cgroup/unified")  # cgroup v2 (the socket hooks attach there)

CONNRATE_SRC = Path(__file__).with_name("connrate.c")
CONNRATE = Path(__file__).resolve().parents[2] / ".gen" / "connrate"


def build_connrate() -> str:
    """The C load generator (server and client), built into .gen/ when missing or older
    than its source: a Python loop's own per-connection cost would dilute every path's."""
    if not CONNRATE.exists() or CONNRATE.stat().st_mtime < CONNRATE_SRC.stat().st_mtime:
        CONNRATE.parent.mkdir(exist_ok=True)
        sh("gcc", "-O2", "-Wall", "-o", str(CONNRATE), str(CONNRATE_SRC))
    return str(CONNRATE)


def vip(i: int) -> str:
    return str(A(VIP0 + i))


def connect_rate(ns: str, host: str, port: int, conns: int, secs: float,
                 cgroup: Path | None = None) -> float:
    """Connects/s of a client process in ns (in cgroup, when given, before it starts)."""
    argv = (str(CONNRATE), "client", host, str(port), str(conns), str(secs))
    if cgroup is None:
        out = nsx(ns, *argv)
    else:
        out = sh("sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec ip netns exec {ns} '
                 '"$@"', "sh", *argv)
    n, fails, dt = out.split()
    if int(fails) > int(n) // 100:
        raise RuntimeError(f"{fails} failed connects to {host}:{port} (of {n}; "
                           f"{'socket hooks' if cgroup else 'no socket hooks'})")
    return int(n) / float(dt)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_r1")
    ap.add_argument("--sizes", default="100,1000,10000")
    # many short rounds: the host's noise comes in bursts
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--conns", type=int, default=6000)  # ~0.2 s a run (the C client)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv or [])
    sizes = [int(x) for x in args.sizes.split(",")]
    names = (ns_name("c"), ns_name("h"), ns_name("b"))
    results: dict[int, dict[str, list[float]]] = {}
    server: subprocess.Popen[str] | None = None
    cgroup = CGROUP2 / f"rrq1{os.getpid()}" if (CGROUP2 / "cgroup.procs").exists() else None
    with pin_root("r1") as root, netns(*names) as (cns, hns, bns):
        dp = Datapath(DatapathConfig("r1", pin_root=root))
        # the same maps, the pod programs as built without per-packet LB
        route_only = Datapath(replace(dp.cfg, per_packet_lb=False))
        try:
            sh("ip", "link", "add", "rrq1c", "netns", cns, "type", "veth", "peer", "name",
               "rrq1h", "netns", hns)
            sh("ip", "link", "add", "rrq2h", "netns", hns, "type", "veth", "peer", "name",
               "rrq2b", "netns", bns)
            for ns, dev, addr in ((cns, "rrq1c", C_IP), (hns, "rrq1h", H1), (hns, "rrq2h", H2),
                                  (bns, "rrq2b", B_IP)):
                nsx(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
                nsx(ns, "ip", "link", "set", dev, "up")
            nsx(cns, "ip", "route", "add", "default", "via", H1)
            nsx(bns, "ip", "route", "add", "default", "via", H2)
            nsx(hns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            nsx(cns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 60999")
            server = subprocess.Popen(["ip", "netns", "exec", bns, build_connrate(), "server",
                                       str(BPORT)], stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            dp.load(("pod", "sock") if cgroup is not None else ("pod",))
            if cgroup is not None:
                route_only.load(("pod",))
            if cgroup is not None:  # socket LB for the client processes put in it
                cgroup.mkdir()
                dp.attach_cgroup(cgroup)
            dp.arm_replies()
            syncer = Syncer(dp.maps())

            def restore(which: str, text: str) -> None:
                with in_netns(hns):
                    sh(RESTORE[which], input=text)

            def clean() -> None:
                detach_tc("rrq1h", hns)
                detach_tc("rrq2h", hns)
                for which in RESTORE:
                    restore(which, "*nat\nCOMMIT\n")

            for n in sizes:
                kp = [Svc(vip(i + 1), 80, ((str(A(int(A("10.128.0.0")) + i)), BPORT),))
                      for i in range(n - 1)]
                kp.append(Svc(vip(n), 80, ((B_IP, BPORT),)))  # the VIP under test: last
                rules = full_ruleset(kp)
                tab = {ServiceKey(A(s.vip), 80, Proto.TCP): Service(
                    (Backend(A(s.endpoints[0][0]), BPORT),), algorithm=Algorithm.RANDOM)
                    for s in kp[:-1]}
                tab[ServiceKey(A(vip(n)), 80, Proto.TCP)] = Service((Backend(A(B_IP), BPORT),))
                res = syncer.sync(tab)
                assert not res.errors, list(res.errors.values())[:3]

                def ebpf_setup() -> None:  # as deployed: both pods' veths carry them
                    clean()
                    dp.attach_pod("rrq1h", hns)
                    dp.attach_pod("rrq2h", hns)

                def ipt_setup(which: str, rules: str = rules) -> Callable[[], None]:
                    def load_rules() -> None:
                        clean()
                        restore(which, rules)
                    return load_rules

                variants: dict[str, tuple[Callable[[], None], str, int, Path | None]] = {
                    "ebpf": (ebpf_setup, vip(n), 80, None),
                    "direct": (clean, B_IP, BPORT, None),
                    # no service, the pod programs attached: forwarding in BPF alone
                    "direct-bpf": (ebpf_setup, B_IP, BPORT, None),
                    "iptables-nft": (ipt_setup("nft"), vip(n), 80, None),
                    "iptables-legacy": (ipt_setup("legacy"), vip(n), 80, None),
                }
                if cgroup is not None:  # as deployed with --socket-lb-cgroup: both hooks
                    variants["ebpf-sock"] = (ebpf_setup, vip(n), 80, cgroup)
                    # and with --per-packet-lb off: the socket hooks translate alone

                    def route_only_setup() -> None:
                        clean()
                        route_only.attach_pod("rrq1h", hns)
                        route_only.attach_pod("rrq2h", hns)

                    variants["ebpf-sock-only"] = (route_only_setup, vip(n), 80, cgroup)
                out: dict[str, list[float]] = {k: [] for k in variants}
                names_ = list(variants)
                for r in range(args.rounds + 1):
                    # the order turns each round (ours and the direct limit next to each
                    # other in every round), so no variant always runs first or last
                    order = names_[r % len(names_):] + names_[:r % len(names_)]
                    for name in order:
                        setup, host, port, cg = variants[name]
                        setup()
                        rate = connect_rate(cns, host, port, args.conns, args.seconds, cg)
                        if r:
                            out[name].append(rate)
                    if r:
                        print(f"  N={n} round {r}: " + ", ".join(
                            f"{k} {v[-1]:.0f}/s" for k, v in out.items()), flush=True)
                results[n] = out
            clean()
        finally:
            if server is not None:
                server.kill()
                server.wait(timeout=5)
            if cgroup is not None and cgroup.exists():
                dp.detach_cgroup(cgroup)
                cgroup.rmdir()
            route_only.close()
            dp.close()

    rows = []
    doc: dict[str, object] = {"rounds": args.rounds, "conns_per_run": args.conns,
                              "seconds_per_run": args.seconds}
    for n, out in results.items():
        sec: dict[str, object] = {}
        for name, samples in out.items():
            st = stats(samples)
            sec[name] = {"conn_per_s": st}
            row = [str(n), name, f"{st['median']:.0f}", f"{st['min']:.0f}-{st['max']:.0f}"]
            if name.startswith("ebpf"):
                for base in ("direct", "direct-bpf", "iptables-nft", "iptables-legacy"):
                    rs = ratio_stats(samples, out[base])
                    sec[f"{name} / {base}"] = rs
                    row.append(f"{rs['median']:.2f}x {base} ({rs['min']:.2f}-{rs['max']:.2f})")
            rows.append(row)
        doc[str(n)] = sec
    print(table(["N", "variant", "conn/s median", "min-max", "ebpf ratios (median, min-max)"],
                [r[:4] + ["; ".join(r[4:])] for r in rows]))
    print(f"wrote {save('r1', doc)}")


if __name__ == "__main__":
    main(sys.argv[1:])
