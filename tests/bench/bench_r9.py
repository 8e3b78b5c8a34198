"""R9: a node fails; how long until the ToR's kernel has lost its routes? BFD (our
responder, bgp/bfd_daemon.py) against the BGP hold timer, side by side in one run.

Topology (namespaces `rrg<run id>9<x>`, all deleted at the end):

    b: GobgpSpeaker 10.59.0.11 AS 65011 + our BFD responder ─┐ br0 in t: FRR ToR
    h: GobgpSpeaker 10.59.0.12 AS 65012 (no responder)       ─┘ 10.59.0.1 AS 65000, bfdd

Both sessions use the lab's timers (hold 9 s, keepalive 3 s; BFD 300 ms x 3) without
graceful restart: with it, FRR keeps a peer's routes through the restart time (120 s)
when its hold timer expires (the Hold Timer Expired NOTIFICATION does not end graceful
restart, RFC 8538), so without BFD a dead node's routes would stay two minutes. The ToR asks
both peers for BFD; `h` runs no responder, so its BFD session never comes up and FRR
leaves its BGP session to the hold timer (FRR 8.4 holds nothing down on a BFD session
that was never up). A round fails one node: its `eth0` goes down (the ToR's bridge stays
up through the other node's port, as a switch port stays up behind a dead server's
link), and the ToR's kernel table is polled every 5 ms until the node's prefix is gone.
Then the link comes back and the round waits (untimed) for the session, the route and,
for `b`, BFD to be up again. Nodes alternate B H B H ...; the first round of each is a
warm-up, dropped.

Run: `python -m tests.bench r9` (R9_ROUNDS, default 5 for BFD and 3 for the hold timer's
longer rounds; R9_BFD_MS to change the BFD interval). Prints a table, writes
results/r9.json. Goal: <= 1 s with BFD.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from ipaddress import ip_address
from pathlib import Path as FsPath
from typing import Any

from bgp.bfd import Settings
from bgp.bfd_port import DaemonBfd
from bgp.gobgp.adapter import GobgpSpeaker
from bgp.types import IPV4_UNICAST, GlobalConfig, PeerSpec, path_from_texts
from controller.lab.frr import BgpConfig, FrrRouter, Neighbor
from controller.lab.netns import Lab, Netns, entered, run_cmd, run_id, veth, wait_for
from tests.bench.common import save, table

TOR = "10.59.0.1"
NODES = {"b": ("10.59.0.11", 65011, "10.244.11.0/24"), "h": ("10.59.0.12", 65012,
                                                               "10.244.12.0/24")}
WAIT = 60.0


def tor_has(tor: Netns, prefix: str) -> bool:
    out = run_cmd(["ip", "-n", tor.name, "-4", "route", "show", "proto", "bgp"], timeout=10)
    return any(line.startswith(prefix) for line in out.stdout.splitlines())


class Bench:
    def __init__(self, bfd_ms: int) -> None:
        self.lab = Lab(f"rrg{run_id()}9")
        self.tmp = FsPath(tempfile.mkdtemp(prefix="rrv-r9-"))
        self.lab.defer(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        self.settings = Settings(bfd_ms, bfd_ms, 3)

    def setup(self) -> None:
        self.tor_ns = tor = self.lab.netns("t")
        tor.add_bridge("br0")
        tor.add_address("br0", f"{TOR}/24")
        self.tor = FrrRouter(tor, BgpConfig(asn=65000, router_id=TOR, bfd=True,
                                            listen_ranges=("10.59.0.0/24",)), bfd=True)
        self.lab.defer(self.tor.close)
        self.tor.start()
        self.nodes: dict[str, Netns] = {}
        for x, (addr, asn, prefix) in NODES.items():
            ns = self.nodes[x] = self.lab.netns(x)
            veth(ns, "eth0", tor, f"port{x}", master="br0")
            ns.add_address("eth0", f"{addr}/24")
            self.tor.add_neighbor(Neighbor(address=addr, peer_group="NODES"))
            sp = GobgpSpeaker(str(self.tmp / f"gobgp-{x}"), netns=ns.name)
            self.lab.defer(sp.stop)
            sp.start(GlobalConfig(asn=asn, router_id=ip_address(addr), listen_port=179))
            sp.set_peers([PeerSpec(name="tor", address=ip_address(TOR), peer_asn=65000,
                                   hold_time=9, keepalive=3, connect_retry=1, passive=True,
                                   families=(IPV4_UNICAST,), graceful_restart=False)])
            sp.set_paths({path_from_texts(prefix)})
        self.bfd = DaemonBfd(self.tmp / "bfd-b")
        self.lab.defer(self.bfd.stop)
        with entered(self.nodes["b"].name):
            self.bfd.set_sessions({ip_address(TOR): self.settings})

    def tor_bfd_up(self, addr: str) -> bool:
        peers = self.tor.vtysh_json("show bfd peers json") or []
        return any(p.get("peer") == addr and p.get("status") == "up" for p in peers)

    def ready(self, x: str) -> None:
        addr, _, prefix = NODES[x]
        wait_for(lambda: self.tor.neighbor_state(addr) == "Established", WAIT, 0.1,
                 f"session with {x}")
        wait_for(lambda: tor_has(self.tor_ns, prefix), WAIT, 0.05, f"{x}'s route at the ToR")
        if x == "b":
            wait_for(lambda: self.tor_bfd_up(addr), WAIT, 0.05, "BFD up at the ToR")

    def fail(self, x: str) -> float:
        """Fail node x; seconds until its prefix left the ToR's kernel. Then restore it."""
        _, _, prefix = NODES[x]
        self.ready(x)
        ns = self.nodes[x]
        t0 = time.perf_counter()
        ns.ip("link", "set", "eth0", "down")
        deadline = time.monotonic() + WAIT
        while tor_has(self.tor_ns, prefix):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{x}'s route still at the ToR after {WAIT:g} s")
            time.sleep(0.005)
        took = time.perf_counter() - t0
        ns.ip("link", "set", "eth0", "up")
        return took

    def run(self, rounds_bfd: int, rounds_hold: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"b": [], "h": []}
        want = {"b": rounds_bfd + 1, "h": rounds_hold + 1}  # + a warm-up each
        done = {"b": 0, "h": 0}
        while any(done[x] < want[x] for x in out):
            for x in out:
                if done[x] < want[x]:
                    t = self.fail(x)
                    if done[x]:
                        out[x].append(t)
                    done[x] += 1
                    print(f"  {x}: {t:.3f} s", flush=True)
        return out


def row(name: str, xs: list[float]) -> list[object]:
    return [name, len(xs), f"{statistics.median(xs):.3f}", f"{min(xs):.3f}", f"{max(xs):.3f}"]


def main() -> None:
    rounds = int(os.environ.get("R9_ROUNDS", "5"))
    bfd_ms = int(os.environ.get("R9_BFD_MS", "300"))
    b = Bench(bfd_ms)
    try:
        b.setup()
        got = b.run(rounds, max(2, rounds * 3 // 5))
    finally:
        b.lab.close()
    bfd, hold = got["b"], got["h"]
    print(table(["case", "rounds", "median s", "min s", "max s"],
                [row(f"BFD {bfd_ms} ms x 3 (ours)", bfd), row("hold timer 9 s", hold)]))
    ratio = statistics.median(hold) / statistics.median(bfd)
    goal = statistics.median(bfd) <= 1.0
    print(f"BFD detects a failed node {ratio:.1f}x faster than the hold timer; "
          f"goal <= 1 s with BFD: {'met' if goal else 'missed'}")
    doc: dict[str, Any] = {"bench": "R9", "bfd_ms": bfd_ms, "multiplier": 3,
                           "bfd_s": bfd, "hold_s": hold,
                           "bfd_median_s": statistics.median(bfd),
                           "hold_median_s": statistics.median(hold),
                           "hold_over_bfd": ratio, "goal_s": 1.0, "goal_met": goal}
    print(f"wrote {save('r9', doc)}")


if __name__ == "__main__":
    main()
