"""ADD attaches the agent's pinned pod programs to the host veth (no compile in the
plugin) and records the veth in rr_pod_ifs, DEL removes that entry; CHECK notices when
the programs are gone; a missing pin fails ADD cleanly. Without
per-packet LB the agent pins no egress program, and ADD attaches the forwarding (ingress)
program alone."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpf import maps as m
from bpf.loader import Datapath, DatapathConfig, remove_pins
from bpf.mapstore import PinnedMap
from bpf.progpin import _obj_get, _obj_pin, attach_pinned, pin_programs, pinned_programs
from controller.cni.netsetup import host_ifname

from .conftest import CniLab, sh

PIN_ROOT = Path(f"/sys/fs/bpf/rackroute-cnitest-{os.getpid()}")


def _pinned(cfg: DatapathConfig, before: Callable[[], None] = lambda: None) -> Iterator[Path]:
    dp = Datapath(cfg)
    try:
        before()
        dp.load(parts=("pod",))
        pin_programs(dp)
        dp.close()  # from here on only the pins keep the programs alive
        yield cfg.pin_dir
    finally:
        dp.close()
        remove_pins(cfg)
        if PIN_ROOT.is_dir() and not any(PIN_ROOT.iterdir()):
            PIN_ROOT.rmdir()


@pytest.fixture(scope="module")
def pin_dir() -> Iterator[Path]:
    yield from _pinned(DatapathConfig("cni", pin_root=PIN_ROOT))


@pytest.fixture(scope="module")
def route_only_pin_dir(pin_dir: Path) -> Iterator[Path]:
    """Pins of a datapath without per-packet LB, made over the pins of one with it
    (the agent restarted with --per-packet-lb off): the egress pin must go."""
    cfg = DatapathConfig("cni-route", pin_root=PIN_ROOT, per_packet_lb=False)

    def stale_egress() -> None:
        cfg.pin_dir.mkdir(parents=True, exist_ok=True)
        fd = _obj_get(pin_dir / "prog_rr_pod_egress")
        try:
            _obj_pin(fd, cfg.pin_dir / "prog_rr_pod_egress")
        finally:
            os.close(fd)

    yield from _pinned(cfg, stale_egress)


def test_programs_are_pinned(pin_dir: Path) -> None:
    assert pinned_programs(pin_dir) == ["rr_pod_egress", "rr_pod_ingress", "rr_replies_mark"]
    assert (pin_dir / "prog_rr_pod_ingress").exists()


def test_add_attaches_pinned_programs(lab: CniLab, pin_dir: Path) -> None:
    pod = lab.pod()
    res = lab.add("bpf-0", pod, bpf={"pinDir": str(pin_dir)})
    host = host_ifname("bpf-0", "eth0")
    ingress = sh("ip", "netns", "exec", lab.host, "tc", "filter", "show", "dev", host,
                 "ingress").stdout
    egress = sh("ip", "netns", "exec", lab.host, "tc", "filter", "show", "dev", host,
                "egress").stdout
    assert "bpf" in ingress and "direct-action" in ingress and "rr_pod_ingress" in ingress
    assert "direct-action" in egress and "rr_pod_egress" in egress
    # recorded as a pod veth, with its MAC (translated packets then enter the pod directly)
    link = sh("ip", "netns", "exec", lab.host, "cat", f"/sys/class/net/{host}/ifindex",
              f"/sys/class/net/{host}/address").stdout.split()
    pods = PinnedMap.open(str(pin_dir / "rr_pod_ifs"))
    try:
        k, v = m.pod_if_entry(int(link[0]), link[1])
        assert pods.lookup(k) == v
    finally:
        pods.close()
    ok = lab.call("CHECK", "bpf-0", pod, prev=res, bpf={"pinDir": str(pin_dir)})
    assert (ok.rc, ok.out) == (0, None), ok.stderr
    sh("ip", "netns", "exec", lab.host, "tc", "qdisc", "del", "dev", host, "clsact")
    bad = lab.call("CHECK", "bpf-0", pod, prev=res, bpf={"pinDir": str(pin_dir)})
    assert bad.rc != 0 and bad.out["code"] == 104
    assert bad.out["details"].startswith(f"rr_pod_ingress is not attached to {host} ingress")
    d = lab.call("DEL", "bpf-0", pod, bpf={"pinDir": str(pin_dir)})
    assert d.rc == 0
    # DEL took the veth out of rr_pod_ifs (no entry outlives its interface)
    pods = PinnedMap.open(str(pin_dir / "rr_pod_ifs"))
    try:
        assert pods.lookup(k) is None
    finally:
        pods.close()
    again = lab.call("DEL", "bpf-0", pod, bpf={"pinDir": str(pin_dir)})
    assert again.rc == 0, again.stderr  # idempotent: nothing left to remove


def test_add_with_missing_pins_fails_and_rolls_back(lab: CniLab, tmp_path: Path) -> None:
    pod = lab.pod()
    r = lab.call("ADD", "bpf-1", pod, bpf={"pinDir": str(tmp_path / "nopins")})
    assert r.rc != 0 and r.out["code"] == 103
    assert r.out["msg"] == "attaching the pod datapath failed"
    assert host_ifname("bpf-1", "eth0") not in sh("ip", "-n", lab.host, "link").stdout
    assert list((lab.data_dir / "ips").iterdir()) == []


def _filters(lab: CniLab, host: str, where: str) -> str:
    return sh("ip", "netns", "exec", lab.host, "tc", "filter", "show", "dev", host,
              where).stdout


def test_without_per_packet_lb_add_attaches_the_forwarding_program_alone(
        lab: CniLab, pin_dir: Path, route_only_pin_dir: Path) -> None:
    assert pinned_programs(route_only_pin_dir) == ["rr_pod_ingress", "rr_replies_mark"]
    pod = lab.pod()
    conf = {"pinDir": str(route_only_pin_dir)}
    res = lab.add("bpf-2", pod, bpf=conf)
    host = host_ifname("bpf-2", "eth0")
    assert "rr_pod_ingress" in _filters(lab, host, "ingress")
    assert "bpf" not in _filters(lab, host, "egress")
    ok = lab.call("CHECK", "bpf-2", pod, prev=res, bpf=conf)
    assert (ok.rc, ok.out) == (0, None), ok.stderr
    # a veth attached with per-packet LB loses its egress program when attached again
    attach_pinned(host, pin_dir, lab.host)
    assert "rr_pod_egress" in _filters(lab, host, "egress")
    attach_pinned(host, route_only_pin_dir, lab.host)
    assert "bpf" not in _filters(lab, host, "egress")
    assert "rr_pod_ingress" in _filters(lab, host, "ingress")
    # while the per-packet LB's CHECK wants both
    bad = lab.call("CHECK", "bpf-2", pod, prev=res, bpf={"pinDir": str(pin_dir)})
    assert bad.rc != 0 and bad.out["details"].startswith(
        f"rr_pod_egress is not attached to {host} egress")
    assert lab.call("DEL", "bpf-2", pod, bpf=conf).rc == 0


def test_the_agent_prunes_entries_whose_interface_is_gone(pin_dir: Path) -> None:
    """What a DEL that never ran leaves: the agent's pruning (first pass, resyncs) takes
    it out of the real pinned map, and keeps the entry of an interface that exists."""
    from controller.reconcile.loop import PassContext
    from controller.reconcile.podifs import PodIfsReconciler
    from controller.store import Snapshot

    gone = 0x7FFFFFF0  # no interface has this index
    pods = PinnedMap.open(str(pin_dir / "rr_pod_ifs"))
    before = dict(pods.items())  # other tests' pods (their veths in the lab's namespace)
    pods.update_batch([m.pod_if_entry(gone, "02:00:00:00:00:01"),
                       m.pod_if_entry(1, "00:00:00:00:00:00")])  # lo, in every namespace
    r = PodIfsReconciler(pods)
    try:
        ctx = PassContext(Snapshot.build([]), "n1")
        r.reconcile(ctx)
        assert ctx.errors == {}
        assert pods.lookup(gone.to_bytes(4, "little")) is None
        assert pods.lookup((1).to_bytes(4, "little")) is not None
    finally:
        pods.delete_batch([k for k, _ in pods.items() if k not in before])
        pods.update_batch(list(before.items()))  # as they were, for the tests after
        r.close()
