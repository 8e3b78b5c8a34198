"""`rackroute lab up|down|status|exec`: the FRR lab in network namespaces on one machine.

up: a ToR (FRR zebra + bgpd), one namespace per node running the real agent, the
operator, pods created through `rackroute-cni` exactly as a runtime would (under the
manifests' NetworkPolicies: the agents enforce them), an HTTP server in each backend
pod, and an external client behind the ToR. Everything it
creates carries the `rrl-` prefix, and every process it starts is recorded (PID and
command line) in the lab's state file, so `down` removes it all even after a crash —
and only what the lab started.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bpf.progpin import pinned_programs
from controller.lab.frr import FrrRouter
from controller.lab.leftovers import kill_leftover_speakers
from controller.lab.netns import LabError, Netns, run_cmd, veth, wait_for
from controller.lab.topology import (
    CLIENT_ADDR,
    CLIENT_ADDR6,
    POD_PORT,
    PREFIX,
    TOR_CLIENT_ADDR,
    TOR_CLIENT_ADDR6,
    TOR_UNDERLAY,
    TOR_UNDERLAY6,
    LabPod,
    Topology,
    load_topology,
)
from controller.reconcile.cniconf import plugin_conf
from controller.status import read_operator

log = logging.getLogger("rackroute.lab")

STATE_DIR = Path("/run/rackroute-lab")
PIN_ROOT = Path("/sys/fs/bpf/rackroute-lab")
# the state directory of the lab that holds the lab's names (namespaces, pins) now: a lab
# run from another state directory (the tests' e2e labs) neither takes nor removes them
OWNER = Path("/run/rackroute-lab.owner")
REPO = Path(__file__).resolve().parents[2]
DEFAULT_MANIFESTS = REPO / "examples" / "frr-lab" / "manifests"


@dataclass
class LabState:
    """What `up` created, for `down` and `status` in another process."""

    manifests: str
    speaker: str
    pids: dict[str, int] = field(default_factory=dict)  # role -> pid
    cmdlines: dict[str, str] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    frr_dir: str = ""
    pod_ns: dict[str, str] = field(default_factory=dict)

    def save(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        (d / "state.json").write_text(json.dumps(asdict(self), indent=2))

    @staticmethod
    def load(d: Path) -> LabState | None:
        try:
            return LabState(**json.loads((d / "state.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ours(pid: int, recorded: str) -> bool:
    """The PID still runs the command the lab started (not a recycled PID)."""
    return bool(recorded) and _cmdline(pid).strip() == recorded.strip()


def owner(marker: Path = OWNER) -> Path | None:
    """The state directory of the lab that is up and holds the lab's names, if any (a
    marker whose lab is gone, its state removed, names none)."""
    try:
        d = Path(marker.read_text().strip())
    except OSError:
        return None
    return d if LabState.load(d) is not None else None


class LabRunner:
    def __init__(self, state_dir: Path = STATE_DIR, marker: Path = OWNER) -> None:
        self.dir = state_dir
        self.marker = marker
        self.state: LabState | None = LabState.load(state_dir)

    def _other(self) -> Path | None:
        """Another lab's state directory, when another lab is up."""
        o = owner(self.marker)
        return o if o is not None and o.resolve() != self.dir.resolve() else None

    # ------------------------------------------------------------------ helpers
    def _spawn(self, role: str, ns: Netns | None, argv: list[str]) -> int:
        assert self.state is not None
        logf = open(self.dir / f"{role}.log", "ab")  # noqa: SIM115 (owned by the child)
        full = in_netns(ns.name, argv) if ns else argv
        p = subprocess.Popen(full, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=str(REPO), start_new_session=True)
        logf.close()
        time.sleep(0.05)
        # nsenter and `ip netns exec` exec the command: the PID stays the same
        self.state.pids[role] = p.pid
        self.state.cmdlines[role] = _cmdline(p.pid) or " ".join(full)
        self.state.save(self.dir)
        return p.pid

    def _rackroute(self) -> list[str]:
        return [sys.executable, "-m", "controller.cli"]

    # ------------------------------------------------------------------ up
    def up(self, manifests: Path = DEFAULT_MANIFESTS, speaker: str = "gobgp",
           routing_mode: str | None = None, tunnel_protocol: str | None = None) -> Topology:
        other = self._other()
        if other is not None:
            raise LabError(f"another lab is up (state in {other}): `rackroute lab down "
                           f"--state-dir {other}` first (`make lab-down` for make lab's)")
        if self.state is not None or any(n.startswith(PREFIX) for n in _netns_names()):
            self.down()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(f"{self.dir}\n")
        mdir = self.dir / "manifests"
        shutil.copytree(manifests, mdir, ignore=shutil.ignore_patterns(".status"))
        if routing_mode or tunnel_protocol:
            set_routing(mdir, routing_mode, tunnel_protocol)
        topo = load_topology(mdir)
        self.state = LabState(str(mdir), speaker)
        self.state.save(self.dir)
        try:
            self._build(topo, mdir, speaker)
        except BaseException:
            log.error("event=lab_up_failed; logs in %s", self.dir)
            raise
        return topo

    def _netns(self, name: str) -> Netns:
        assert self.state is not None
        ns = Netns(name)
        if ns.exists():
            ns.delete()
        ns.create()
        self.state.namespaces.append(name)
        self.state.save(self.dir)
        return ns

    def _build(self, topo: Topology, mdir: Path, speaker: str) -> None:
        assert self.state is not None
        tor = self._netns(topo.tor_ns)
        tor.add_bridge("br0")
        tor.add_address("br0", TOR_UNDERLAY)
        tor.sysctl("net.ipv4.ip_forward", "1")
        # nodes share the ToR's segment: no ICMP redirects, so routed traffic keeps
        # crossing the ToR as it would on a routed fabric with a link per node
        for key in ("all", "default", "br0"):
            tor.sysctl(f"net.ipv4.conf.{key}.send_redirects", "0")
        client = self._netns(topo.client_ns)
        veth(client, "eth0", tor, "ext0")
        client.add_address("eth0", CLIENT_ADDR)
        tor.add_address("ext0", TOR_CLIENT_ADDR)
        client.add_route("default", via=TOR_CLIENT_ADDR.split("/")[0])
        if topo.dual_stack:  # the same underlay and client segment in IPv6
            tor.add_address("br0", TOR_UNDERLAY6)
            tor.add_address("ext0", TOR_CLIENT_ADDR6)
            tor.sysctl("net.ipv6.conf.all.forwarding", "1")
            client.add_address("eth0", CLIENT_ADDR6)
            client.add_route("::/0", via=TOR_CLIENT_ADDR6.split("/")[0])
        for n in topo.nodes:
            ns = self._netns(n.ns)
            veth(ns, "eth0", tor, n.tor_port, master="br0")
            ns.add_address("eth0", f"{n.address}/24")
            ns.add_route("default", via=TOR_UNDERLAY.split("/")[0])
            ns.sysctl("net.ipv4.ip_forward", "1")
            ns.sysctl("net.ipv4.conf.all.accept_redirects", "0")
            if n.address6:
                ns.add_address("eth0", f"{n.address6}/64")
                ns.add_route("::/0", via=TOR_UNDERLAY6.split("/")[0])
                ns.sysctl("net.ipv6.conf.all.forwarding", "1")
                ns.sysctl("net.ipv6.conf.all.accept_redirects", "0")
        # the ToR
        frr = FrrRouter(tor, topo.tor_bgp(), bfd=topo.bfd)
        self.state.frr_dir = str(frr.workdir)
        self.state.save(self.dir)
        frr.start()
        for d, pid in frr.pids().items():
            self.state.pids[f"frr-{d}"] = pid
            self.state.cmdlines[f"frr-{d}"] = _cmdline(pid)
        self.state.save(self.dir)
        # the operator (one writer), then wait for the allocations
        self._spawn("operator", None, [*self._rackroute(), "operator", "--manifests", str(mdir),
                                       "--metrics-port", "0"])
        wait_for(lambda: len(read_operator(mdir).pod_cidrs) == len(topo.nodes), 30, 0.1,
                 "operator: pod CIDRs")
        # one agent per node, inside the node's namespace
        for n in topo.nodes:
            self._spawn(f"agent-{n.name}", Netns(n.ns), [
                *self._rackroute(), "agent", "--node", n.name, "--manifests", str(mdir),
                "--speaker", speaker, "--state-dir", str(self.dir / "state" / n.name),
                "--import-routes", "--resync", "10", "--metrics-port", "0",
                "--datapath", "--uplink", "eth0", "--bpf-pin-root", str(PIN_ROOT),
                "--network-policy", "--cni-conf", str(self.conflist(n.name)),
                "--cni-data-dir", str(self.dir / "cni" / n.name),
            ])
        for n in topo.nodes:  # pods need the pinned programs of their node's datapath
            wait_for(lambda n=n: pinned_programs(PIN_ROOT / n.name)  # type: ignore[misc]
                     and self.conflist(n.name).exists(), 90, 0.2,
                     f"datapath and CNI config of {n.name} (log: {self.dir}/agent-{n.name}.log)")
        # pods, through the CNI plugin, and their HTTP servers
        for i, pod in enumerate(topo.pods):
            pns = self._netns(pod.ns(i))
            self.state.pod_ns[pod.name] = pns.name
            self._cni_add(topo, pod, pns)
            self._spawn(f"pod-{pod.name}", pns, [
                sys.executable, "-m", "controller.lab.podserver", "--name", pod.name,
                "--node", pod.node, "--port", str(POD_PORT),
            ])
        self.state.save(self.dir)

    def conflist(self, node: str) -> Path:
        """Where the node's agent writes its CNI config (a runtime's /etc/cni/net.d)."""
        return self.dir / "cni" / "net.d" / f"{node}.conflist"

    def cni_conf(self, node: str) -> dict[str, Any]:
        """The network config a runtime would hand the plugin, from the agent's conflist."""
        return plugin_conf(json.loads(self.conflist(node).read_text()))

    def _cni_add(self, topo: Topology, lab_pod: LabPod, pns: Netns) -> dict[str, Any]:
        """ADD as a runtime calls it; under network policy it returns once the node's
        agent has the pod's policy in place (controller/cni/podrecords.py)."""
        pod, node, ips = lab_pod.name, lab_pod.node, lab_pod.ips
        env = dict(os.environ)
        env.update({
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": f"lab-{pod}",
            "CNI_NETNS": f"/run/netns/{pns.name}",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={lab_pod.namespace};"
                        f"K8S_POD_NAME={pod};IP={','.join(ips)}",
            "CNI_PATH": str(Path(sys.executable).parent),
        })
        cni = str(Path(sys.executable).parent / "rackroute-cni")
        argv = in_netns(topo.node(node).ns, [cni])
        res = subprocess.run(argv, input=json.dumps(self.cni_conf(node)), env=env,
                             capture_output=True, text=True, timeout=30, check=False)
        if res.returncode != 0:
            raise LabError(f"CNI ADD {pod} on {node} failed: {res.stdout.strip()} "
                           f"{res.stderr.strip()}")
        out: dict[str, Any] = json.loads(res.stdout)
        got = [i["address"].split("/")[0] for i in out.get("ips", [])]
        if not set(ips) <= set(got):
            raise LabError(f"CNI ADD {pod}: asked for {', '.join(ips)}, got {got}")
        return out

    # ------------------------------------------------------------------ down
    def down(self) -> list[str]:
        """Stop what the lab started and delete its namespaces; safe to repeat. While
        another lab is up, only this one's own processes and state go."""
        done: list[str] = []
        st = self.state
        other = self._other()
        if st is not None:
            for role, pid in sorted(st.pids.items()):
                if _ours(pid, st.cmdlines.get(role, "")):
                    try:
                        os.kill(pid, signal.SIGTERM)
                        done.append(f"stopped {role} (pid {pid})")
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 10
            for role, pid in st.pids.items():
                while _ours(pid, st.cmdlines.get(role, "")) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _ours(pid, st.cmdlines.get(role, "")):
                    os.kill(pid, signal.SIGKILL)
            for pid in kill_leftover_speakers(self.dir / "state"):
                done.append(f"stopped a speaker left behind (pid {pid})")
            if st.frr_dir:
                shutil.rmtree(st.frr_dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state = None
        if other is not None:
            done.append(f"left the names of the lab up in {other} alone")
            return done
        if PIN_ROOT.is_dir():  # the pins only; maps and programs go with their last user
            shutil.rmtree(PIN_ROOT, ignore_errors=True)
            done.append(f"removed pins {PIN_ROOT}")
        for name in sorted(_netns_names()):
            if name.startswith(PREFIX):
                Netns(name).delete()
                done.append(f"deleted netns {name}")
        self.marker.unlink(missing_ok=True)
        return done

    # ------------------------------------------------------------------ status / exec
    def status(self) -> dict[str, Any]:
        st = self.state
        if st is None:
            return {"running": False}
        procs = {role: ("running" if _ours(pid, st.cmdlines.get(role, "")) else "dead")
                 for role, pid in sorted(st.pids.items())}
        return {"running": True, "manifests": st.manifests, "speaker": st.speaker,
                "processes": procs,
                "namespaces": sorted(n for n in _netns_names() if n.startswith(PREFIX))}

    def namespace_of(self, name: str) -> str:
        """A node, pod, `tor` or `client` name → its namespace."""
        st = self.state
        if st is None:
            raise LabError("the lab is not up (rackroute lab up)")
        if name in st.pod_ns:
            return st.pod_ns[name]
        topo = load_topology(Path(st.manifests))
        if name in ("tor", "client"):
            return topo.tor_ns if name == "tor" else topo.client_ns
        try:
            return topo.node(name).ns
        except StopIteration:
            raise LabError(f"no lab node, pod, tor or client named {name!r}") from None

    def exec(self, name: str, argv: list[str]) -> int:
        return subprocess.call(Netns(self.namespace_of(name)).argv(argv))


def set_routing(mdir: Path, mode: str | None, protocol: str | None) -> None:
    """Rewrite the lab's RackrouteConfig; in tunnel mode stop advertising pod CIDRs."""
    for f in sorted(mdir.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        changed = False
        for d in docs:
            if d.get("kind") == "RackrouteConfig":
                spec = d.setdefault("spec", {})
                if mode:
                    spec["routingMode"] = mode
                if protocol:
                    spec["tunnelProtocol"] = protocol
                changed = True
            if d.get("kind") == "BGPAdvertisement" and mode == "tunnel":
                advs = d.get("spec", {}).get("advertisements", [])
                d["spec"]["advertisements"] = [
                    a for a in advs if a.get("advertisementType") != "PodCIDR"]
                changed = True
        if changed:
            f.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def in_netns(ns: str, argv: list[str]) -> list[str]:
    """`argv` run in network namespace `ns` only.

    Unlike `ip netns exec`, nsenter keeps the mount namespace, so /sys/fs/bpf (the pinned
    maps and programs the agents and the CNI plugin share) stays the host's.
    """
    return ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]


def _netns_names() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except FileNotFoundError:
        return []


__all__ = ["LabRunner", "run_cmd"]
