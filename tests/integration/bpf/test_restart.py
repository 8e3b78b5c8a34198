"""kill -9 of the loader during a long connection: data keeps flowing, the restarted
loader adopts the pinned maps (nothing duplicated or lost) and replaces the programs."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bpf.loader import open_maps
from bpf.sync import read_table
from bpf.table import table_to_json

from .conftest import CIP, NODE1, PIN_ROOT, Bench
from .netlab import nsx, read_line, tcp_ask, tcp_connect

REPO = Path(__file__).resolve().parents[3]


def _counts(bench: Bench) -> tuple[int, int, int]:
    maps = open_maps(bench.dp1.cfg)
    return (len(list(maps.svc.items())), len(list(maps.backend.items())),
            len(list(maps.maglev.items())))


def _filter_ids(ns: str, dev: str) -> list[int]:
    out = nsx(ns, "tc", "filter", "show", "dev", dev, "ingress")
    return [int(x) for x in re.findall(r" id (\d+)", out)]


def _start(bench: Bench, table: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    args = [sys.executable, "-m", "bpf.run", "--instance", "node1", "--pin-root",
            str(PIN_ROOT), "--table", str(table), "--uplink", f"{bench.node1}:uplink:{NODE1}"]
    for pod in bench.lab.pods.values():
        if pod.node == "n1":
            args += ["--pod", f"{bench.node1}:{pod.host_if}"]
    p = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    bench.lab.procs.append(p)
    assert p.stdout is not None
    report = json.loads(p.stdout.readline())
    assert p.stdout.readline().strip() == "ready"
    return p, report


class _Pinger(threading.Thread):
    """Exchanges a line every 20 ms over one connection; records any failure."""

    def __init__(self, s: socket.socket, name: str) -> None:
        super().__init__(daemon=True)
        self.s, self.name = s, name
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.s.sendall(f"n{self.ok}\n".encode())
                got = read_line(self.s)
                if got != f"{self.name} n{self.ok}":
                    self.errors.append(got)
                    return
                self.ok += 1
            except OSError as e:
                self.errors.append(repr(e))
                return
            time.sleep(0.02)


def test_kill9_and_restart_keeps_connections_and_adopts_maps(bench: Bench,
                                                            tmp_path: Path) -> None:
    table = tmp_path / "services.json"
    table.write_text(json.dumps(table_to_json(bench.table1)))
    before_table = read_table(open_maps(bench.dp1.cfg))
    before_counts = _counts(bench)
    ids_before = _filter_ids(bench.node1, bench.client.host_if)
    s = tcp_connect(bench.client.ns, CIP, 80)
    s.settimeout(5)
    pinger = _Pinger(s, read_line(s).split()[0])
    pinger.start()
    try:
        p, report = _start(bench, table)
        assert report["adopted"] == len(bench.table1)
        assert report["writes"] == 0 and report["deletes"] == 0 and not report["errors"]
        ids_mid = _filter_ids(bench.node1, bench.client.host_if)
        assert len(ids_mid) == 1 and ids_mid != ids_before  # replaced in place
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=5)
        ok_at_kill = pinger.ok
        time.sleep(0.5)
        assert pinger.ok > ok_at_kill and not pinger.errors  # still moving data
        assert tcp_ask(bench.client.ns, CIP, 80).split()[0] in {"b11", "b12", "b21"}

        p2, report2 = _start(bench, table)
        assert report2["adopted"] == len(bench.table1)
        assert report2["writes"] == 0 and report2["deletes"] == 0
        assert read_table(open_maps(bench.dp1.cfg)) == before_table
        assert _counts(bench) == before_counts
        names = {tcp_ask(bench.client.ns, CIP, 80).split()[0] for _ in range(30)}
        assert names == {"b11", "b12", "b21"}
        p2.send_signal(signal.SIGKILL)
        p2.wait(timeout=5)
        time.sleep(0.2)
        assert not pinger.errors and pinger.ok > 10
    finally:
        pinger.stop.set()
        pinger.join(timeout=5)
        s.close()
    bench.sync1.adopt()
