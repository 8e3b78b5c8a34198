"""The file-backed pod address store: order, exhaustion, release, restarts, concurrency."""

from __future__ import annotations

import json
import multiprocessing as mp
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import pytest

from controller.cni.ipam import (
    AlreadyAllocated,
    IpamStore,
    LockTimeout,
    Owner,
    PoolExhausted,
    usable_bounds,
)

V4 = ip_network("10.244.0.0/24")


def store(tmp: Path, *cidrs: str, net: str = "rackroute") -> IpamStore:
    return IpamStore(tmp, net, [ip_network(c) for c in (cidrs or ("10.244.0.0/24",))])


def test_usable_bounds() -> None:
    assert usable_bounds(ip_network("10.0.0.0/30")) == (int(ip_address("10.0.0.1")),
                                                        int(ip_address("10.0.0.2")))
    assert usable_bounds(ip_network("10.0.0.0/31")) == (int(ip_address("10.0.0.0")),
                                                        int(ip_address("10.0.0.1")))
    assert usable_bounds(ip_network("fd00::/126")) == (int(ip_address("fd00::1")),
                                                       int(ip_address("fd00::3")))


def test_sequential_from_first_host(tmp_path: Path) -> None:
    s = store(tmp_path)
    got = [s.allocate(f"c{i}", "eth0") for i in range(3)]
    assert got == [[IPv4Address("10.244.0.1")], [IPv4Address("10.244.0.2")],
                   [IPv4Address("10.244.0.3")]]
    assert (tmp_path / "ips" / "10.244.0.2").is_file()
    doc = json.loads((tmp_path / "ips" / "10.244.0.2").read_text())
    assert doc == {"network": "rackroute", "containerID": "c1", "ifname": "eth0"}
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["owners"]["rackroute/c2/eth0"] == ["10.244.0.3"]
    assert index["cursor"] == {"10.244.0.0/24": "10.244.0.3"}


def test_freed_address_is_reused_only_after_wrapping(tmp_path: Path) -> None:
    s = store(tmp_path, "10.244.0.0/29")  # .1-.6 usable
    for i in range(4):
        s.allocate(f"c{i}", "eth0")  # .1-.4
    assert s.release("c1", "eth0") == [IPv4Address("10.244.0.2")]
    assert s.allocate("n1", "eth0") == [IPv4Address("10.244.0.5")]
    assert s.allocate("n2", "eth0") == [IPv4Address("10.244.0.6")]
    assert s.allocate("n3", "eth0") == [IPv4Address("10.244.0.2")]  # wrapped, skips taken


def test_exhaustion_is_a_clear_error_and_leaves_no_trace(tmp_path: Path) -> None:
    s = store(tmp_path, "10.244.0.0/30")  # .1 and .2; never .0 (network) or .3 (broadcast)
    assert s.allocate("a", "eth0") == [IPv4Address("10.244.0.1")]
    assert s.allocate("b", "eth0") == [IPv4Address("10.244.0.2")]
    with pytest.raises(PoolExhausted, match=r"no free IPv4 address in 10\.244\.0\.0/30"):
        s.allocate("c", "eth0")
    assert s.lookup("c", "eth0") == []
    assert sorted(p.name for p in (tmp_path / "ips").iterdir()) == ["10.244.0.1", "10.244.0.2"]


def test_dual_stack_exhaustion_rolls_back_the_other_family(tmp_path: Path) -> None:
    s = store(tmp_path, "10.244.0.0/24", "fd00::/127")
    s.allocate("a", "eth0")
    s.allocate("b", "eth0")
    with pytest.raises(PoolExhausted, match="IPv6"):
        s.allocate("c", "eth0")
    assert set(s.allocations()) == {IPv4Address("10.244.0.1"), IPv4Address("10.244.0.2"),
                                    IPv6Address("fd00::"), IPv6Address("fd00::1")}


def test_second_range_used_when_first_is_full(tmp_path: Path) -> None:
    s = store(tmp_path, "10.244.0.0/31", "10.245.0.0/24")
    got = [s.allocate(f"c{i}", "eth0")[0] for i in range(3)]
    assert got == [IPv4Address("10.244.0.0"), IPv4Address("10.244.0.1"),
                   IPv4Address("10.245.0.1")]


def test_one_address_per_family(tmp_path: Path) -> None:
    s = store(tmp_path, "10.244.0.0/24", "fd00:244::/64")
    assert s.allocate("a", "eth0") == [IPv4Address("10.244.0.1"), IPv6Address("fd00:244::1")]
    assert s.lookup("a", "eth0") == [IPv4Address("10.244.0.1"), IPv6Address("fd00:244::1")]


def test_add_twice_is_refused(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.allocate("a", "eth0")
    with pytest.raises(AlreadyAllocated, match=r"rackroute/a/eth0 already holds 10\.244\.0\.1"):
        s.allocate("a", "eth0")
    assert s.allocate("a", "net1") == [IPv4Address("10.244.0.2")]  # another interface is fine
    other = store(tmp_path, net="other")
    assert other.allocate("a", "eth0") == [IPv4Address("10.244.0.3")]  # shared range


def test_release_is_idempotent(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.allocate("a", "eth0")
    assert s.release("a", "eth0") == [IPv4Address("10.244.0.1")]
    assert s.release("a", "eth0") == []
    assert s.release("never", "eth0") == []
    assert s.allocations() == {}


def test_survives_restart(tmp_path: Path) -> None:
    s = store(tmp_path)
    for i in range(3):
        s.allocate(f"c{i}", "eth0")
    s.release("c0", "eth0")
    s2 = store(tmp_path)  # a new process with the same data dir
    assert s2.lookup("c2", "eth0") == [IPv4Address("10.244.0.3")]
    assert s2.allocate("c3", "eth0") == [IPv4Address("10.244.0.4")]
    assert s2.allocations()[IPv4Address("10.244.0.2")] == Owner("rackroute", "c1", "eth0")


def test_lost_index_is_rebuilt_from_address_files(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.allocate("a", "eth0")
    s.allocate("b", "eth0")
    (tmp_path / "index.json").write_text("{truncated")
    s2 = store(tmp_path)
    assert s2.lookup("b", "eth0") == [IPv4Address("10.244.0.2")]
    with pytest.raises(AlreadyAllocated):
        s2.allocate("a", "eth0")
    assert s2.allocate("c", "eth0") == [IPv4Address("10.244.0.3")]


def test_release_finds_files_the_index_missed(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.allocate("a", "eth0")
    (tmp_path / "ips" / "10.244.0.9").write_text(
        json.dumps({"network": "rackroute", "containerID": "crashed", "ifname": "eth0"}))
    assert s.release("crashed", "eth0") == [IPv4Address("10.244.0.9")]
    assert not (tmp_path / "ips" / "10.244.0.9").exists()


def _hold_lock(root: str, ready: mp.synchronize.Event, done: mp.synchronize.Event) -> None:
    s = store(Path(root))
    with s.locked():
        ready.set()
        done.wait(10)


def test_busy_lock_times_out(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    p.start()
    try:
        assert ready.wait(10)
        s = IpamStore(tmp_path, "rackroute", [V4], lock_timeout=0.2)
        with pytest.raises(LockTimeout):
            s.allocate("a", "eth0")
    finally:
        done.set()
        p.join(10)
    assert s.allocate("a", "eth0") == [IPv4Address("10.244.0.1")]


def _worker(root: str, wid: int, n: int, out: mp.queues.Queue[tuple[int, list[str]]]) -> None:
    s = store(Path(root))
    got = [str(s.allocate(f"w{wid}-{i}", "eth0")[0]) for i in range(n)]
    out.put((wid, got))


def test_concurrent_processes_never_share_an_address(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    out: mp.queues.Queue[tuple[int, list[str]]] = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), w, 20, out)) for w in range(8)]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    addrs = [a for got in results.values() for a in got]
    assert len(addrs) == 160
    assert len(set(addrs)) == 160
    on_disk = store(tmp_path).allocations()
    assert {str(a) for a in on_disk} == set(addrs)
    assert {o.container_id for o in on_disk.values()} == {
        f"w{w}-{i}" for w in range(8) for i in range(20)}


def test_requested_address_is_pinned_refused_when_taken_or_outside(tmp_path: Path) -> None:
    from controller.cni.ipam import RequestRefused

    s = store(tmp_path)
    assert s.allocate("a", "eth0", [ip_address("10.244.0.10")]) == [IPv4Address("10.244.0.10")]
    with pytest.raises(RequestRefused, match="requested IP 10.244.0.10 is already allocated"):
        s.allocate("b", "eth0", [ip_address("10.244.0.10")])
    with pytest.raises(RequestRefused, match="10.244.0.255 is not a usable address"):
        s.allocate("b", "eth0", [ip_address("10.244.0.255")])
    assert s.lookup("b", "eth0") == []  # nothing half-allocated
    assert s.allocate("b", "eth0") == [IPv4Address("10.244.0.1")]
    assert s.release("a", "eth0") == [IPv4Address("10.244.0.10")]
