"""`rackroute service maps` on real pinned maps: entries against capacity as the kernel
holds them (services, backends, Maglev tables, the conntrack after some flows), the
address filters armed with their bits, the table form, and a missing instance."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpf.loader import Datapath

from .test_checksums import PIN_ROOT, VIP4, VIP6, _run, one_node, packet

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def dp() -> Iterator[Datapath]:
    with one_node("mapscli") as d:
        yield d


def cli(dp: Datapath, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "service", "maps", "--instance",
         dp.cfg.instance, "--pin-root", str(dp.cfg.pin_root), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_maps_show_entries_capacity_and_filters(dp: Datapath) -> None:
    for i in range(3):  # three IPv4 flows (two entries each) and one IPv6 flow
        _run(dp.fds["rr_pod_ingress"], packet("10.1.4.4", VIP4, 6, 47000 + i, 80, b"",
                                              flags=0x02))
    _run(dp.fds["rr_pod_ingress"], packet("fd00:1::44", VIP6, 6, 47100, 80, b"", flags=0x02))
    r = cli(dp, "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    maps = {m["name"]: m for m in doc["maps"]}
    assert not any(name.startswith("prog_") for name in maps)
    assert maps["rr_svc"]["entries"] == 4 and maps["rr_svc"]["max_entries"] == 64
    assert maps["rr_backend"]["entries"] == 2  # one per address:port, both protocols
    assert maps["rr_maglev"]["entries"] == 4 and maps["rr_maglev"]["type"] == "hash"
    assert maps["rr_ct"]["entries"] == 6 and maps["rr_ct"]["type"] == "lru_hash"
    assert maps["rr_ct6"]["entries"] == 2
    assert maps["rr_ct"]["max_entries"] == 4096
    assert maps["rr_ct"]["fill"] == round(6 / 4096, 4)
    assert maps["rr_config"]["entries"] == maps["rr_config"]["max_entries"]  # an array
    # preallocated maps hold their memory whatever their entries; the LPM trie (no
    # ranges here) allocates per entry
    assert all(m["memlock"] > 0 for m in maps.values() if m["type"] != "lpm_trie")
    assert maps["rr_src_ranges"]["entries"] == 0
    filters = {f["name"]: f for f in doc["filters"]}
    assert filters["rr_vips"]["armed"] and filters["rr_vips"]["bits"] == 2  # a /24, a /64
    assert filters["rr_replies"]["armed"] and filters["rr_replies"]["bits"] == 2
    text = cli(dp)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["MAP", "TYPE", "ENTRIES", "MAX", "FILL", "MEMORY"]
    assert any(ln.split()[:4] == ["rr_ct", "lru_hash", "6", "4096"] for ln in lines)
    assert "rr_vips: armed, 2 buckets marked" in lines


def test_a_missing_instance_is_named() -> None:
    r = subprocess.run([sys.executable, "-m", "controller.cli", "service", "maps",
                        "--instance", "rrq-none", "--pin-root", str(PIN_ROOT)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "rrq-none" in r.stderr and r.stdout == ""
