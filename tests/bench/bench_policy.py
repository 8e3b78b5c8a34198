"""Network policy's per-packet cost: the policy program a pod's interface carries
(rr_pol_to_pod) via BPF_PROG_TEST_RUN, against an empty TC program on the same machine,
alternating rounds (warm-up dropped), as R3 measures the load balancer.

  python -m tests.bench.bench_policy [--rounds 7] [--pods 1000]

The maps hold a compiled plan for --pods isolated pods (each allowing two peer pods on one
port and a /16 on another), and the node's address. Cases:
- no policy: a packet to a pod no policy selects (one hash lookup);
- established: a packet of a flow already let pass (the policy conntrack's hit), run 2000
  times in the kernel;
- new, allowed: a new flow each run (the longest-prefix lookup, then the conntrack insert);
- refused: a peer no entry allows (the lookup, the drop), run 2000 times in the kernel.
Prints a table and writes results/policy-<date>.json naming the kernel, CPU and date.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from ipaddress import ip_address, ip_network
from pathlib import Path

from bpf.libbpf import prog_test_run
from bpf.loader import SCHED_CLS, Datapath, DatapathConfig, load_text
from bpf.mapstore import PinnedMap
from bpf.policy import PolicyMaps
from controller.desired.policy import compile_policies
from controller.model.meta import LabelSelector, Meta, frozen_map
from controller.model.policy import (
    IPBlock,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)
from tests.bench.bench_r3 import EMPTY_AND_FLOOR, measure, packet, report


def pods(n: int) -> list[Pod]:
    out = []
    for i in range(n):
        labels = frozen_map({"app": f"a{i}", "ring": f"r{i % 50}"})
        out.append(Pod(Meta("Pod", f"p{i}", "bench", labels=labels), "n1",
                       (ip_address(f"10.{40 + i // 65536}.{i // 256 % 256}.{i % 256}"),)))
    return out


def policies(n: int) -> list[NetworkPolicy]:
    """One per pod: two peer pods (its ring) on tcp/8080, and 10.250.0.0/16 on tcp/443."""
    out = []
    for i in range(n):
        ring = LabelSelector((("ring", f"r{(i + 1) % 50}"),))
        out.append(NetworkPolicy(
            Meta("NetworkPolicy", f"p{i}", "bench"), LabelSelector((("app", f"a{i}"),)),
            ("Ingress",), (
                PolicyRule((PolicyPeer(pod_selector=ring),), (PolicyPort("TCP", 8080),)),
                PolicyRule((PolicyPeer(ip_block=IPBlock(ip_network("10.250.0.0/16"))),),
                           (PolicyPort("TCP", 443),)))))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--pods", type=int, default=1000)
    args = ap.parse_args(argv or [])
    root = Path(f"/sys/fs/bpf/rackroute-benchpol-{os.getpid()}")
    dp = Datapath(DatapathConfig("pol", pin_root=root, network_policy=True))
    empty_mod = None
    ports: list[PinnedMap] = []
    try:
        dp.load(("policy",))
        ports = [PinnedMap.open(str(dp.cfg.pin_dir / n))
                 for n in ("rr_pol_eps", "rr_pol", "rr_pol_node")]
        maps = PolicyMaps(*ports)
        everyone = pods(args.pods)
        plan = compile_policies(policies(args.pods), everyone, {}, "n1")
        assert maps.sync(plan.endpoints) == [] and maps.sync_node([ip_address("10.39.0.1")]) == []
        empty_mod, empty = load_text(EMPTY_AND_FLOOR % {"ct_size": 1024},
                                     {"rr_empty": (SCHED_CLS, -1)})
        target = str(everyone[-1].ips[0])
        # a pod of the ring policy p(n-1) allows: p0's ring is r0, p(n-1) allows ring r0
        peer = str(everyone[0].ips[0])
        ours = dp.fds["rr_pol_to_pod"]
        established = packet(peer, target, 40000, 8080)
        cases: dict[str, tuple[list[bytes], int]] = {
            "no policy": ([packet(peer, "10.99.0.1", 40000, 80)], 2000),
            "established": ([established], 2000),
            "new, allowed": ([], 1),
            "refused": ([packet("192.0.2.1", target, 40000, 8080)], 2000),
        }
        # what each case decides (the flow of "established" is recorded by its first pass)
        for pkt, want in ((established, 0), (cases["no policy"][0][0], 0),
                          (packet("10.250.9.9", target, 1000, 443), 0),
                          (cases["refused"][0][0], 2)):
            assert prog_test_run(ours, pkt, 1)[0] == want, want
        rows = {}
        for name, (pkts, repeat) in cases.items():
            def packets(r: int, name: str = name, pkts: list[bytes] = pkts) -> list[bytes]:
                if name == "new, allowed":  # a fresh flow each run, from the /16
                    return [packet(f"10.250.{r}.{i // 250}", target, 1024 + i % 250, 443)
                            for i in range(2000)]
                return pkts

            rows[name] = measure(ours, empty["rr_empty"], packets, repeat, args.rounds)
        report(f"network policy, BPF_PROG_TEST_RUN, {args.pods} isolated pods, "
               f"{args.rounds} rounds ABAB", rows, "policy",
               {"bench": "policy", "pods": args.pods, "rounds": args.rounds})
    finally:
        for pm in ports:
            pm.close()
        if empty_mod is not None:
            empty_mod.cleanup()
        dp.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
