"""R4: pod→pod across nodes, TCP throughput and request/response rate, for native routing,
VXLAN (kernel device), Geneve (eBPF in TC) and node→node with no CNI at all; with
--underlay6, also VXLAN and Geneve over an IPv6-only node network ("vxlan6", "geneve6":
70 bytes of overhead, pod MTU 1430).

  python -m tests.bench.bench_r4 [--rounds 5] [--seconds 3] [--underlay6]
  (or: python -m tests.bench r4)

Three copies of the two-node lab of tests/integration/routing (nodes on different
subnets behind a router), one per routing mode, each programmed once by the real
RoutingReconciler (learned routes from a fake speaker for native; the router learns the
pod CIDRs for it). Variants alternate A B C D per round, warm-up round dropped; ratios
are per round against node→node. Throughput: one iperf3 run of --seconds; rate: one
TCP connection, 1-byte request / 1-byte reply, for --rr-seconds, from a Python client
(so the absolute rate is Python-bound; the ratios are what matter). Pod MTU 1500 for
native, 1450 (the tunnel rule) for the tunnels. Prints a table and saves results/r4.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable

from tests.bench.common import abab, ratio_stats, save, stats, table
from tests.integration.routing.tcp import iperf
from tests.integration.routing.topo import POD_CIDR, POD_IP, UNDERLAY, Topo
from tests.unit.routing.cluster import learn

RR_PORT = 5399
RR_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = c.recv(1)
        if not b:
            break
        c.sendall(b)
    c.close()
"""
RR_CLIENT = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n, end = 0, time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    c.sendall(b"x"); c.recv(1); n += 1
print(n / float(sys.argv[3]))
"""


class Lab:
    """One two-node lab programmed for one routing mode, with an RR server per target."""

    def __init__(self, tag: str, mode: str, protocol: str, underlay6: bool = False) -> None:
        self.topo = Topo(tag, underlay6=underlay6)
        self.servers: list[subprocess.Popen[bytes]] = []
        self.topo.build(pod_mtu=1500 if mode == "native" else 1430 if underlay6 else 1450)
        snap = self.topo.snapshot(mode, protocol)
        if mode == "native":
            self.topo.router_knows_pods(True)
        for name, node in self.topo.nodes.items():
            other = "n2" if name == "n1" else "n1"
            if mode == "native":
                learn(node.speaker, POD_CIDR[other], UNDERLAY[name][1])
            node.start(mode, protocol)
            errors = node.reconcile(snap).errors
            if errors:
                raise RuntimeError(f"{tag} {name}: {errors}")
        n2 = self.topo.nodes["n2"]
        for ns in (n2.pod_ns, n2.ns):
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", RR_SERVER, str(RR_PORT)]))
        time.sleep(0.3)

    def close(self) -> None:
        for p in self.servers:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        self.topo.teardown()


def rr(client_ns: str, ip: str, seconds: float) -> float:
    out = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c", RR_CLIENT, ip,
                          str(RR_PORT), str(seconds)], capture_output=True, text=True,
                         timeout=seconds + 10, check=True).stdout
    return float(out.strip())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_r4")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rr-seconds", type=float, default=1.0)
    ap.add_argument("--underlay6", action="store_true",
                    help="add VXLAN and Geneve over an IPv6 underlay")
    args = ap.parse_args(argv if argv is not None else [])
    if os.geteuid() != 0:
        raise SystemExit("R4 needs root (network namespaces)")
    tag = f"rrb{os.getpid() % 10000}"
    labs: dict[str, Lab] = {}
    try:
        labs["native"] = Lab(f"{tag}a", "native", "vxlan")
        labs["vxlan"] = Lab(f"{tag}b", "tunnel", "vxlan")
        labs["geneve"] = Lab(f"{tag}c", "tunnel", "geneve")
        if args.underlay6:
            labs["vxlan6"] = Lab(f"{tag}d", "tunnel", "vxlan", underlay6=True)
            labs["geneve6"] = Lab(f"{tag}e", "tunnel", "geneve", underlay6=True)
        # (client namespace, server namespace, server address)
        ends: dict[str, tuple[str, str, str]] = {
            "node-node": (labs["native"].topo.nodes["n1"].ns, labs["native"].topo.nodes["n2"].ns,
                          UNDERLAY["n2"][0]),
        }
        for name, lab in labs.items():
            n1, n2 = lab.topo.nodes["n1"], lab.topo.nodes["n2"]
            ends[name] = (n1.pod_ns, n2.pod_ns, POD_IP["n2"])
        bps: dict[str, list[float]] = {k: [] for k in ends}
        rate: dict[str, list[float]] = {k: [] for k in ends}

        def variant(name: str) -> Callable[[], None]:
            cli, srv, ip = ends[name]

            def run() -> None:
                bps[name].append(iperf(cli, srv, ip, seconds=args.seconds)["bps"])
                rate[name].append(rr(cli, ip, args.rr_seconds))

            return run

        abab({k: variant(k) for k in ends}, rounds=args.rounds + 1, warmup=0)
        warm = 1  # the first round warms caches and the JIT: dropped
        bps = {k: v[warm:] for k, v in bps.items()}
        rate = {k: v[warm:] for k, v in rate.items()}
    finally:
        for lab in labs.values():
            lab.close()
    base = "node-node"
    rows = []
    doc: dict[str, object] = {"rounds": args.rounds, "seconds": args.seconds,
                              "rr_seconds": args.rr_seconds, "variants": {}}
    for name in ends:
        tb, tr = stats(bps[name]), stats(rate[name])
        rb, rrat = ratio_stats(bps[name], bps[base]), ratio_stats(rate[name], rate[base])
        rows.append([
            name,
            f"{tb['median'] / 1e9:.2f} ({tb['min'] / 1e9:.2f}-{tb['max'] / 1e9:.2f})",
            f"{rb['median']:.2f}x ({rb['min']:.2f}-{rb['max']:.2f})",
            f"{tr['median'] / 1e3:.1f}k ({tr['min'] / 1e3:.1f}-{tr['max'] / 1e3:.1f})",
            f"{rrat['median']:.2f}x ({rrat['min']:.2f}-{rrat['max']:.2f})",
        ])
        doc["variants"][name] = {  # type: ignore[index]
            "throughput_bps": tb, "throughput_ratio": rb, "rr_per_s": tr, "rr_ratio": rrat,
            "samples_bps": bps[name], "samples_rr": rate[name]}
    print(table(["variant", "TCP Gbit/s med (min-max)", "vs node-node", "RR/s med (min-max)",
                 "vs node-node"], rows))
    print("goal: native >= 0.95x node-node; tunnel cost reported. Pod MTU: 1500 native, "
          "1450 tunnels (underlay 1500 - 50), 1430 over the IPv6 underlay (- 70).")
    print(f"saved {save('r4', doc)}")


if __name__ == "__main__":
    main(sys.argv[1:])
