"""An upgrade changed some maps: the restarted loader recreates the pins whose map no
longer matches its declaration (type, sizes, max_entries, flags) and adopts the rest
with their contents."""

from __future__ import annotations

import ctypes as ct
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpf import libbpf
from bpf import maps as m
from bpf.loader import Datapath, DatapathConfig, ensure_bpffs
from bpf.mapstore import PinnedMap
from bpf.pins import MapShape, pinned_shape

PIN_ROOT = Path(f"/sys/fs/bpf/rackroute-pintest-{os.getpid()}")
BPF_F_NO_PREALLOC = 1


class _CreateOpts(ct.Structure):  # struct bpf_map_create_opts, libbpf 1.x prefix
    _fields_ = [("sz", ct.c_size_t), ("btf_fd", ct.c_uint32),
                ("btf_key_type_id", ct.c_uint32), ("btf_value_type_id", ct.c_uint32),
                ("btf_vmlinux_value_type_id", ct.c_uint32), ("inner_map_fd", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("map_extra", ct.c_uint64),
                ("numa_node", ct.c_uint32), ("map_ifindex", ct.c_uint32)]


def _pin_map(path: Path, shape: MapShape) -> None:
    opts = _CreateOpts(sz=ct.sizeof(_CreateOpts), map_flags=shape.map_flags)
    fd = libbpf.check(libbpf.lib().bpf_map_create(
        shape.type, path.name.encode(), shape.key_size, shape.value_size, shape.max_entries,
        ct.byref(opts)), f"create {path.name}")
    try:
        libbpf.obj_pin(fd, str(path))
    finally:
        os.close(fd)


def _shape(path: Path) -> MapShape:
    got = pinned_shape(path)
    assert got is not None, path
    return got[0]


def _map_id(path: Path) -> int:
    got = pinned_shape(path)
    assert got is not None, path
    return got[1]


def _put(path: Path, key: bytes, value: bytes) -> None:
    pm = PinnedMap.open(str(path))
    try:
        pm.update_batch([(key, value)])
    finally:
        pm.close()


def _get(path: Path, key: bytes) -> bytes | None:
    pm = PinnedMap.open(str(path))
    try:
        return pm.lookup(key)
    finally:
        pm.close()


@pytest.fixture
def cfg() -> Iterator[DatapathConfig]:
    ensure_bpffs()
    c = DatapathConfig("up", pin_root=PIN_ROOT, max_services=256, max_backends=256,
                       max_tables=128, ct_size=4096)
    c.pin_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield c
    finally:
        shutil.rmtree(PIN_ROOT, ignore_errors=True)


def _recreated(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    out = {}
    for r in caplog.records:
        msg = r.getMessage()
        if msg.startswith("event=pin_recreated "):
            kv = dict(f.split("=", 1) for f in msg.split())
            out[kv["map"]] = kv["reason"]
    return out


def test_mismatched_pins_are_recreated_matching_pins_keep_their_contents(
        cfg: DatapathConfig, caplog: pytest.LogCaptureFixture) -> None:
    d = cfg.pin_dir
    layout = m.map_layout(cfg.maglev_m)
    svc_k, svc_v = layout["rr_svc"]
    be_k, be_v = layout["rr_backend"]
    ct_k, ct_v = layout["rr_ct"]
    aff_k, aff_v = layout["rr_affinity"]
    mg_k, mg_v = layout["rr_maglev"]
    # Matching the declarations: adopted as they are.
    _pin_map(d / "rr_svc", MapShape(libbpf.BPF_MAP_TYPE_HASH, svc_k, svc_v,
                                    cfg.max_services, 0))
    _pin_map(d / "rr_backend", MapShape(libbpf.BPF_MAP_TYPE_HASH, be_k, be_v,
                                        cfg.max_backends, 0))
    # An older release's shapes: conntrack as a plain, smaller hash with the family-neutral
    # 40-byte key and 64-byte value it had before IPv4 got its own compact map; affinity
    # values 8 bytes shorter; the Maglev tables allocated on demand, one per service.
    old_ct_k, old_ct_v = 40, 64
    _pin_map(d / "rr_ct", MapShape(libbpf.BPF_MAP_TYPE_HASH, old_ct_k, old_ct_v, 1024, 0))
    _pin_map(d / "rr_affinity", MapShape(libbpf.BPF_MAP_TYPE_LRU_HASH, aff_k, aff_v - 8,
                                         65536, 0))
    _pin_map(d / "rr_maglev", MapShape(libbpf.BPF_MAP_TYPE_HASH, mg_k, mg_v,
                                       cfg.max_services, BPF_F_NO_PREALLOC))
    svc_key, svc_val = bytes(range(svc_k)), bytes([7]) * svc_v
    be_key, be_val = (42).to_bytes(4, "little"), bytes([9]) * be_v
    ct_key = bytes([1]) * ct_k
    _put(d / "rr_svc", svc_key, svc_val)
    _put(d / "rr_backend", be_key, be_val)
    _put(d / "rr_ct", bytes([1]) * old_ct_k, bytes([3]) * old_ct_v)
    kept_ids = {n: _map_id(d / n) for n in ("rr_svc", "rr_backend")}
    old_ids = {n: _map_id(d / n) for n in ("rr_ct", "rr_affinity", "rr_maglev")}

    caplog.set_level(logging.INFO, logger="bpf.pins")
    dp = Datapath(cfg).load(("pod", "uplink"))
    try:
        assert {"rr_pod_ingress", "rr_pod_egress", "rr_uplink_ingress",
                "rr_uplink_egress"} <= set(dp.fds)
        recreated = _recreated(caplog)
        assert set(recreated) == {"rr_ct", "rr_affinity", "rr_maglev"}, recreated
        assert "type:1->9" in recreated["rr_ct"] and "max_entries:1024->4096" in \
            recreated["rr_ct"]
        assert f"key_size:{old_ct_k}->{ct_k}" in recreated["rr_ct"]
        assert f"value_size:{old_ct_v}->{ct_v}" in recreated["rr_ct"]
        assert recreated["rr_affinity"] == f"value_size:{aff_v - 8}->{aff_v}"
        assert recreated["rr_maglev"] == (f"max_entries:{cfg.max_services}->"
                                          f"{cfg.max_tables},map_flags:{BPF_F_NO_PREALLOC}->0")

        assert _shape(d / "rr_ct") == MapShape(libbpf.BPF_MAP_TYPE_LRU_HASH, ct_k, ct_v,
                                               cfg.ct_size, 0)
        ct6_k, ct6_v = layout["rr_ct6"]  # new in this release: created, nothing to adopt
        assert _shape(d / "rr_ct6") == MapShape(libbpf.BPF_MAP_TYPE_LRU_HASH, ct6_k, ct6_v,
                                                cfg.ct_size // 4, 0)
        assert _shape(d / "rr_affinity").value_size == aff_v
        assert _shape(d / "rr_maglev") == MapShape(libbpf.BPF_MAP_TYPE_HASH, mg_k, mg_v,
                                                   cfg.max_tables, 0)
        assert all(_map_id(d / n) != i for n, i in old_ids.items())
        assert _get(d / "rr_ct", ct_key) is None  # the old conntrack is gone, once

        assert {n: _map_id(d / n) for n in kept_ids} == kept_ids
        assert _get(d / "rr_svc", svc_key) == svc_val
        assert _get(d / "rr_backend", be_key) == be_val
    finally:
        dp.close()

    # Restart on the same release: everything matches, nothing is recreated.
    ids = {p.name: _map_id(p) for p in d.iterdir()}
    caplog.clear()
    dp = Datapath(cfg).load(("pod", "uplink", "sock"))
    try:
        assert _recreated(caplog) == {}
        assert {p.name: _map_id(p) for p in d.iterdir()} == ids
        assert _get(d / "rr_backend", be_key) == be_val
    finally:
        dp.close()


def test_value_size_change_alone_no_longer_fails_the_load(cfg: DatapathConfig) -> None:
    """Before the check, a shorter pinned conntrack value made the verifier refuse."""
    ct_k, ct_v = m.map_layout(cfg.maglev_m)["rr_ct"]
    _pin_map(cfg.pin_dir / "rr_ct", MapShape(libbpf.BPF_MAP_TYPE_LRU_HASH, ct_k, ct_v - 16,
                                             cfg.ct_size, 0))
    dp = Datapath(cfg).load(("pod",))
    try:
        assert _shape(cfg.pin_dir / "rr_ct").value_size == ct_v
    finally:
        dp.close()
