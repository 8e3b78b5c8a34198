"""Socket-level load balancing on cgroups created for the test (never the root one):
IPv4 on the `bench` node, IPv6 on the `bench6` node, and IPv4 services reached through
IPv4-mapped addresses on dual-stack AF_INET6 sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bpf.loader import Datapath, detach_tc

from .conftest import CIP, CIP_AFF, TAG, Bench, without_backend
from .v6lab import VIP as VIP6
from .v6lab import Bench6

CGROUP2 = Path("/sys/fs/cgroup/unified")

# af 6 sockets are dual-stack (IPV6_V6ONLY off), so an IPv4-mapped vip goes through them
CLIENT = """
import json, socket
fam = socket.AF_INET6 if %(af)d == 6 else socket.AF_INET
vip = %(vip)r

def sock(kind):
    s = socket.socket(fam, kind)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.settimeout(2)
    return s

out = {}
s = sock(socket.SOCK_STREAM)
s.connect((vip, 80))
out["greeting"] = s.makefile().readline().strip()
out["peer"] = list(s.getpeername()[:2])
s.close()
u = sock(socket.SOCK_DGRAM)
u.sendto(b"hi", (vip, 80))
data, addr = u.recvfrom(2048)
out["udp"] = data.decode()
out["udp_from"] = list(addr[:2])
u.close()
c = sock(socket.SOCK_DGRAM)
c.connect((vip, 80))
c.send(b"hi")
data, addr = c.recvfrom(2048)
out["cudp"] = data.decode()
out["cudp_from"] = list(addr[:2])
out["cudp_peer"] = list(c.getpeername()[:2])
c.close()
print(json.dumps(out))
"""


@contextmanager
def _attached(dp: Datapath, name: str) -> Iterator[Path]:
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip(f"needs a cgroup v2 mount at {CGROUP2}")
    cg = CGROUP2 / name
    cg.mkdir()
    try:
        dp.load(("sock",))
        dp.attach_cgroup(cg)
        yield cg
    finally:
        dp.detach_cgroup(cg)
        cg.rmdir()


@pytest.fixture
def cgroup(bench: Bench) -> Iterator[Path]:
    with _attached(bench.dp1, f"rrx{TAG}") as cg:
        yield cg


@pytest.fixture
def cgroup6(bench6: Bench6) -> Iterator[Path]:
    with _attached(bench6.dp, f"rrx6{TAG}") as cg:
        yield cg


def _run_in(cg: Path | None, ns: str, vip: str = CIP, af: int = 4
            ) -> subprocess.CompletedProcess[str]:
    code = CLIENT % {"vip": vip, "af": af}
    enter = f"echo $$ > {cg}/cgroup.procs && " if cg else ""
    return subprocess.run(["sh", "-c", f'{enter}exec ip netns exec {ns} "$0" -c "$1"',
                           sys.executable, code], capture_output=True, text=True, timeout=20)


def _check(r: subprocess.CompletedProcess[str], vip: str, names: set[str]) -> None:
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["greeting"].split()[0] in names
    assert tuple(out["peer"]) == (vip, 80)          # getpeername shows the service
    assert out["udp"].split()[0] in names
    assert tuple(out["udp_from"]) == (vip, 80)      # recvmsg shows the service
    assert out["cudp"].split()[0] in names          # connected UDP: connect translated
    assert tuple(out["cudp_from"]) == (vip, 80)
    assert tuple(out["cudp_peer"]) == (vip, 80)


def test_connect_sendmsg_recvmsg_getpeername_translate(bench: Bench, cgroup: Path) -> None:
    # from the node itself: no pod veth on the path, so only the socket hooks can help
    _check(_run_in(cgroup, bench.node1), CIP, {"b11", "b12", "b21"})


def test_ipv6_connect_sendmsg_recvmsg_getpeername_translate(bench6: Bench6,
                                                           cgroup6: Path) -> None:
    _check(_run_in(cgroup6, bench6.node, VIP6, 6), VIP6, set(bench6.backends))


def test_ipv4_mapped_service_through_a_dual_stack_socket(bench: Bench, cgroup: Path) -> None:
    # connect6 / getpeername6 / recvmsg6 see ::ffff:a.b.c.d and use the IPv4 entries;
    # the unconnected sendto goes to sendmsg4 (the kernel hands mapped datagrams to IPv4)
    mapped = f"::ffff:{CIP}"
    _check(_run_in(cgroup, bench.node1, mapped, 6), mapped, {"b11", "b12", "b21"})


def test_outside_the_cgroup_nothing_is_translated(bench: Bench, cgroup: Path) -> None:
    assert os.path.isdir(cgroup)
    r = _run_in(None, bench.node1)
    assert r.returncode != 0


def test_outside_the_cgroup_nothing_is_translated_ipv6(bench6: Bench6, cgroup6: Path) -> None:
    assert os.path.isdir(cgroup6)
    r = _run_in(None, bench6.node, VIP6, 6)
    assert r.returncode != 0


def test_refuses_the_root_cgroup(bench: Bench) -> None:
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip(f"needs a cgroup v2 mount at {CGROUP2}")
    bench.dp1.load(("sock",))
    with pytest.raises(ValueError):
        bench.dp1.attach_cgroup(CGROUP2)


MANY = """
import socket, struct
linger = struct.pack("ii", 1, 0)  # RST on close, as a busy client's pool does
ok = 0
for i in range(%(n)d):
    s = socket.socket()
    s.settimeout(2)
    s.connect((%(vip)r, 80))
    ok += bool(s.makefile().readline().strip())
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.close()
print(ok)
"""


def test_many_connects_in_a_row_all_translate(bench: Bench, cgroup: Path) -> None:
    """Each connect() gets a backend and a reverse-NAT entry; a run of short connections
    (closed with RST, so ports come back at once) must not stall on stale state."""
    code = MANY % {"n": 200, "vip": CIP}
    r = subprocess.run(["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && '
                        f'exec ip netns exec {bench.node1} "$0" -c "$1"', sys.executable, code],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout) == 200


SPREAD = """
import socket
names = set()
for i in range(%(n)d):
    s = socket.socket()
    s.settimeout(2)
    s.connect((%(vip)r, 80))
    names.add(s.makefile().readline().split()[0])
    s.close()
print(" ".join(sorted(names)))
"""


def _backends_seen(cg: Path, ns: str, vip: str, n: int) -> set[str]:
    r = subprocess.run(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec ip netns exec {ns} '
                        '"$0" -c "$1"', sys.executable, SPREAD % {"n": n, "vip": vip}],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return set(r.stdout.split())


def test_socket_lb_keeps_session_affinity_and_spreads_without_it(bench: Bench,
                                                                 cgroup: Path) -> None:
    """connect() picks by socket: a service with sessionAffinity ClientIP (the client is
    the pod's network namespace here) sends every connection to one backend; one without
    spreads them."""
    assert len(_backends_seen(cgroup, bench.node1, CIP_AFF, 15)) == 1
    assert len(_backends_seen(cgroup, bench.node1, CIP, 15)) > 1


def test_a_pod_without_per_packet_programs_is_served_by_the_socket_hooks(
        bench: Bench, cgroup: Path) -> None:
    # the agent's --per-packet-lb off: the pod's veth carries no service translation
    pod = bench.client
    detach_tc(pod.host_if, bench.node1)
    try:
        r = _run_in(None, pod.ns)
        assert r.returncode != 0  # outside the cgroup nothing translates now
        _check(_run_in(cgroup, pod.ns), CIP, {"b11", "b12", "b21"})
    finally:
        bench.dp1.attach_pod(pod.host_if, bench.node1)


def test_source_ranges_are_judged_on_the_packet_not_bypassed_at_connect(
        bench: Bench, cgroup: Path) -> None:
    # connect() leaves a service with source ranges to the per-packet path, which sees
    # the source address (not chosen yet at connect time)
    from dataclasses import replace
    from ipaddress import ip_network

    from .conftest import LB_LOCAL, apply, key
    from .netlab import tcp_ask

    lb = key(LB_LOCAL, 80)
    pod = bench.client
    code = f"import socket; s = socket.create_connection(({LB_LOCAL!r}, 80), 1); " \
           "print(s.makefile().readline().split()[0])"

    def ask() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec ip netns '
                               f'exec {pod.ns} "$0" -c "$1"', sys.executable, code],
                              capture_output=True, text=True, timeout=20)

    try:
        apply(bench.sync1, {**bench.table1, lb: replace(
            bench.table1[lb], source_ranges=(ip_network("192.0.2.0/24"),))})
        assert ask().returncode != 0  # outside the range, inside the cgroup: refused
        apply(bench.sync1, {**bench.table1, lb: replace(
            bench.table1[lb], source_ranges=(ip_network(f"{pod.ip}/32"),))})
        r = ask()
        assert r.returncode == 0 and r.stdout.strip() in {"b11", "b12"}, r.stderr
        assert tcp_ask(pod.ns, LB_LOCAL, 80).split()[0] in {"b11", "b12"}
    finally:
        apply(bench.sync1, bench.table1)


CONNECTED_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((%(vip)r, 80))

def ask():
    s.send(b"hi")
    data, addr = s.recvfrom(2048)
    return data.decode().split()[0], addr[0]

print(*ask(), flush=True)
sys.stdin.readline()
if %(reconnect)r:  # was the socket closed under its owner? then connect again
    try:
        s.recv(64)
        print("open", flush=True)
    except ConnectionAbortedError:
        print("aborted", flush=True)
    except TimeoutError:
        print("open", flush=True)
    s.connect((%(vip)r, 80))
print(*ask(), flush=True)
"""


def _udp_client(cg: Path, ns: str, reconnect: bool = False) -> subprocess.Popen[str]:
    """CONNECTED_UDP in ns, in cgroup cg: it asks, waits for a line on stdin, asks again
    (first reporting whether its socket was closed and connecting again, if reconnect)."""
    return subprocess.Popen(
        ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec ip netns exec {ns} "$0" -c "$1"',
         sys.executable, CONNECTED_UDP % {"vip": CIP, "reconnect": reconnect}],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_connected_udp_follows_a_backend_that_goes_away_with_per_packet_lb(
        bench: Bench) -> None:
    # the agent with per-packet LB builds its socket hooks with sock_udp_connect off: a
    # connected UDP socket keeps the service address and the TC path's conntrack moves
    # its flow when the backend leaves (a socket connected to the backend would not)
    from dataclasses import replace

    from .conftest import apply

    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip(f"needs a cgroup v2 mount at {CGROUP2}")
    dp = Datapath(replace(bench.dp1.cfg, sock_udp_connect=False))
    cg = CGROUP2 / f"rrxu{TAG}"
    cg.mkdir()
    proc: subprocess.Popen[str] | None = None
    try:
        dp.load(("sock",))
        dp.attach_cgroup(cg)
        proc = _udp_client(cg, bench.client.ns)
        assert proc.stdin is not None and proc.stdout is not None
        first, src = proc.stdout.readline().split()
        assert src == CIP and first in {"b11", "b12", "b21"}
        without_backend(bench, bench.lab.pods[first].ip)
        proc.stdin.write("\n")
        proc.stdin.flush()
        second, src = proc.stdout.readline().split()
        assert src == CIP and second != first and second in {"b11", "b12", "b21"}
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=5)
        apply(bench.sync1, bench.table1)
        dp.detach_cgroup(cg)
        cg.rmdir()
        dp.close()


def test_connected_udp_sockets_of_a_removed_backend_are_closed(bench: Bench,
                                                                cgroup: Path) -> None:
    # socket LB translating connect() (the agent without per-packet LB): the socket holds
    # the backend itself, so the agent closes it when that backend leaves the service;
    # its owner connects again and is balanced to a backend still there
    from controller.kernel.udpsockets import SockDiagUdpSockets
    from controller.reconcile.loop import PassContext
    from controller.reconcile.sockets import UdpSocketReconciler
    from controller.store import Snapshot

    from .conftest import apply

    rec = UdpSocketReconciler(SockDiagUdpSockets(cgroup), bench.sync1.programmed)
    proc = _udp_client(cgroup, bench.client.ns, reconnect=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        first, src = proc.stdout.readline().split()
        assert src == CIP and first in {"b11", "b12", "b21"}
        without_backend(bench, bench.lab.pods[first].ip)
        ctx = PassContext(Snapshot.build(()), "n1")
        rec.finalize(ctx)
        assert not ctx.errors and rec.closed == 1
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "aborted"
        second, src = proc.stdout.readline().split()
        assert src == CIP and second in {"b11", "b12", "b21"} and second != first
    finally:
        proc.kill()
        proc.wait(timeout=5)
        apply(bench.sync1, bench.table1)
