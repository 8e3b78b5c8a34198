"""R3: per-packet cost of the pod-veth LB program via BPF_PROG_TEST_RUN, against an empty
TC program on the same machine, alternating A/B rounds (warm-up dropped).

  python -m tests.bench.bench_r3 [--rounds 7] [--services 10000]   (or: python -m tests.bench r3)

Cases: conntrack hit (one established flow to a VIP, its packet run 2000 times, one run
per call: the test run reuses one skb across in-kernel repeats, so a repeated packet
would see its own rewrite and measure a miss), conntrack hit over 2000 established
flows (cache-cold entries), service hit (a new flow each run, so a Maglev lookup and the
conntrack inserts), miss (not a service, repeated in the kernel: the service /24 filter
lets it go), miss in a service /24 (an unused address among the services: the conntrack
and service lookups), reverse miss (the pod egress program, a packet into a pod from a
source that no reply entry was made for: the reverse path's source filter lets it go).
The programs are built with --host-routing kernel: R3 is the load balancer's cost, and
forwarding in BPF replaces the kernel's forwarding path (R1 measures it end to end).
Prints a table and writes
results/r3-<date>.json naming the kernel, CPU and date.

Reference rows (no goal): "insert floor", a program that does nothing but insert one
new key into an LRU hash of the conntrack's shape and size (16-byte key, 32-byte value),
run like the service hit (a new tuple each run). Any stateful new flow pays at least
this; a service hit pays it twice (the forward and the reply entry, as Cilium's does),
which "pair floor" measures: the tuple and its reverse inserted, nothing else. And the
other way round, the pod program itself with its conntrack taken out, run like the
service hit: "new, no ct write" (its inserts replaced by success: the lookups stay) and
"new, no ct" (its conntrack lookup answering "no entry" as well), so what a new flow's
service lookup, Maglev choice and rewrite cost with no conntrack at all is measured,
not guessed. These two variants exist only here (the source text is patched before it
is compiled; the patch is checked to have applied). And the memory alone: "cold read"
reads one word of a 64-byte line picked by the new flow's source in an array of as many
lines as the conntrack has entries (an inline array lookup: no helper call), "cold
write" writes one there without reading; any table that holds the flows has a new flow
pay at least its lookup, that read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from ipaddress import IPv4Address as A
from pathlib import Path
from typing import Any

from bpf.libbpf import prog_test_run
from bpf.loader import SCHED_CLS, Datapath, DatapathConfig, load_text, source_text
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey

EMPTY_AND_FLOOR = r"""
struct floor_key { __u32 saddr, daddr; __u16 sport, dport; __u32 proto; };
struct floor_val { __u64 w[4]; };
BPF_TABLE("lru_hash", struct floor_key, struct floor_val, rr_floor, %(ct_size)d);

int rr_empty(struct __sk_buff *skb) { return 0; /* TC_ACT_OK */ }

/* one 64-byte line per conntrack entry, picked by the packet's source (address, port):
 * an inline array lookup, no helper call, so only the memory access is measured */
struct cold_line { __u64 w[8]; };
BPF_ARRAY(rr_cold, struct cold_line, %(cold_lines)d);

static __always_inline struct cold_line *cold_line_of(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u32 *ip = data + 14, h;
    __u16 *ports = data + 34;

    if ((void *)(ports + 2) > end)
        return 0;
    h = ip[3] * 0x9e3779b1u ^ ports[0] * 0x85ebca77u;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    h &= %(cold_lines)d - 1;
    return rr_cold.lookup(&h);
}

/* read one word of the flow's line: what any lookup in a table of this size pays */
int rr_cold_read(struct __sk_buff *skb)
{
    struct cold_line *l = cold_line_of(skb);

    return l ? (int)(l->w[0] & 1) : 0;
}

/* write one word of it, reading nothing */
int rr_cold_write(struct __sk_buff *skb)
{
    struct cold_line *l = cold_line_of(skb);

    if (l)
        l->w[1] = skb->len;
    return 0;
}

/* one new conntrack-shaped entry per packet: the tuple read straight from the frame */
int rr_insert_floor(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct floor_key k = {};
    struct floor_val v = {};
    __u32 *ip = data + 14;
    __u16 *ports = data + 34;

    if ((void *)(ports + 2) > end)
        return 0;
    k.saddr = ip[3];
    k.daddr = ip[4];
    k.sport = ports[0];
    k.dport = ports[1];
    k.proto = 6;
    rr_floor.update(&k, &v);
    return 0;
}

/* the pair a new flow's conntrack makes: the tuple, then the reversed one */
int rr_insert_pair_floor(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct floor_key k = {}, r = {};
    struct floor_val v = {};
    __u32 *ip = data + 14;
    __u16 *ports = data + 34;

    if ((void *)(ports + 2) > end)
        return 0;
    k.saddr = r.daddr = ip[3];
    k.daddr = r.saddr = ip[4];
    k.sport = r.dport = ports[0];
    k.dport = r.sport = ports[1];
    k.proto = r.proto = 6;
    rr_floor.update(&k, &v);
    rr_floor.update(&r, &v);
    return 0;
}
"""


def _csum(b: bytes) -> int:
    s: int = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def packet(src: str, dst: str, sport: int, dport: int) -> bytes:
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                     A(src).packed, A(dst).packed)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return eth + ip + tcp + bytes(6)


CT_INSERT = "ret = excl ? rr_ct.insert(&k4, &v) : rr_ct.update(&k4, &v);"
CT_LOOKUP = "v = rr_ct.lookup(&k);"


def without_conntrack(text: str, lookups: bool) -> str:
    """The pod program's text with its IPv4 conntrack inserts replaced by success, and
    with lookups, its conntrack lookup by "no entry" too (reference rows only)."""
    for old, new, on in ((CT_INSERT, "ret = 0;", True), (CT_LOOKUP, "v = NULL;", lookups)):
        if on:
            if text.count(old) != 1:
                raise RuntimeError(f"R3: the conntrack patch no longer applies ({old!r})")
            text = text.replace(old, new)
    return text


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run_case(fd: int, pkts: list[bytes], repeat: int) -> float:
    """Mean ns per packet over pkts (each run repeat times in the kernel)."""
    total = 0
    for p in pkts:
        _, ns, _ = prog_test_run(fd, p, repeat)
        total += ns
    return total / len(pkts)


def measure(prog: int, empty: int, packets: Callable[[int], list[bytes]], repeat: int,
            rounds: int) -> dict[str, float]:
    """prog against the empty program, alternating, on packets(round) each round; round 0
    (warm-up) dropped. Medians of the ns per packet, and the per-round ratios."""
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds + 1):
        pkts = packets(r)
        x = run_case(prog, pkts, repeat)
        y = run_case(empty, pkts, repeat)
        if r:  # round 0 is warm-up
            a.append(x)
            b.append(y)
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {"ours_ns": statistics.median(a), "empty_ns": statistics.median(b),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios)}


def report(title: str, rows: dict[str, dict[str, float]], stem: str,
           doc: dict[str, object]) -> Path:
    """Print the table; write results/<stem>-<date>.json (doc, the machine, the rows)."""
    print(title)
    print(f"{'case':<15}{'ours ns':>10}{'empty ns':>10}{'ratio':>8}{'min':>7}{'max':>7}")
    for name, row in rows.items():
        print(f"{name:<15}{row['ours_ns']:>10.0f}{row['empty_ns']:>10.0f}"
              f"{row['ratio_median']:>8.2f}{row['ratio_min']:>7.2f}{row['ratio_max']:>7.2f}")
    out = Path("results")
    out.mkdir(exist_ok=True)
    now = datetime.now(UTC)
    full = {**doc, "kernel": platform.release(), "cpu": cpu_model(), "date": now.isoformat(),
            "cases": rows}
    path = out / f"{stem}-{now.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(full, indent=2))
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--services", type=int, default=10000)
    args = ap.parse_args(argv or [])
    root = Path(f"/sys/fs/bpf/rackroute-bench-{os.getpid()}")
    # the LB alone: built without host routing, whose forwarding (a FIB lookup and a
    # redirect in place of the kernel's forwarding path) R1 measures end to end
    dp = Datapath(DatapathConfig("r3", pin_root=root, host_routing=False))
    empty_mod = None
    variant_mods: list[Any] = []
    try:
        dp.load(("pod",))
        dp.arm_replies()
        sizes = {"ct_size": dp.cfg.ct_size,
                 "cold_lines": 1 << (dp.cfg.ct_size.bit_length() - 1)}  # a power of two
        empty_mod, empty = load_text(EMPTY_AND_FLOOR % sizes,
                                     {"rr_empty": (SCHED_CLS, -1),
                                      "rr_insert_floor": (SCHED_CLS, -1),
                                      "rr_insert_pair_floor": (SCHED_CLS, -1),
                                      "rr_cold_read": (SCHED_CLS, -1),
                                      "rr_cold_write": (SCHED_CLS, -1)})
        # the same program without conntrack writes / without conntrack (its pinned maps:
        # the services synced below)
        pod_text = source_text("pod.c", dp.cfg)
        for name, lookups in (("no_ct_write", False), ("no_ct", True)):
            mod, fds = load_text(without_conntrack(pod_text, lookups),
                                 {"rr_pod_ingress": (SCHED_CLS, -1)})
            variant_mods.append(mod)
            empty[name] = fds["rr_pod_ingress"]
        table = {ServiceKey(A(f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"), 80,
                            Proto.TCP):
                 Service((Backend(A("10.0.0.1"), 8080), Backend(A("10.0.0.2"), 8080)))
                 for i in range(args.services)}
        Syncer(dp.maps()).sync(table)
        vip = str(max(table, key=ServiceKey.sort_key).vip)
        ours = dp.fds["rr_pod_ingress"]
        cases = {
            # flows are established in round 0 (warm-up, dropped)
            "conntrack hit": ([packet("10.1.0.1", vip, 40000, 80)] * 2000, 1),
            "ct hit 2k flows": ([packet(f"10.1.{1 + i // 250}.1", vip, 1024 + i % 250, 80)
                                 for i in range(2000)], 1),
            "service hit": ([packet("10.1.0.2", vip, 1024 + i, 80) for i in range(2000)], 1),
            "miss": ([packet("10.1.0.3", "10.200.0.1", 40000, 80)], 2000),
            # an unused address next to the services (its /24 holds some): full lookups
            "miss, svc /24": ([packet("10.1.0.3", "10.96.39.200", 40000, 80)], 2000),
            # into a pod from a source no reply entry was made for (pod to pod): the
            # reverse path's source filter lets it go
            "reverse miss": ([packet("10.1.0.4", "10.1.0.3", 40000, 8080)], 2000),
        }
        rows = {}
        floors = {"insert floor": ("rr_insert_floor", 3), "pair floor": ("rr_insert_pair_floor", 4),
                  "new, no ct write": ("no_ct_write", 5), "new, no ct": ("no_ct", 6),
                  "cold read": ("rr_cold_read", 7), "cold write": ("rr_cold_write", 8)}
        for name in floors:
            cases[name] = ([], 1)
        for name, (pkts, repeat) in cases.items():
            def packets(r: int, name: str = name, pkts: list[bytes] = pkts) -> list[bytes]:
                if name == "service hit" or name in floors:  # fresh flows every round
                    net = floors[name][1] if name in floors else 2
                    return [packet(f"10.{net}.{r}.{i // 250}", vip, 1024 + i % 250, 80)
                            for i in range(2000)]
                return pkts

            prog = (empty[floors[name][0]] if name in floors else
                    dp.fds["rr_pod_egress"] if name == "reverse miss" else ours)
            rows[name] = measure(prog, empty["rr_empty"], packets, repeat, args.rounds)
        report(f"R3 BPF_PROG_TEST_RUN, {args.services} services, {args.rounds} rounds ABAB",
               rows, "r3", {"bench": "R3", "services": args.services, "rounds": args.rounds,
                            "goal": "<= 3x empty program (insert and pair floor, new without "
                                    "conntrack writes or conntrack: references, no goal)"})
    finally:
        for mod in variant_mods:
            mod.cleanup()
        if empty_mod is not None:
            empty_mod.cleanup()
        dp.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
