"""`rackroute service conntrack` reads the real conntrack maps: flows are made through the
pod program with BPF_PROG_TEST_RUN (IPv4 and IPv6, TCP and UDP, one closed with a FIN),
then the CLI runs as a subprocess and must name each flow's client, service and backend,
pair its two entries, show an entry whose twin was removed as an orphan, and call a
closed flow expired exactly when the datapath stops translating it."""

from __future__ import annotations

import ctypes as ct
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from bpf import libbpf
from bpf import maps as m
from bpf.loader import Datapath
from bpf.mapstore import PinnedMap

from .test_checksums import BE4, BE6, PIN_ROOT, VIP4, VIP6, _run, one_node, packet, parse

INSTANCE = "ctcli"
ROOT = Path(__file__).resolve().parents[3]
SYN, ACK, FIN = 0x02, 0x10, 0x01
TCP, UDP = 6, 17
CLIENT = {4: "10.1.8.8", 6: "fd00:1::88"}
ADDRS = {4: (VIP4, BE4), 6: (VIP6, BE6)}
CLOSE = 2  # seconds a closed TCP flow lives on (the CLI is told the same)


@pytest.fixture(scope="module")
def dp() -> Iterator[Datapath]:
    with one_node(INSTANCE, ct_close_lifetime=CLOSE) as d:
        yield d


def send(dp: Datapath, family: int, proto: int, sport: int, flags: int = ACK) -> tuple[str, int]:
    """Client -> service through the pod's ingress; where the packet went."""
    _, d, _, dport, _ = parse(_run(dp.fds["rr_pod_ingress"],
                                   packet(CLIENT[family], ADDRS[family][0], proto, sport, 80,
                                          b"q", flags=flags)))
    return d, dport


def reply(dp: Datapath, family: int, proto: int, sport: int, flags: int = ACK) -> tuple[str, int]:
    """Backend -> client through the pod's egress; the source the client sees."""
    s, _, sp, _, _ = parse(_run(dp.fds["rr_pod_egress"],
                                packet(ADDRS[family][1], CLIENT[family], proto, 8080, sport,
                                       b"a", flags=flags)))
    return s, sp


def cli(*args: str, instance: str = INSTANCE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "service", "conntrack", "--pin-root",
         str(PIN_ROOT), "--instance", instance, "--ct-close-lifetime", str(CLOSE), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60)


def flows(*args: str) -> dict[tuple[int, str, int], dict[str, Any]]:
    """The CLI's JSON flows of our clients, by (family, proto, client port)."""
    out = cli("-o", "json", *args)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert isinstance(doc, list)
    return {(f["family"], f["proto"], f["client"]["port"]): f for f in doc
            if f["client"]["ip"] in CLIENT.values()}


def test_the_cli_shows_each_flow_with_its_backend(dp: Datapath) -> None:
    for family in (4, 6):
        vip, be = ADDRS[family]
        assert send(dp, family, TCP, 43001, SYN) == (be, 8080)
        assert reply(dp, family, TCP, 43001, SYN | ACK) == (vip, 80)
        assert send(dp, family, TCP, 43002, SYN) == (be, 8080)
        assert send(dp, family, TCP, 43002, FIN | ACK) == (be, 8080)
        assert send(dp, family, UDP, 43003) == (be, 8080)

    got = flows()
    assert set(got) == {(f, p, port) for f in (4, 6)
                        for p, port in (("tcp", 43001), ("tcp", 43002), ("udp", 43003))}
    for (family, _, port), f in got.items():
        vip, be = ADDRS[family]
        assert f["client"] == {"ip": CLIENT[family], "port": port}
        assert f["service"] == {"ip": str(ip_address(vip)), "port": 80}
        assert f["backend"] == {"ip": str(ip_address(be)), "port": 8080}
        assert f["snat"] is None and f["orphan"] is None and not f["expired"]
        assert f["forward"] is not None and f["reply"] is not None
        assert f["state"] == ("closing" if port == 43002 else "open"), (family, port)
        assert 0 <= f["idle"] <= f["age"] < 60  # the current jiffies were read right

    # the service filter, in the form `service list` prints
    only6 = flows("--service", f"[{VIP6}]:80/udp")
    assert list(only6) == [(6, "udp", 43003)]
    assert flows("--service", f"{VIP4}:81") == {}

    # an entry whose twin is gone (evicted, or removed here) is still shown
    key = m.Ct4Key(int.from_bytes(ip_address(BE4).packed, sys.byteorder),
                   int.from_bytes(ip_address(CLIENT[4]).packed, sys.byteorder),
                   m.port_of(8080), m.port_of(43003), UDP, m.DIR_REPLY, 0)
    ctmap = PinnedMap.open(str(dp.cfg.pin_dir / "rr_ct"))
    try:
        assert libbpf.map_delete(ctmap.fd, bytes(key))
    finally:
        ctmap.close()
    lone = flows()[(4, "udp", 43003)]
    assert lone["orphan"] == "forward" and lone["reply"] is None
    assert lone["backend"] == {"ip": BE4, "port": 8080}
    assert reply(dp, 4, UDP, 43003) == (BE4, 8080)  # indeed: no reply entry, no reverse NAT

    table = cli("--service", f"{VIP4}:80")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["PROTO", "CLIENT", "SERVICE", "BACKEND", "SNAT", "STATE",
                                "AGE", "IDLE", "EXPIRED", "ENTRIES"]
    rows = {ln.split()[1]: ln.split() for ln in lines[1:-1]}
    assert rows[f"{CLIENT[4]}:43001"][:6] == ["tcp", f"{CLIENT[4]}:43001", f"{VIP4}:80",
                                              f"{BE4}:8080", "-", "open"]
    assert rows[f"{CLIENT[4]}:43002"][5] == "closing"
    assert rows[f"{CLIENT[4]}:43003"][-1] == "fwd-only"
    assert lines[-1].endswith("expired)")


def test_a_closed_flow_is_expired_when_the_datapath_lets_it_go(dp: Datapath) -> None:
    for family in (4, 6):
        vip, be = ADDRS[family]
        assert send(dp, family, TCP, 43010, SYN) == (be, 8080)
        assert send(dp, family, TCP, 43011, SYN) == (be, 8080)
        assert send(dp, family, TCP, 43011, FIN | ACK) == (be, 8080)
    before = flows()
    for family in (4, 6):
        assert not before[(family, "tcp", 43011)]["expired"]
        assert before[(family, "tcp", 43011)]["state"] == "closing"
    time.sleep(CLOSE + 0.6)  # past the close lifetime, far within the TCP one
    after = flows()
    for family in (4, 6):
        closed, open_ = after[(family, "tcp", 43011)], after[(family, "tcp", 43010)]
        assert closed["expired"] and closed["forward"]["expired"] and closed["reply"]["expired"]
        assert closed["age"] > CLOSE and closed["idle"] > CLOSE
        assert not open_["expired"] and open_["age"] > CLOSE
        # the datapath agrees: the closed flow's reply is no longer translated
        vip, be = ADDRS[family]
        assert reply(dp, family, TCP, 43011) == (be, 8080)
        assert reply(dp, family, TCP, 43010) == (vip, 80)


def test_a_missing_instance_or_map_is_one_line_naming_the_path(dp: Datapath) -> None:
    out = cli(instance="rrq-none")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert str(PIN_ROOT / "rrq-none") in out.stderr

    empty = PIN_ROOT / "rrq-empty"
    empty.mkdir()
    try:
        out = cli(instance="rrq-empty")
    finally:
        empty.rmdir()
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert str(empty / "rr_ct") in out.stderr


def test_the_map_layout_is_the_one_decoded(dp: Datapath) -> None:
    """The pinned maps' key and value sizes are those of the structs ctdump decodes."""
    for name, key, value in (("rr_ct", m.Ct4Key, m.Ct4Value), ("rr_ct6", m.CtKey, m.Ct6Value)):
        pm = PinnedMap.open(str(dp.cfg.pin_dir / name))
        try:
            assert (pm.key_size, pm.value_size) == (ct.sizeof(key), ct.sizeof(value))
        finally:
            pm.close()


def test_delete_removes_a_services_flows_both_ways_and_keeps_the_others() -> None:
    with one_node("ctdel", ct_close_lifetime=CLOSE) as d:  # its own, empty conntrack
        for family in (4, 6):
            assert send(d, family, TCP, 44100, SYN) == (ADDRS[family][1], 8080)
            assert send(d, family, UDP, 44100) == (ADDRS[family][1], 8080)
        vip4 = ADDRS[4][0]
        out = cli("--delete", "--service", f"{vip4}:80/tcp", instance="ctdel")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "deleted 2 conntrack entries of 1 flow"
        left = {(f["family"], f["proto"], f["client"]["port"]) for f in json.loads(
            cli("-o", "json", instance="ctdel").stdout)}
        assert left == {(4, "udp", 44100), (6, "tcp", 44100), (6, "udp", 44100)}
        assert reply(d, 4, TCP, 44100) == (ADDRS[4][1], 8080)  # no reply entry left
        assert reply(d, 6, TCP, 44100) == (ADDRS[6][0], 80)  # another service's: kept
        out = cli("--delete", instance="ctdel")  # everything
        assert out.stdout.strip() == "deleted 6 conntrack entries of 3 flows"
        assert json.loads(cli("-o", "json", instance="ctdel").stdout) == []
