"""`rackroute service list` reads the real pinned maps: load the datapath into a test pin
directory, sync a table, run the CLI as a subprocess and compare what it prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address as A
from ipaddress import ip_network
from pathlib import Path

import pytest

from bpf.loader import Datapath, DatapathConfig
from bpf.sync import Syncer
from bpf.table import Algorithm, Backend, BackendState, Proto, Service, ServiceKey

PIN_ROOT = Path(f"/sys/fs/bpf/rackroute-clitest-{os.getpid()}")
INSTANCE = "clinode"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def syncer() -> Iterator[Syncer]:
    dp = Datapath(DatapathConfig(INSTANCE, pin_root=PIN_ROOT))
    try:
        dp.load(("pod",))
        yield Syncer(dp.maps())
    finally:
        dp.close()
        shutil.rmtree(PIN_ROOT, ignore_errors=True)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "service", "list", "--instance", INSTANCE,
         "--pin-root", str(PIN_ROOT), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_service_list_shows_what_the_maps_hold(syncer: Syncer) -> None:
    table = {
        ServiceKey(A("10.96.0.10"), 80, Proto.TCP): Service(
            (Backend(A("10.1.0.5"), 8080, True), Backend(A("10.1.1.5"), 8080, False),
             Backend(A("10.1.0.6"), 8080, True, BackendState.NOT_SERVING)),
            affinity_timeout=300, name="demo/web"),
        ServiceKey(A("192.0.2.1"), 30053, Proto.UDP): Service(
            (Backend(A("10.1.0.7"), 53, True, BackendState.TERMINATING),), local_only=True,
            external=True, nodeport=True, algorithm=Algorithm.RANDOM, name="demo/dns"),
        ServiceKey(A("198.51.100.7"), 443, Proto.TCP): Service(
            (Backend(A("10.1.0.8"), 8443, True),), external=True, name="demo/lb",
            source_ranges=(ip_network("192.0.2.0/24"), ip_network("203.0.113.9/32"))),
    }
    res = syncer.sync(table)
    assert not res.errors and res.programmed == frozenset(table)

    out = cli("-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc == [
        {"vip": "10.96.0.10", "port": 80, "proto": "tcp", "local_only": False,
         "external": False, "nodeport": False, "affinity_timeout": 300,
         "algorithm": "maglev", "name": "", "source_ranges": None,
         "backends": [  # the not-serving endpoint is not in the maps
             {"ip": "10.1.0.5", "port": 8080, "local": True, "state": "ready"},
             {"ip": "10.1.1.5", "port": 8080, "local": False, "state": "ready"}]},
        {"vip": "192.0.2.1", "port": 30053, "proto": "udp", "local_only": True,
         "external": True, "nodeport": True, "affinity_timeout": 0, "algorithm": "random",
         "name": "", "source_ranges": None,
         "backends": [{"ip": "10.1.0.7", "port": 53, "local": True, "state": "terminating"}]},
        {"vip": "198.51.100.7", "port": 443, "proto": "tcp", "local_only": False,
         "external": True, "nodeport": False, "affinity_timeout": 0, "algorithm": "maglev",
         "name": "", "source_ranges": ["192.0.2.0/24", "203.0.113.9/32"],
         "backends": [{"ip": "10.1.0.8", "port": 8443, "local": True, "state": "ready"}]},
    ]

    text = cli()
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "FLAGS", "BACKENDS"]
    assert lines[1].split() == ["10.96.0.10:80/tcp", "affinity=300s,maglev", "2"]
    assert lines[2].split() == ["->", "10.1.0.5:8080", "local"]
    assert lines[3].split() == ["->", "10.1.1.5:8080", "remote"]
    assert lines[4].split() == ["192.0.2.1:30053/udp", "nodeport,local,random", "1"]
    assert lines[5].split() == ["->", "10.1.0.7:53", "local", "terminating"]
    assert lines[6].split() == ["198.51.100.7:443/tcp",
                                "external,maglev,from=192.0.2.0/24+203.0.113.9/32", "1"]
    assert lines[-1] == "3 service entries"

    # a removal shows up at once: the CLI reads the maps, not a cache
    del table[ServiceKey(A("10.96.0.10"), 80, Proto.TCP)]
    syncer.sync(table)
    after = json.loads(cli("-o", "json").stdout)
    assert [e["vip"] for e in after] == ["192.0.2.1", "198.51.100.7"]


def test_service_list_names_a_missing_instance() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli", "service", "list", "--instance", "rrq-none",
         "--pin-root", str(PIN_ROOT)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert "rrq-none" in out.stderr and out.stdout == ""
