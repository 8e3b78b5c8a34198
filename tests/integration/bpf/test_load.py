"""The programs load on this kernel; a rejected program raises with the verifier log;
the ctypes mirrors match the compiled struct layout (the ABI test); a load isolated in
a child process (the agent's) keeps bcc out and still reports a failure's log."""

from __future__ import annotations

import ctypes as ct
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bpf import libbpf
from bpf import maps as m
from bpf.loader import (
    CGROUP_SOCK_ADDR,
    SCHED_CLS,
    SRC_DIR,
    Datapath,
    DatapathConfig,
    LoadError,
    load_text,
    load_text_isolated,
)
from bpf.mapstore import PinnedMap

from .conftest import Bench

REPO = Path(__file__).resolve().parents[3]


def test_pinned_maps_have_the_layout_python_expects(bench: Bench) -> None:
    for dp in (bench.dp1, bench.dp2):
        assert {"rr_pod_ingress", "rr_pod_egress", "rr_uplink_ingress",
                "rr_uplink_egress"} <= set(dp.fds)
        for name, (ks, vs) in m.map_layout(dp.cfg.maglev_m).items():
            pm = PinnedMap.open(str(dp.cfg.pin_dir / name))
            try:
                assert (pm.key_size, pm.value_size) == (ks, vs), name
            finally:
                pm.close()


def test_verifier_rejection_keeps_the_log() -> None:
    bad = """
int rr_bad(struct __sk_buff *skb) {
    /* packet read without a bounds check: the verifier must refuse */
    return *(u32 *)(long)skb->data;
}
"""
    with pytest.raises(LoadError) as exc:
        load_text(bad, {"rr_bad": (SCHED_CLS, -1)})
    assert "invalid access to packet" in exc.value.log
    assert "invalid access to packet" in str(exc.value)


def test_compile_error_keeps_clang_output() -> None:
    with pytest.raises(LoadError) as exc:
        load_text("int rr_x(struct __sk_buff *skb) { return undefined_name; }",
                  {"rr_x": (SCHED_CLS, -1)})
    assert "undefined_name" in exc.value.log


def test_socket_programs_load() -> None:
    text = "#include <uapi/linux/in.h>\n" + (SRC_DIR / "maps.h").read_text() + "\n" + \
        "\n".join(ln for ln in (SRC_DIR / "lib/lb.h").read_text().splitlines()) + "\n" + \
        "\n".join(ln for ln in (SRC_DIR / "sock.c").read_text().splitlines()
                  if "#include \"" not in ln)
    mod, fds = load_text(text, {"rr_sock_connect4": (CGROUP_SOCK_ADDR, 10),
                                "rr_sock_getpeername4": (CGROUP_SOCK_ADDR, 29)})
    try:
        assert all(fd > 0 for fd in fds.values())
    finally:
        mod.cleanup()


def test_abi_offsets_and_sizes_match_the_compiled_structs() -> None:
    structs = m.c_structs()
    probes: list[tuple[str, str, int]] = []  # (struct, field or "", python value)
    for cname, py in structs.items():
        probes.append((cname, "", ct.sizeof(py)))
        for fname, *_ in py._fields_:
            probes.append((cname, fname, getattr(py, fname).offset))
    body = []
    for i, (cname, fname, _) in enumerate(probes):
        expr = f"sizeof(struct {cname})" if not fname else \
            f"__builtin_offsetof(struct {cname}, {fname})"
        body.append(f"    k = {i}; v = {expr}; rr_abi.update(&k, &v);")
    text = (SRC_DIR / "maps.h").read_text() + f"""
BPF_ARRAY(rr_abi, u32, {len(probes)});
int rr_abi_probe(struct __sk_buff *skb) {{
    u32 k, v;
{chr(10).join(body)}
    return 0;
}}
"""
    mod, fds = load_text(text, {"rr_abi_probe": (SCHED_CLS, -1)})
    try:
        ret, _, _ = libbpf.prog_test_run(fds["rr_abi_probe"], bytes(64))
        assert ret == 0
        table = mod[b"rr_abi"]
        got = {i: table[ct.c_int(i)].value for i in range(len(probes))}
    finally:
        mod.cleanup()
    mismatches = [(c, f, py, got[i]) for i, (c, f, py) in enumerate(probes) if got[i] != py]
    assert not mismatches, mismatches


MIRRORED = ("AF_INET", "AF_INET6", "SVC_LOCAL_ONLY", "SVC_EXTERNAL", "SVC_RANDOM",
            "SVC_NODEPORT", "SVC_SRC_RANGES", "BE_LOCAL", "BE_TERMINATING", "DIR_FORWARD",
            "DIR_REPLY", "CT_SNAT", "CT_CLOSING", "CT_SPORT", "CT_HAIRPIN")


def test_flag_constants_match_the_header() -> None:
    # bpf/maps.py's NAME mirrors maps.h's RR_NAME: each read from the header's own
    # definition by a compiled program
    body = "\n".join(f"    k = {i}; v = RR_{n}; rr_consts.update(&k, &v);"
                     for i, n in enumerate(MIRRORED))
    text = (SRC_DIR / "maps.h").read_text() + f"""
BPF_ARRAY(rr_consts, u32, {len(MIRRORED)});
int rr_consts_probe(struct __sk_buff *skb) {{
    u32 k, v;
{body}
    return 0;
}}
"""
    mod, fds = load_text(text, {"rr_consts_probe": (SCHED_CLS, -1)})
    try:
        assert libbpf.prog_test_run(fds["rr_consts_probe"], bytes(64))[0] == 0
        table = mod[b"rr_consts"]
        got = {n: table[ct.c_int(i)].value for i, n in enumerate(MIRRORED)}
    finally:
        mod.cleanup()
    assert got == {n: getattr(m, n) for n in MIRRORED}


ISOLATED = """
import json, shutil, sys
from pathlib import Path
from bpf.libbpf import prog_test_run
from bpf.loader import Datapath, DatapathConfig
from tests.bench.bench_r3 import packet
root = Path(sys.argv[1])
dp = Datapath(DatapathConfig("iso", pin_root=root)).load(("pod", "uplink"), isolated=True)
try:
    ret, _, _ = prog_test_run(dp.fds["rr_pod_ingress"], packet("10.1.0.1", "10.2.0.1", 1, 2))
    maps = open("/proc/self/maps").read()
    print(json.dumps({"fds": sorted(dp.fds), "ret": ret, "bcc": "bcc" in sys.modules,
                      "libbcc": "libbcc" in maps, "llvm": "LLVM" in maps,
                      "pins": sorted(p.name for p in (root / "iso").iterdir())}))
finally:
    dp.close()
    shutil.rmtree(root, ignore_errors=True)
"""


def test_an_isolated_load_keeps_bcc_and_llvm_out_of_the_process() -> None:
    """What the agent does: the programs are compiled and pinned by a child process,
    and this one only opens the pins (bcc and LLVM cost ~150 MB that stays)."""
    r = subprocess.run([sys.executable, "-c", ISOLATED, f"/sys/fs/bpf/rrq-iso-{os.getpid()}"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["fds"] == ["rr_pod_egress", "rr_pod_ingress", "rr_replies_mark",
                          "rr_uplink_egress", "rr_uplink_ingress"]
    assert out["ret"] == 0  # a real program ran (TC_ACT_OK for a packet to no service)
    assert not out["bcc"] and not out["libbcc"] and not out["llvm"]
    assert {"rr_svc", "rr_ct", "prog_rr_pod_ingress", "prog_rr_uplink_egress"} <= set(
        out["pins"])


def test_an_isolated_load_that_fails_raises_with_the_log() -> None:
    root = Path(f"/sys/fs/bpf/rrq-isofail-{os.getpid()}")
    try:
        with pytest.raises(LoadError) as exc:  # a map of no entries: the kernel refuses
            Datapath(DatapathConfig("bad", pin_root=root, max_services=0)).load(
                ("pod",), isolated=True)
        assert "compile failed" in str(exc.value) and exc.value.log
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_text_loaded_in_a_child_hands_back_programs_and_maps_that_work_together() -> None:
    """What the tunnel driver does: the child compiles, the fds come back over a socket."""
    from bpf.libbpf import prog_test_run
    from tests.bench.bench_r3 import packet

    fds = load_text_isolated(
        "BPF_ARRAY(rr_hits, u64, 2);\n"
        "int rr_count(struct __sk_buff *skb) {\n"
        "    int k = 1; u64 *v = rr_hits.lookup(&k); if (v) *v += 1; return 0; }",
        {"rr_count": (SCHED_CLS, -1)})
    try:
        assert set(fds) == {"rr_count", "rr_hits"}
        for _ in range(3):
            assert prog_test_run(fds["rr_count"], packet("10.1.0.1", "10.2.0.1", 1, 2))[0] == 0
        assert PinnedMap(fds["rr_hits"]).lookup((1).to_bytes(4, "little")) == \
            (3).to_bytes(8, "little")
    finally:
        for fd in fds.values():
            os.close(fd)


def test_text_loaded_in_a_child_reports_the_compilers_output() -> None:
    with pytest.raises(LoadError) as exc:
        load_text_isolated("int rr_x(struct __sk_buff *skb) { return undefined_name; }",
                           {"rr_x": (SCHED_CLS, -1)})
    assert "undefined_name" in exc.value.log


def test_a_compile_child_that_takes_too_long_is_a_load_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bpf import loader

    monkeypatch.setattr(loader, "COMPILE_TIMEOUT", 0.01)
    with pytest.raises(LoadError) as exc:
        load_text_isolated("int rr_x(struct __sk_buff *skb) { return 0; }",
                           {"rr_x": (SCHED_CLS, -1)})
    assert "took over 0.01 s" in str(exc.value)
