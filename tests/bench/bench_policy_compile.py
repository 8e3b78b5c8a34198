"""Network policy compile time for one node (controller/desired/policy.py): 1k and 10k
pods over 100 nodes and 50 namespaces, one NetworkPolicy per 20 pods (its app's pods
allow the next app's on tcp/8080, and a namespace-selected team on tcp/9090), alternating
rounds (warm-up dropped), t(10k)/t(1k) reported as R11 reports planning (the agent
compiles on every pass that changed a pod, a namespace or a policy).

  python -m tests.bench.bench_policy_compile [--rounds 5]

Prints a table and writes results/policy-compile.json naming the kernel, CPU and date.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from controller.desired.policy import compile_policies
from controller.model.meta import LabelSelector, Meta, frozen_map
from controller.model.policy import (
    Namespace,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)
from tests.bench.common import abab, ratio_stats, save, stats, table

NODES, NAMESPACES, PODS_PER_POLICY = 100, 50, 20


def cluster(n: int) -> tuple[list[Pod], dict[str, Namespace], list[NetworkPolicy]]:
    apps = n // PODS_PER_POLICY
    nss = {f"ns{i}": Namespace(Meta("Namespace", f"ns{i}",
                                    labels=frozen_map({"team": f"t{i % 10}"})))
           for i in range(NAMESPACES)}
    base = int(ipaddress.ip_address("10.0.0.0"))
    pods = [Pod(Meta("Pod", f"p{i}", f"ns{i % apps % NAMESPACES}",
                     labels=frozen_map({"app": f"a{i % apps}"})), f"n{i % NODES}",
                (ipaddress.ip_address(base + i + 1),)) for i in range(n)]
    pols = []
    for a in range(apps):
        ns = f"ns{a % NAMESPACES}"
        pols.append(NetworkPolicy(
            Meta("NetworkPolicy", f"a{a}", ns), LabelSelector((("app", f"a{a}"),)),
            ("Ingress",), (
                PolicyRule((PolicyPeer(pod_selector=LabelSelector(
                    (("app", f"a{(a + NAMESPACES) % apps}"),))),), (PolicyPort("TCP", 8080),)),
                PolicyRule((PolicyPeer(namespace_selector=LabelSelector(
                    (("team", f"t{a % 10}"),)), pod_selector=LabelSelector(
                    (("app", f"a{(a + 1) % apps}"),))),), (PolicyPort("TCP", 9090),)),
            )))
    return pods, nss, pols


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv or [])
    small, large = cluster(1_000), cluster(10_000)
    sizes = {name: len(compile_policies(pols, pods, nss, "n1").endpoints)
             for name, (pods, nss, pols) in (("1k", small), ("10k", large))}
    runs = abab({"1k": lambda: compile_policies(small[2], small[0], small[1], "n1"),
                 "10k": lambda: compile_policies(large[2], large[0], large[1], "n1")},
                rounds=args.rounds)
    ratio = ratio_stats(runs["10k"], runs["1k"])
    rows: list[list[Any]] = []
    for name, (pods, _, pols) in (("1k", small), ("10k", large)):
        s = stats(runs[name])
        rows.append([f"{len(pods)} pods, {len(pols)} policies", f"{s['median'] * 1e3:.1f}",
                     f"{s['min'] * 1e3:.1f}", f"{s['max'] * 1e3:.1f}", sizes[name]])
    print(table(["cluster (one node's compile)", "median ms", "min ms", "max ms",
                 "pods of n1 under policy"], rows))
    print(f"t(10k)/t(1k): median {ratio['median']:.2f} (min {ratio['min']:.2f}, "
          f"max {ratio['max']:.2f})")
    path = save("policy-compile", {"bench": "policy-compile", "rounds": args.rounds,
                                   "seconds": {k: stats(v) for k, v in runs.items()},
                                   "ratio_10k_over_1k": ratio, "endpoints": sizes})
    print(f"saved {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
