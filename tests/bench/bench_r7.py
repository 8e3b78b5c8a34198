"""R7: 10k LoadBalancer /32s advertised until the ToR's kernel has them all.

GoBGP (GobgpSpeaker.set_paths: AddPathStream) vs ExaBGP (ExabgpSpeaker.set_paths: batched
`announce attributes ... nlri ...`) vs a second FRR as the speaker (10k blackhole routes
added with one `ip -batch` in its namespace, `redistribute kernel` into its bgpd).

Topology (namespaces `rrg<run id>7<x>`, all deleted at the end):

    g: GobgpSpeaker  10.57.0.11 AS 65011 ─┐
    e: ExabgpSpeaker 10.57.0.12 AS 65012 ─┤ br0 in t: FRR ToR 10.57.0.1 AS 65000
    f: FRR speaker   10.57.0.13 AS 65013 ─┘

All three sessions are up for the whole run; one speaker announces at a time. A round
times, per speaker, from the first announce (the call that starts it) until
`ip -n <tor> route show proto bgp` lists all N prefixes; then the speaker withdraws them
and the ToR's kernel is back to 0 before the next speaker starts (not timed). Speakers
alternate (G E F G E F ...); the first round is a warm-up and is dropped. ExaBGP keeps
one process and session for the whole run, like GoBGP (R7_EXABGP_FRESH=1 gives it a fresh
one before each round, untimed).

Run: `python -m tests.bench r7` (env R7_N, R7_ROUNDS to change the count and rounds;
R7_SPEAKERS, default gobgp,exabgp,frr, to choose speakers). ExaBGP was once left out: the
adapter's reader handled the ToR's echo of our own UPDATEs under the lock `set_paths`
held while it waited for `done`, so an acknowledgement stalled behind an event until the
ack timeout; events now go to their own thread.

Where GoBGP's time goes: gobgpd 3.10 sends one UPDATE per path added through its API (its
propagateUpdate walks the added paths one at a time), so the ToR parses 10k UPDATEs
(counted in its messageStats) where FRR as the speaker packs many NLRI per UPDATE.
AddPathStream batch sizes of 250, 1000 and 10000 made no measurable difference, and the
Python conversion (~0.1-0.2 s for 10k) overlaps gobgpd's own work on the stream.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path as FsPath

from bgp.exabgp.adapter import ExabgpSpeaker
from bgp.gobgp.adapter import GobgpSpeaker
from bgp.speaker import Speaker
from bgp.types import IPV4_UNICAST, GlobalConfig, Path, PeerSpec
from controller.lab.frr import BgpConfig, FrrRouter, Neighbor
from controller.lab.netns import Lab, Netns, run_cmd, run_id, veth, wait_for
from tests.bench.common import ratio_stats, save, stats, table

TOR = "10.57.0.1"
ADDR = {"g": "10.57.0.11", "e": "10.57.0.12", "f": "10.57.0.13"}
TOR_ASN = 65000
BASE = 0x0A640000  # 10.100.0.0: the /32s come from 10.100.0.0/16 upward
WAIT = 120.0  # bound on any single wait (seconds)


def prefixes(n: int) -> list[IPv4Network]:
    return [IPv4Network((BASE + i, 32)) for i in range(n)]


def tor_count(tor: Netns) -> int:
    res = run_cmd(["ip", "-n", tor.name, "-4", "route", "show", "proto", "bgp"], timeout=30)
    return res.stdout.count("\n")


def wait_count(tor: Netns, want: int, what: str, interval: float = 0.01) -> float:
    """Poll the ToR's kernel until it holds `want` BGP routes; returns when (perf_counter)."""
    deadline = time.monotonic() + WAIT
    while True:
        n = tor_count(tor)
        if n == want:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: ToR kernel has {n} BGP routes, want {want}")
        time.sleep(interval)


class Bench:
    def __init__(self, n: int) -> None:
        self.n = n
        self.paths = {Path(prefix=p) for p in prefixes(n)}
        self.lab = Lab(f"rrg{run_id()}7")
        self.tmp = FsPath(tempfile.mkdtemp(prefix="rrv-r7-"))
        self.lab.defer(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        self._gen = itertools.count()
        self.fresh_exabgp = os.environ.get("R7_EXABGP_FRESH", "0") == "1"

    def setup(self) -> None:
        lab = self.lab
        self.tor_ns = tor = lab.netns("t")
        tor.add_bridge("br0")
        tor.add_address("br0", f"{TOR}/24")
        nodes: dict[str, Netns] = {}
        for i, x in enumerate("gef", start=1):
            ns = nodes[x] = lab.netns(x)
            veth(ns, "eth0", tor, f"port{x}", master="br0")
            ns.add_address("eth0", f"10.57.0.{10 + i}/24")
        self.tor = FrrRouter(tor, BgpConfig(asn=TOR_ASN, router_id=TOR,
                                            listen_ranges=("10.57.0.0/24",)))
        lab.defer(self.tor.close)
        self.tor.start()
        # the ToR sends nothing back: one speaker's 10k routes are not reflected to the
        # other two (that would load the ToR and the idle speakers during a round)
        self.tor.vtysh("configure terminal", "route-map RRV-NONE deny 10")
        self.tor.configure("address-family ipv4 unicast", "neighbor NODES route-map RRV-NONE out")

        # GoBGP and ExaBGP listen; the ToR connects first (gobgpd waits 5-9 s otherwise)
        self.nodes = nodes
        self.speakers: dict[str, Speaker] = {}
        for x in "ge":
            self.tor.add_neighbor(Neighbor(address=ADDR[x], peer_group="NODES"))
            self.speakers[x] = self.new_speaker(x)

        # FRR as the speaker: kernel routes in its namespace, redistributed
        self.frr_ns = nodes["f"]
        self.frr = FrrRouter(nodes["f"], BgpConfig(
            asn=65013, router_id="10.57.0.13", hostname="spk",
            neighbors=(Neighbor(address=TOR, remote_as=str(TOR_ASN)),)))
        lab.defer(self.frr.close)
        self.frr.start()
        self.frr.configure("address-family ipv4 unicast", "redistribute kernel")

        for x in "gef":
            self.established(x)

    def new_speaker(self, x: str) -> Speaker:
        sp: Speaker
        state = self.tmp / f"{x}{next(self._gen)}"
        if x == "g":
            sp = GobgpSpeaker(state, netns=self.nodes[x].name)
        else:
            sp = ExabgpSpeaker(state, netns=self.nodes[x].name, ack_timeout=120.0)
        self.lab.defer(sp.stop)
        sp.start(GlobalConfig(asn=65000 + int(ADDR[x].rsplit(".", 1)[1]),
                              router_id=IPv4Address(ADDR[x]), listen_port=179))
        sp.set_peers([PeerSpec(name="tor", address=ip_address(TOR), peer_asn=TOR_ASN,
                               hold_time=9, keepalive=3, connect_retry=1, passive=True,
                               families=(IPV4_UNICAST,))])
        sp.set_paths(())
        return sp

    def established(self, x: str) -> None:
        wait_for(lambda: self.tor.neighbor_state(ADDR[x]) == "Established", 60, 0.1,
                 f"ToR session with {ADDR[x]}")

    # -- one timed announce per speaker --------------------------------------------------
    def _batch(self, verb: str) -> None:
        text = "".join(f"route {verb} blackhole {p} proto static\n" for p in prefixes(self.n))
        run_cmd(["ip", "-n", self.frr_ns.name, "-batch", "-"], input_text=text, timeout=60)

    def run_frr(self) -> float:
        t0 = time.perf_counter()
        self._batch("add")
        t1 = wait_count(self.tor_ns, self.n, "frr announce")
        self._batch("del")
        wait_count(self.tor_ns, 0, "frr withdraw", 0.05)
        return t1 - t0

    def run_speaker(self, x: str) -> Callable[[], float]:
        def go() -> float:
            sp = self.speakers[x]
            if x == "e" and self.fresh_exabgp:
                # optional: a new exabgp and session for each round (untimed setup)
                sp.stop()
                sp = self.speakers[x] = self.new_speaker(x)
            self.established(x)
            t0 = time.perf_counter()
            sp.set_paths(self.paths)
            t1 = wait_count(self.tor_ns, self.n, f"{x} announce")
            sp.set_paths(())
            wait_count(self.tor_ns, 0, f"{x} withdraw", 0.05)
            return t1 - t0

        return go

    def close(self) -> None:
        self.lab.close()


def main() -> None:
    n = int(os.environ.get("R7_N", "10000"))
    rounds = int(os.environ.get("R7_ROUNDS", "5"))
    b = Bench(n)
    chosen = os.environ.get("R7_SPEAKERS", "gobgp,exabgp,frr").split(",")
    samples: dict[str, list[float]] = {k: [] for k in ("gobgp", "exabgp", "frr") if k in chosen}
    started = time.monotonic()
    try:
        b.setup()
        every: dict[str, Callable[[], float]] = {
            "gobgp": b.run_speaker("g"), "exabgp": b.run_speaker("e"), "frr": b.run_frr}
        variants = {k: v for k, v in every.items() if k in chosen}
        for r in range(1 + rounds):
            for name, fn in variants.items():
                t = fn()
                print(f"round {r}{' (warm-up)' if r == 0 else ''} {name}: {t:.3f} s",
                      flush=True)
                if r > 0:
                    samples[name].append(t)
    finally:
        b.close()
    elapsed = time.monotonic() - started
    st = {k: stats(v) for k, v in samples.items()}
    ratios = {f"{k}/frr": ratio_stats(samples[k], samples["frr"])
              for k in ("gobgp", "exabgp") if k in samples}
    rows: list[list[object]] = [[k, f"{s['median']:.3f}", f"{s['min']:.3f}", f"{s['max']:.3f}"]
                                for k, s in st.items()]
    rows += [[k, f"{s['median']:.2f}x", f"{s['min']:.2f}x", f"{s['max']:.2f}x"]
             for k, s in ratios.items()]
    print(f"\nR7: {n} /32s until all are in the ToR's kernel; {rounds} rounds after a "
          f"warm-up, {' '.join(variants)} alternating; run took {elapsed:.0f} s")
    print(table(["speaker (s) / ratio", "median", "min", "max"], rows))
    g = st["gobgp"]["median"]
    gr = ratios["gobgp/frr"]["median"]
    print(f"goal GoBGP <= 2x FRR: {'met' if gr <= 2 else 'NOT met'} ({gr:.2f}x); "
          f"GoBGP <= 3 s: {'met' if g <= 3 else 'NOT met'} ({g:.2f} s)")
    path = save("r7", {"benchmark": "R7", "n": n, "rounds": rounds, "warmup": 1,
                       "unit": "seconds", "samples": samples, "stats": st, "ratios": ratios,
                       "goal": {"gobgp_over_frr_max": 2.0, "gobgp_max_s": 3.0},
                       "elapsed_s": elapsed})
    print(f"wrote {path}")
