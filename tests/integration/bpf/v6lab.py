"""IPv6 bench: two nodes joined by a routed underlay (a ToR namespace), pods on fd…
addresses, an external client behind the ToR. Node 1 runs the datapath with IPv6 services
(a ClusterIP, Local and Cluster LoadBalancer IPs, a Cluster NodePort on its uplink address
whose only backend is on node 2); node 2 runs the datapath too, with no services.
Namespaces are rrx6…; everything (namespaces, servers, pins) is removed by `build`'s
exit even when a step fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path

from bpf.loader import Datapath, DatapathConfig
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey

from .netlab import ECHO, Lab, nsx, sh

VIP = "fd00:96::10"                       # ClusterIP: b61, b62
LB_VIP = "fd00:96:100::10"                # LoadBalancer, Local: b61, b62
LB_CLUSTER = "fd00:96:100::20"            # LoadBalancer, Cluster: b63 on node 2
NODE1_UP, NODE2_UP, EXT_UP = "fd00:250:1::2", "fd00:250:2::2", "fd00:250:3::2"
NP_CLUSTER = 30090                        # NodePort on NODE1_UP, Cluster: b63 on node 2
PODS = {"c6": ("n1", "fd00:201::10"), "b61": ("n1", "fd00:201::11"),
        "b62": ("n1", "fd00:201::12"), "b63": ("n2", "fd00:202::21")}
NODE_PREFIX = {"n1": "fd00:201::/64", "n2": "fd00:202::/64"}
PORT = 8080


@dataclass
class Bench6:
    lab: Lab
    node: str    # node 1's namespace (the one with services)
    node2: str
    ext: str
    client: str  # c6's namespace
    dp: Datapath  # node 1's datapath
    backends: dict[str, str]  # local backends of the ClusterIP: name -> address
    pod_ns: dict[str, str] = field(default_factory=dict)


def _ns(lab: Lab, short: str) -> str:
    name = f"rrx6{short}{lab.tag}"[:15]
    sh("ip", "netns", "add", name)
    lab.namespaces.append(name)
    nsx(name, "ip", "link", "set", "lo", "up")
    return name


def _addr(ns: str, ifname: str, cidr: str) -> None:
    nsx(ns, "ip", "-6", "addr", "add", cidr, "dev", ifname, "nodad")


def _link(a: str, a_if: str, a_ip: str, b: str, b_if: str, b_ip: str) -> None:
    sh("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", b_if, "netns", b)
    for ns, ifn, ip in ((a, a_if, a_ip), (b, b_if, b_ip)):
        _addr(ns, ifn, ip)
        nsx(ns, "ip", "link", "set", ifn, "up")


def _pod(lab: Lab, node: str, name: str, ip: str) -> tuple[str, str]:
    ns = _ns(lab, name)
    host_if = f"rrx6{name}h"
    sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", host_if,
       "netns", node)
    _addr(ns, "eth0", f"{ip}/128")
    nsx(ns, "ip", "link", "set", "eth0", "up")
    nsx(node, "ip", "link", "set", host_if, "up")
    _addr(node, host_if, "fe80::1/64")
    nsx(ns, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    nsx(node, "ip", "-6", "route", "add", f"{ip}/128", "dev", host_if)
    return ns, host_if


def _serve6(lab: Lab, ns: str, name: str) -> None:
    """The echo server on IPv6 inside ns, stopped by lab.teardown()."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(ECHO), name,
                          str(PORT), "6"], stdout=subprocess.PIPE, text=True)
    lab.procs.append(p)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "listening":
        raise RuntimeError(f"server in {ns} did not start")


def _table() -> dict[ServiceKey, Service]:
    def be(*names: str) -> tuple[Backend, ...]:
        return tuple(Backend(IPv6Address(PODS[n][1]), PORT, local=PODS[n][0] == "n1")
                     for n in names)

    def k(vip: str, port: int, proto: Proto) -> ServiceKey:
        return ServiceKey(IPv6Address(vip), port, proto)

    table = {}
    for proto in (Proto.TCP, Proto.UDP):
        table[k(VIP, 80, proto)] = Service(be("b61", "b62"), name="v6/web")
        table[k(LB_VIP, 80, proto)] = Service(be("b61", "b62"), local_only=True,
                                              external=True, name="v6/lb")
        table[k(LB_CLUSTER, 80, proto)] = Service(be("b63"), external=True,
                                                  name="v6/lb-cluster")
        table[k(NODE1_UP, NP_CLUSTER, proto)] = Service(be("b63"), external=True,
                                                        nodeport=True, name="v6/np-cluster")
    return table


@contextmanager
def build(tag: str, pin_root: Path) -> Iterator[Bench6]:
    lab = Lab(tag)
    dps: list[Datapath] = []
    try:
        tor, n1, n2, ext = (_ns(lab, s) for s in ("T", "N1", "N2", "E"))
        for ns in (tor, n1, n2):
            nsx(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        _link(tor, "tor1", "fd00:250:1::1/64", n1, "uplink", f"{NODE1_UP}/64")
        _link(tor, "tor2", "fd00:250:2::1/64", n2, "uplink", f"{NODE2_UP}/64")
        _link(tor, "tor3", "fd00:250:3::1/64", ext, "eth0", f"{EXT_UP}/64")
        nsx(n1, "ip", "-6", "route", "add", "default", "via", "fd00:250:1::1")
        nsx(n2, "ip", "-6", "route", "add", "default", "via", "fd00:250:2::1")
        nsx(ext, "ip", "-6", "route", "add", "default", "via", "fd00:250:3::1")
        nsx(tor, "ip", "-6", "route", "add", NODE_PREFIX["n1"], "via", NODE1_UP)
        nsx(tor, "ip", "-6", "route", "add", NODE_PREFIX["n2"], "via", NODE2_UP)
        nsx(tor, "ip", "-6", "route", "add", "fd00:96:100::/64", "via", NODE1_UP)
        nodes = {"n1": n1, "n2": n2}
        pod_ns: dict[str, str] = {}
        host_ifs: dict[str, tuple[str, str]] = {}
        for name, (node, ip) in PODS.items():
            pod_ns[name], host_if = _pod(lab, nodes[node], name, ip)
            host_ifs[name] = (node, host_if)
        for name in ("b61", "b62", "b63"):
            _serve6(lab, pod_ns[name], name)
        dp1 = Datapath(DatapathConfig("v6n1", pin_root=pin_root)).load(("pod", "uplink"))
        dps.append(dp1)
        dp2 = Datapath(DatapathConfig("v6n2", pin_root=pin_root)).load(("pod", "uplink"))
        dps.append(dp2)
        for node, host_if in host_ifs.values():
            (dp1 if node == "n1" else dp2).attach_pod(host_if, nodes[node])
        # IPv6 only: no IPv4 node address, the IPv6 one is the SNAT source
        dp1.attach_uplink("uplink", None, n1, node_addr6=IPv6Address(NODE1_UP))
        dp2.attach_uplink("uplink", None, n2, node_addr6=IPv6Address(NODE2_UP))
        dp1.arm_replies()
        dp2.arm_replies()
        table = _table()
        res = Syncer(dp1.maps()).sync(table)
        assert not res.errors, res.errors
        assert res.programmed == frozenset(table)
        yield Bench6(lab, n1, n2, ext, pod_ns["c6"], dp1,
                     {n: PODS[n][1] for n in ("b61", "b62")}, pod_ns)
    finally:
        for dp in dps:
            dp.close()
        lab.teardown()
        shutil.rmtree(pin_root, ignore_errors=True)
