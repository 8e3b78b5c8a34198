"""Compile the datapath with bcc, pin its maps, attach it with pyroute2.

load(isolated=True), what the agent does, compiles in a child process (bpf/compile.py)
that pins the programs and exits, then opens the pins: bcc and LLVM, about 150 MB of
memory that stays once loaded, never enter the agent's process.

Maps are pinned under <pin_root>/<instance>/ (bpffs is mounted if needed). bcc adopts
a map whose pin already exists, so a restarted agent keeps its services, conntrack and
affinity state, and the TC filters are replaced in place (same handle and priority):
established connections keep flowing across a restart. A pin whose map no longer
matches its declaration (an upgrade changed the map) is removed and the map created
fresh before any program loads (bpf.pins; logged as event=pin_recreated). A program
the verifier rejects raises LoadError carrying the verifier log.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from bpf import libbpf, pins
from bpf import maps as m
from bpf.mapstore import PinnedMap
from bpf.sync import SyncMaps

log = logging.getLogger(__name__)

SRC_DIR = Path(__file__).resolve().parent / "src"
COMPILE_TIMEOUT = 300  # seconds a compile child may take (bcc takes 1-3 s here)
DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/rackroute")
BPFFS = Path("/sys/fs/bpf")
TC_PRIO = 1
TC_HANDLE = 1
INGRESS = "ffff:fff2"
EGRESS = "ffff:fff3"
SCHED_CLS = 3
CGROUP_SOCK_ADDR = 18
SOCK_HOOKS = {  # program -> attach type (uapi enum bpf_attach_type)
    "rr_sock_connect4": 10,  # BPF_CGROUP_INET4_CONNECT
    "rr_sock_sendmsg4": 14,  # BPF_CGROUP_UDP4_SENDMSG
    "rr_sock_recvmsg4": 19,  # BPF_CGROUP_UDP4_RECVMSG
    "rr_sock_getpeername4": 29,  # BPF_CGROUP_INET4_GETPEERNAME
    "rr_sock_connect6": 11,  # BPF_CGROUP_INET6_CONNECT
    "rr_sock_sendmsg6": 15,  # BPF_CGROUP_UDP6_SENDMSG
    "rr_sock_recvmsg6": 20,  # BPF_CGROUP_UDP6_RECVMSG
    "rr_sock_getpeername6": 30,  # BPF_CGROUP_INET6_GETPEERNAME
}
PARTS = {
    "pod": ("pod.c", ("rr_pod_ingress", "rr_pod_egress", "rr_replies_mark")),
    "uplink": ("uplink.c", ("rr_uplink_ingress", "rr_uplink_egress")),
    "sock": ("sock.c", tuple(SOCK_HOOKS)),
    "policy": ("policy.c", ("rr_pol_from_pod", "rr_pol_to_pod")),
}


class LoadError(RuntimeError):
    """Compile or verification failed; log holds clang's or the verifier's output."""

    def __init__(self, what: str, log: str) -> None:
        super().__init__(f"{what}\n{log}")
        self.log = log


@dataclass(frozen=True)
class DatapathConfig:
    instance: str
    pin_root: Path = DEFAULT_PIN_ROOT
    maglev_m: int = m.DEFAULT_MAGLEV_M
    max_services: int = 65536
    max_tables: int = 16384  # Maglev tables, preallocated: about 4 KB each
    max_backends: int = 65536
    ct_size: int = 262144  # IPv4 conntrack entries (two per flow)
    ct6_size: int = 0  # IPv6 conntrack entries; 0: a quarter of ct_size
    ct_tcp_lifetime: int = 21600  # seconds a TCP flow may stay idle
    ct_close_lifetime: int = 10  # seconds a TCP flow lives on after its FIN
    ct_udp_lifetime: int = 60  # seconds a UDP flow may stay idle
    # connect() of a UDP socket translated at the socket (False: left to the per-packet
    # path, whose conntrack balances a flow anew when its backend goes away; a connected
    # socket would keep the backend connect() gave it)
    sock_udp_connect: bool = True
    # packets leaving pods, and from the uplink those translated or for a local pod,
    # forwarded by the program
    # (bpf_fib_lookup and a redirect to the next hop's interface, or into a local pod)
    # instead of by the kernel's forwarding path
    host_routing: bool = True
    # service traffic balanced per packet by the pod programs (False: the socket hooks
    # balance new flows; the pod part then loads no egress program, and its ingress
    # program balances none: it forwards, with host_routing, and keeps translating the
    # flows it balanced before)
    per_packet_lb: bool = True
    # the source a pod reaching itself through a service is given (hairpin), one per
    # family: an address the pods never have, routed by them through their default route
    service_loopback4: str = "169.254.42.1"
    service_loopback6: str = "100::42:1"
    # network policy enforced: the policy part may be loaded, and the pod part decides a
    # pod's egress to a service on the backend it picks (with per-packet LB)
    network_policy: bool = False

    @property
    def pin_dir(self) -> Path:
        return self.pin_root / self.instance


POD_EGRESS = "rr_pod_egress"


def part_programs(part: str, cfg: DatapathConfig) -> tuple[str, ...]:
    """The programs part loads under cfg. Without per-packet LB the pod part has no
    egress program: the flows the socket hooks balance need nothing on the way into a
    pod (the replies of older ones are restored where they leave their backend or on the
    uplink, as forwarding in BPF does)."""
    names = PARTS[part][1]
    if part == "pod" and not cfg.per_packet_lb:
        return tuple(n for n in names if n != POD_EGRESS)
    return names


def ensure_bpffs(root: Path = BPFFS) -> None:
    """Mount bpffs at root unless it is mounted already."""
    mounts = Path("/proc/mounts").read_text().split("\n")
    if any(len(f := ln.split()) > 2 and f[1] == str(root) and f[2] == "bpf" for ln in mounts):
        return
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], check=True)


def kernel_hz(configs: tuple[Path, ...] = (Path("/proc/config.gz"),
                                           Path(f"/boot/config-{os.uname().release}"))) -> int:
    """The running kernel's CONFIG_HZ (conntrack lifetimes are counted in its jiffies);
    1000, the largest usual value, when no config says (lifetimes then only last longer)."""
    for path in configs:
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace")
        found = re.search(r"^CONFIG_HZ=(\d+)$", text, re.M)
        if found:
            return int(found.group(1))
    return 1000


def loopback_defines(cfg: DatapathConfig) -> list[str]:
    """RR_LOOPBACK4 and RR_LOOPBACK6_0..3: the service loopback addresses as the words of
    a struct rr_addr hold them (network byte order read natively)."""
    v4 = IPv4Address(cfg.service_loopback4).packed
    v6 = IPv6Address(cfg.service_loopback6).packed
    out = [f"#define RR_LOOPBACK4 0x{int.from_bytes(v4, sys.byteorder):08x}"]
    out += [f"#define RR_LOOPBACK6_{i} 0x{int.from_bytes(v6[4 * i:4 * i + 4], sys.byteorder):08x}"
            for i in range(4)]
    return out


def inlined(entry: str) -> str:
    """A source file of src/ with its local includes inlined, each once (bcc rewrites
    map calls in the main file only, and is given no include path of ours)."""
    seen: set[Path] = set()

    def expand(path: Path) -> str:
        out = []
        for line in path.read_text().splitlines():
            mt = re.match(r'\s*#include\s+"([^"]+)"', line)
            if mt:
                inc = (path.parent / mt.group(1)).resolve()
                if not inc.exists():
                    inc = (SRC_DIR / mt.group(1)).resolve()
                if inc not in seen:
                    seen.add(inc)
                    out.append(expand(inc))
                continue
            out.append(line)
        return "\n".join(out)

    return expand(SRC_DIR / entry)


def source_text(entry: str, cfg: DatapathConfig) -> str:
    """The entry file with local includes inlined and the instance's constants defined
    in front."""
    head = [
        f'#define RR_PIN_DIR "{cfg.pin_dir}"',
        f"#define RR_MAGLEV_M {cfg.maglev_m}",
        f"#define RR_MAX_SERVICES {cfg.max_services}",
        f"#define RR_MAX_TABLES {cfg.max_tables}",
        f"#define RR_MAX_BACKENDS {cfg.max_backends}",
        f"#define RR_CT_SIZE {cfg.ct_size}",
        f"#define RR_CT6_SIZE {cfg.ct6_size or cfg.ct_size // 4}",
        f"#define RR_HZ {kernel_hz()}",
        f"#define RR_CT_TCP_LIFETIME {cfg.ct_tcp_lifetime}",
        f"#define RR_CT_CLOSE_LIFETIME {cfg.ct_close_lifetime}",
        f"#define RR_CT_UDP_LIFETIME {cfg.ct_udp_lifetime}",
        f"#define RR_SOCK_UDP_CONNECT {1 if cfg.sock_udp_connect else 0}",
        f"#define RR_HOST_ROUTING {1 if cfg.host_routing else 0}",
        f"#define RR_PER_PACKET_LB {1 if cfg.per_packet_lb else 0}",
        f"#define RR_NETWORK_POLICY {1 if cfg.network_policy else 0}",
        *loopback_defines(cfg),
    ]
    return "\n".join(head) + "\n" + inlined(entry)


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what libbcc prints to fd 2 (clang diagnostics, the verifier log)."""
    out: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def _compile(text: str) -> Any:
    """The bcc module for text (maps created or adopted, nothing loaded yet)."""
    from bcc import BPF

    with _captured_stderr() as log:
        try:
            b = BPF(text=text.encode(), cflags=["-Wno-unused-function"])
        except Exception as e:
            err: Exception | None = e
        else:
            err = None
    if err is not None:
        raise LoadError(f"compile failed: {err}", "".join(log))
    return b


def load_text(text: str, funcs: dict[str, tuple[int, int]],
              pin_dir: Path | None = None) -> tuple[Any, dict[str, int]]:
    """Compile text with bcc and load funcs ({name: (prog type, attach type or -1)}).
    Returns (bcc module, name -> prog fd); LoadError carries the compiler/verifier log.

    With pin_dir, the pins the module adopted are checked against the maps it declares
    before any program is loaded: pins that differ are removed (bpf.pins) and the text
    compiled again, so the maps are created fresh with the declared shape."""
    b = _compile(text)
    if pin_dir is not None:
        stale = pins.stale_pins(b, pin_dir)
        if stale:
            b.cleanup()
            pins.remove_stale(stale)
            b = _compile(text)
            left = pins.stale_pins(b, pin_dir)
            if left:
                b.cleanup()
                raise LoadError("pinned maps still differ from their declaration",
                                "\n".join(f"{s.name}: {s.reason}" for s in left))
    fds: dict[str, int] = {}
    for fn, (ptype, atype) in funcs.items():
        with _captured_stderr() as log:
            try:
                f = b.load_func(fn.encode(), ptype, attach_type=atype)
            except Exception as e:
                err: Exception | None = e
            else:
                err = None
        if err is not None:
            b.cleanup()
            raise LoadError(f"loading {fn} failed: {err}", "".join(log))
        fds[fn] = int(f.fd)
    return b, fds


def load_text_isolated(text: str, funcs: dict[str, tuple[int, int]]) -> dict[str, int]:
    """load_text in a child process (python -m bpf.compile --fds): bcc and LLVM never enter
    this one. Returns name -> fd for every program of funcs and every map text declares;
    the fds are this process's (close them when done; maps and programs live on while
    anything holds them). LoadError with the child's log when the load fails."""
    import socket

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with parent:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bpf.compile", "--fds", str(child.fileno()),
                 json.dumps(funcs)], input=text, capture_output=True, text=True,
                pass_fds=(child.fileno(),), timeout=COMPILE_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise LoadError(f"compiling {', '.join(funcs)} took over {COMPILE_TIMEOUT} s",
                            str(e.stderr or "")) from None
        finally:
            child.close()
        if proc.returncode != 0:
            what, _, detail = proc.stderr.partition("\n")
            raise LoadError(what or f"compile exited {proc.returncode}", detail)
        msg, fds, _, _ = socket.recv_fds(parent, 65536, 256)
    names = json.loads(msg)
    if len(names) != len(fds):
        for fd in fds:
            os.close(fd)
        raise LoadError("compile child sent a malformed reply", msg.decode(errors="replace"))
    return dict(zip(names, fds, strict=True))


def compile_part(part: str, cfg: DatapathConfig) -> tuple[Any, dict[str, int]]:
    """Compile one entry file and load its programs: (bcc module, name -> prog fd)."""
    entry, names = PARTS[part][0], part_programs(part, cfg)
    cfg.pin_dir.mkdir(parents=True, exist_ok=True)
    funcs = {n: (CGROUP_SOCK_ADDR, SOCK_HOOKS[n]) if part == "sock" else (SCHED_CLS, -1)
             for n in names}
    return load_text(source_text(entry, cfg), funcs, cfg.pin_dir)


def _ipr(netns: str | None) -> Any:
    from pyroute2 import IPRoute

    return IPRoute(netns=netns, flags=0) if netns else IPRoute()


def attach_tc(ifname: str, ingress: tuple[int, str], egress: tuple[int, str] | None,
              netns: str | None = None) -> int:
    """Attach (or replace in place) direct-action filters; returns the ifindex. egress
    None: ingress only, and a filter of ours left on egress by an earlier attach goes."""
    from pyroute2 import NetlinkError

    with _ipr(netns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise LookupError(f"no interface {ifname} in netns {netns or '(current)'}")
        ifindex = int(idx[0])
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
        for prog, parent in ((ingress, INGRESS), (egress, EGRESS)):
            if prog is None:
                with suppress(NetlinkError):  # none there
                    ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE, parent=parent,
                           prio=TC_PRIO)
                continue
            fd, name = prog
            ipr.tc("replace-filter", "bpf", ifindex, TC_HANDLE, fd=fd, name=name,
                   parent=parent, classid=1, direct_action=True, prio=TC_PRIO)
    return ifindex


def register_pod_if(pin_dir: Path, ifname: str, netns: str | None = None) -> bool:
    """Record the pod veth ifname (host side) in pin_dir's rr_pod_ifs with its MAC, so
    translated packets routed to it enter the pod directly. False when the pins predate
    that map (such programs never look for it)."""
    path = pin_dir / "rr_pod_ifs"
    if not path.exists():
        return False
    with _ipr(netns) as ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            raise LookupError(f"no interface {ifname} in netns {netns or '(current)'}")
        ifindex, mac = int(links[0]["index"]), str(links[0].get_attr("IFLA_ADDRESS"))
    pods = PinnedMap.open(str(path))
    try:
        pods.update_batch([m.pod_if_entry(ifindex, mac)])
    finally:
        pods.close()
    return True


def unregister_pod_if(pin_dir: Path, ifname: str, netns: str | None = None) -> bool:
    """Remove the pod veth ifname (host side) from pin_dir's rr_pod_ifs before the veth
    goes (the CNI plugin's DEL). False when it had no entry, no longer exists, or the
    pins predate that map."""
    import errno

    path = pin_dir / "rr_pod_ifs"
    if not path.exists():
        return False
    with _ipr(netns) as ipr:
        links = ipr.get_links(ifname=ifname) if ipr.link_lookup(ifname=ifname) else []
    if not links:
        return False
    pods = PinnedMap.open(str(path))
    try:
        pods.delete_batch([int(links[0]["index"]).to_bytes(4, "little")])
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
        return False
    finally:
        pods.close()
    return True


def detach_tc(ifname: str, netns: str | None = None) -> None:
    """Remove the clsact qdisc (and with it our filters) from ifname."""
    from pyroute2 import NetlinkError

    with _ipr(netns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if idx:
            with suppress(NetlinkError):
                ipr.tc("del", "clsact", idx[0])


def open_maps(cfg: DatapathConfig) -> SyncMaps:
    """The service maps from their pins; no compile needed (CLI, readiness checks)."""
    d = cfg.pin_dir
    vips = d / "rr_vips"  # (pinned by a datapath of this version or later)
    ranges = d / "rr_src_ranges"
    return SyncMaps(PinnedMap.open(str(d / "rr_svc")), PinnedMap.open(str(d / "rr_backend")),
                    PinnedMap.open(str(d / "rr_maglev")), cfg.maglev_m,
                    PinnedMap.open(str(vips)) if vips.exists() else None,
                    PinnedMap.open(str(ranges)) if ranges.exists() else None)


def config_json(cfg: DatapathConfig) -> str:
    """cfg as JSON (for the compile child); config_from_json reads it back."""
    return json.dumps({k: str(v) if isinstance(v, Path) else v
                       for k, v in asdict(cfg).items()})


def config_from_json(text: str) -> DatapathConfig:
    raw = json.loads(text)
    raw["pin_root"] = Path(raw["pin_root"])
    return DatapathConfig(**raw)


def remove_pins(cfg: DatapathConfig) -> None:
    """Forget an instance: unlink its pins (maps die with their last user)."""
    if cfg.pin_dir.is_dir():
        for p in cfg.pin_dir.iterdir():
            p.unlink()
        cfg.pin_dir.rmdir()


class Datapath:
    """One instance of the datapath: compiled parts, their program fds, pinned maps."""

    def __init__(self, cfg: DatapathConfig) -> None:
        self.cfg = cfg
        self._mods: dict[str, Any] = {}
        self._opened: list[int] = []  # program fds we opened from pins (isolated load)
        self.fds: dict[str, int] = {}

    def load(self, parts: tuple[str, ...] = ("pod", "uplink"),
             isolated: bool = False) -> Datapath:
        """Compile and load parts (maps created or adopted from their pins). isolated:
        in a child process that pins the programs (bpf/compile.py); this process then
        opens the pins and never loads bcc. LoadError carries the compiler's or the
        verifier's log either way."""
        if "policy" in parts and not self.cfg.network_policy:
            raise ValueError("the policy part needs network_policy in the datapath's "
                             "config (the pod part then decides egress to services)")
        ensure_bpffs(BPFFS)
        todo = [p for p in parts if p not in self._mods and not
                all(n in self.fds for n in part_programs(p, self.cfg))]
        if isolated and todo:
            self._load_isolated(tuple(todo))
            return self
        for part in todo:
            mod, fds = compile_part(part, self.cfg)
            self._mods[part] = mod
            self.fds.update(fds)
        return self

    def _load_isolated(self, parts: tuple[str, ...]) -> None:
        from bpf.progpin import prog_path

        try:
            r = subprocess.run([sys.executable, "-m", "bpf.compile", config_json(self.cfg),
                                *parts], capture_output=True, text=True,
                               timeout=COMPILE_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise LoadError(f"compiling {', '.join(parts)} took over {COMPILE_TIMEOUT} s",
                            str(e.stderr or "")) from None
        for line in r.stdout.splitlines():  # what the child logged (pins recreated)
            log.info("%s", line)
        if r.returncode != 0:
            what, _, detail = r.stderr.partition("\n")
            raise LoadError(what or f"datapath compile exited {r.returncode}", detail)
        for part in parts:
            for name in part_programs(part, self.cfg):
                fd = libbpf.obj_get(str(prog_path(self.cfg.pin_dir, name)))
                self._opened.append(fd)
                self.fds[name] = fd

    def _prog(self, name: str) -> tuple[int, str]:
        return self.fds[name], name

    def attach_pod(self, ifname: str, netns: str | None = None) -> int:
        """Host side of a pod veth: DNAT on ingress, reverse NAT on egress (without
        per-packet LB: ingress only, forwarding); recorded in rr_pod_ifs (translated
        packets for the pod enter it directly)."""
        ifindex = attach_tc(ifname, self._prog("rr_pod_ingress"),
                            self._prog(POD_EGRESS) if POD_EGRESS in self.fds else None,
                            netns)
        register_pod_if(self.cfg.pin_dir, ifname, netns)
        return ifindex

    def attach_uplink(self, ifname: str, node_addr: IPv4Address | None,
                      netns: str | None = None, node_addr6: IPv6Address | None = None) -> int:
        """The node uplink: north-south service traffic. The SNAT source for a remote
        backend under Cluster policy is node_addr (IPv4 flows) or node_addr6 (IPv6 flows);
        a family without a node address has such flows refused."""
        if node_addr is not None and node_addr.version != 4:
            raise ValueError(f"node_addr {node_addr}: not IPv4 (pass node_addr6=)")
        if node_addr6 is not None and node_addr6.version != 6:
            raise ValueError(f"node_addr6 {node_addr6}: not IPv6")
        ifindex = attach_tc(ifname, self._prog("rr_uplink_ingress"),
                            self._prog("rr_uplink_egress"), netns)
        cfgmap = PinnedMap.open(str(self.cfg.pin_dir / "rr_config"))
        try:
            val = m.Config(m.Addr() if node_addr is None else m.addr_of(node_addr),
                           m.Addr() if node_addr6 is None else m.addr_of(node_addr6),
                           ifindex, 0)
            cfgmap.update_batch([(bytes(4), bytes(val))])
        finally:
            cfgmap.close()
        return ifindex

    def attach_cgroup(self, cgroup: Path) -> None:
        """Socket-level LB for processes in cgroup (never the root cgroup)."""
        if os.path.ismount(cgroup) or not (cgroup / "cgroup.procs").exists():
            raise ValueError(f"refusing to attach to {cgroup}: not a child cgroup v2 directory")
        fd = os.open(cgroup, os.O_RDONLY)
        try:
            for name, atype in SOCK_HOOKS.items():
                libbpf.prog_attach(self.fds[name], fd, atype)
        finally:
            os.close(fd)

    def detach_cgroup(self, cgroup: Path) -> None:
        fd = os.open(cgroup, os.O_RDONLY)
        try:
            for name, atype in SOCK_HOOKS.items():
                if name in self.fds:
                    with suppress(OSError):  # already gone
                        libbpf.prog_detach(self.fds[name], fd, atype)
        finally:
            os.close(fd)

    def arm_replies(self) -> int | None:
        """Arm the reverse path's source filter (bpf/replies.py) once the programs of this
        version are attached everywhere: the number of words marked from the conntrack's
        reply entries, or None when it was armed already. Needs the pod part loaded."""
        from bpf import replies

        fd = self.fds["rr_replies_mark"]

        def mark(word: int, bits: int) -> None:
            ret, _, _ = libbpf.prog_test_run(fd, replies.mark_request(word, bits))
            if ret != 0:
                raise RuntimeError(f"rr_replies_mark refused word {word}")

        d = self.cfg.pin_dir
        opened = [PinnedMap.open(str(d / n)) for n in ("rr_replies", "rr_ct", "rr_ct6")]
        try:
            return replies.arm(opened[0], opened[1], opened[2], mark)
        finally:
            for pm in opened:
                pm.close()

    def maps(self) -> SyncMaps:
        return open_maps(self.cfg)

    def close(self) -> None:
        """Drop our references; attached programs and pinned maps stay in the kernel."""
        for mod in self._mods.values():
            mod.cleanup()
        self._mods.clear()
        for fd in self._opened:
            os.close(fd)
        self._opened.clear()
        self.fds.clear()
