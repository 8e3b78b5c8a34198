"""The lab in tunnel mode (VXLAN, Geneve in eBPF; pod CIDRs not advertised) and in hybrid
mode (native while the ToR advertises a pod CIDR, the tunnel when it does not)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.lab.netns import Netns, run_cmd, wait_for
from controller.lab.runner import LabRunner
from controller.lab.show import tor_vtysh, wait_ready
from controller.lab.topology import Topology
from controller.status import read_operator

STATE = Path("/run/rackroute-lab-e2e-tunnel")


def lab_up(mode: str, protocol: str) -> tuple[LabRunner, Topology, Path]:
    for tool in ("vtysh", "gobgpd", "ping", "bpftool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed on this machine")
    r = LabRunner(STATE)
    topo = r.up(routing_mode=mode, tunnel_protocol=protocol)
    assert wait_ready(r, 90), "lab not ready"
    assert r.state is not None
    return r, topo, Path(r.state.manifests)


def vxlan_tx(ns: str) -> int:
    out = Netns(ns).ip("-s", "-j", "link", "show", "rr.vxlan").stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def ebpf_encapsulated() -> int:
    """Packets every loaded rackroute tunnel program encapsulated (all CPUs, all nodes)."""
    maps = json.loads(run_cmd(["bpftool", "-j", "map", "show", "name", "rr_tun_stats"]).stdout
                      or "[]")
    total = 0
    for m in maps:
        dump = json.loads(run_cmd(["bpftool", "-j", "map", "dump", "id", str(m["id"])]).stdout)
        for entry in dump:
            key = entry.get("key", entry.get("formatted", {}).get("key"))
            k = int(key if isinstance(key, int) else int(key[0], 16)) if key is not None else -1
            if k == 0:  # RR_TUN_ENCAP_PKTS
                for v in entry.get("values", entry.get("formatted", {}).get("values", [])):
                    val = v["value"]
                    total += val if isinstance(val, int) else int.from_bytes(
                        bytes(int(b, 16) for b in val), "little")
    return total


def ping(
    topo: Topology, src_pod: str, dst_ip: str, count: int = 5
) -> subprocess.CompletedProcess[str]:
    return Netns(topo.pod_ns(src_pod)).run(
        ["ping", "-c", str(count), "-i", "0.2", "-W", "1", dst_ip], check=False)


def pods(topo: Topology) -> tuple[str, str]:
    src = next(p.name for p in topo.pods if p.node == topo.nodes[0].name)
    dst = next(p.ip for p in topo.pods if p.node == topo.nodes[-1].name)
    return src, dst


@pytest.fixture(params=["vxlan", "geneve"])
def tunnel_lab(request: pytest.FixtureRequest) -> Iterator[tuple[str, LabRunner, Topology, Path]]:
    try:
        r, topo, mdir = lab_up("tunnel", str(request.param))
        yield str(request.param), r, topo, mdir
    finally:
        LabRunner(STATE).down()


def test_tunnel_mode_pod_to_pod_and_counters(
    tunnel_lab: tuple[str, LabRunner, Topology, Path],
) -> None:
    protocol, r, topo, mdir = tunnel_lab
    routes = tor_vtysh(r, "show ip route bgp")
    for cidrs in read_operator(mdir).pod_cidrs.values():
        for c in cidrs:
            assert str(c) not in routes  # pod CIDRs are not advertised in tunnel mode
    src, dst = pods(topo)
    # the agent wrote a CNI config with the tunnel's MTU, and the pods got it
    assert "mtu 1450" in Netns(topo.pod_ns(src)).ip("link", "show", "eth0").stdout
    n1 = topo.nodes[0].ns
    before = vxlan_tx(n1) if protocol == "vxlan" else ebpf_encapsulated()
    res = ping(topo, src, dst)
    assert res.returncode == 0, res.stdout
    after = vxlan_tx(n1) if protocol == "vxlan" else ebpf_encapsulated()
    assert after - before >= 5
    # LoadBalancer traffic through a node without the backend reaches it over the tunnel
    ip = str(read_operator(mdir).ingress["demo/web-cluster"][0])
    client = Netns(topo.client_ns)
    answers = {client.run(["curl", "-sS", "-m", "3", f"http://{ip}/"], check=False).stdout
               for _ in range(6)}
    assert all(a.startswith("pod=web-cluster-1") for a in answers), answers
    # a pod reaches the outside (the client) from its node's address: nothing outside
    # routes the pod CIDRs back in tunnel mode (RackrouteConfig masquerade: auto)
    assert "masquerade" in Netns(n1).run(["nft", "list", "table", "inet", "rackroute_nat"]
                                         ).stdout
    out = ping(topo, src, "192.168.100.10", count=3)
    assert out.returncode == 0, out.stdout


HIDE = (
    "ip prefix-list RR-HIDE seq 5 permit {cidr}",
    "route-map RR-NODES-OUT deny 10",
    " match ip address prefix-list RR-HIDE",
    "route-map RR-NODES-OUT permit 20",
)


def test_hybrid_switches_to_the_tunnel_and_back() -> None:
    try:
        r, topo, mdir = lab_up("hybrid", "vxlan")
        assert r.state is not None
        src, dst = pods(topo)
        n1 = Netns(topo.nodes[0].ns)
        cidr = ".".join(dst.split(".")[:3]) + ".0/24"
        wait_for(lambda: f"{cidr} via 10.0.0.1 " in n1.ip("route").stdout, 20, 0.2, "native")
        before = vxlan_tx(n1.name)
        assert ping(topo, src, dst).returncode == 0
        assert vxlan_tx(n1.name) == before  # native: the tunnel carried nothing

        pinger = subprocess.Popen(
            Netns(topo.pod_ns(src)).argv(["ping", "-i", "0.05", "-c", "160", "-W", "1", dst]),
            stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        frr = ["vtysh", "--vty_socket", r.state.frr_dir]
        cmds = ["configure terminal", *(c.format(cidr=cidr) for c in HIDE), "router bgp 65000",
                "address-family ipv4 unicast", "neighbor NODES route-map RR-NODES-OUT out",
                "end", "clear bgp ipv4 unicast * soft out"]
        run_cmd([*frr, *(x for c in cmds for x in ("-c", c))])
        wait_for(lambda: f"{cidr} via" in n1.ip("route").stdout
                 and "rr.vxlan" in n1.ip("route", "show", cidr).stdout, 20, 0.1, "tunnel")
        tun_before = vxlan_tx(n1.name)
        time.sleep(1.5)
        assert vxlan_tx(n1.name) > tun_before  # the pings now cross the tunnel
        cmds = ["configure terminal", "router bgp 65000", "address-family ipv4 unicast",
                "no neighbor NODES route-map RR-NODES-OUT out", "end",
                "clear bgp ipv4 unicast * soft out"]
        run_cmd([*frr, *(x for c in cmds for x in ("-c", c))])
        wait_for(lambda: f"{cidr} via 10.0.0.1 " in n1.ip("route").stdout, 20, 0.1,
                 "native again")
        out, _ = pinger.communicate(timeout=30)
        stats = [ln for ln in out.splitlines() if "packets transmitted" in ln][0]
        sent, received = int(stats.split()[0]), int(stats.split()[3])
        assert sent - received <= 2, stats  # at most the switch-over itself
        back = vxlan_tx(n1.name)
        assert ping(topo, src, dst).returncode == 0
        assert vxlan_tx(n1.name) == back  # native again
    finally:
        LabRunner(STATE).down()
