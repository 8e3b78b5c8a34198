"""Socket-level load balancing on a cgroup created for the test (never the root one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import CIP, TAG, Bench

CGROUP2 = Path("/sys/fs/cgroup/unified")

CLIENT = """
import json, socket
out = {}
s = socket.create_connection(("%(vip)s", 80), timeout=2)
out["greeting"] = s.makefile().readline().strip()
out["peer"] = list(s.getpeername())
s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.sendto(b"hi", ("%(vip)s", 80))
data, addr = u.recvfrom(2048)
out["udp"] = data.decode()
out["udp_from"] = list(addr)
print(json.dumps(out))
"""


@pytest.fixture
def cgroup(bench: Bench) -> Iterator[Path]:
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip(f"needs a cgroup v2 mount at {CGROUP2}")
    cg = CGROUP2 / f"rrx{TAG}"
    cg.mkdir()
    try:
        bench.dp1.load(("sock",))
        bench.dp1.attach_cgroup(cg)
        yield cg
    finally:
        bench.dp1.detach_cgroup(cg)
        cg.rmdir()


def _run_in(cg: Path | None, ns: str) -> subprocess.CompletedProcess[str]:
    code = CLIENT % {"vip": CIP}
    enter = f"echo $$ > {cg}/cgroup.procs && " if cg else ""
    return subprocess.run(["sh", "-c", f'{enter}exec ip netns exec {ns} "$0" -c "$1"',
                           sys.executable, code], capture_output=True, text=True, timeout=20)


def test_connect_sendmsg_recvmsg_getpeername_translate(bench: Bench, cgroup: Path) -> None:
    # from the node itself: no pod veth on the path, so only the socket hooks can help
    r = _run_in(cgroup, bench.node1)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["greeting"].split()[0] in {"b11", "b12", "b21"}
    assert tuple(out["peer"]) == (CIP, 80)          # getpeername shows the service
    assert out["udp"].split()[0] in {"b11", "b12", "b21"}
    assert tuple(out["udp_from"]) == (CIP, 80)      # recvmsg shows the service


def test_outside_the_cgroup_nothing_is_translated(bench: Bench, cgroup: Path) -> None:
    assert os.path.isdir(cgroup)
    r = _run_in(None, bench.node1)
    assert r.returncode != 0


def test_refuses_the_root_cgroup(bench: Bench) -> None:
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip(f"needs a cgroup v2 mount at {CGROUP2}")
    bench.dp1.load(("sock",))
    with pytest.raises(ValueError):
        bench.dp1.attach_cgroup(CGROUP2)
