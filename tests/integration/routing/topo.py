"""Two nodes on different subnets behind a router that does not know pod CIDRs, one pod
per node: network namespaces named rrt<tag>… (or a tag of the test's own), removed by
`teardown` (also after a failed build). Each node can run a RoutingReconciler against
its own namespace. With `dual`, pods are dual-stack (an IPv6 pod CIDR per node, the pod
reaching its node through fe80::1); the underlay and the router stay IPv4 only, so IPv6
crosses between nodes encapsulated or not at all.

With `underlay6` it is the other way round: the node-router links carry IPv6 only
(UNDERLAY6, no IPv4 address on them or on the router), the router forwards IPv6, and
each node's InternalIP in `snapshot` is its IPv6 underlay address; IPv4 pod traffic
crosses encapsulated in IPv6 or not at all. A node still proxy-answers its pod's ARP for
169.254.1.1 (a route to it out of a spare veth pair, gw0-gw1, stands in for the IPv4
default route it no longer has). Its namespaces skip IPv6 duplicate address detection
and `build` returns once no address is tentative. With `ipv6_only_pods` the pods have
an IPv6 address and pod CIDR only (no IPv4 at all in the nodes)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field

from bgp.fake import FakeSpeaker
from bpf.tunnel import EbpfTunnel
from controller.kernel.links import NetlinkLinks
from controller.kernel.routes import NetlinkRoutes
from controller.reconcile.loop import PassContext
from controller.reconcile.routing import RoutingReconciler, default_tunnels
from controller.store import Snapshot
from tests.unit.routing.cluster import cluster, learned_speaker

UNDERLAY = {"n1": ("10.231.1.2", "10.231.1.1"), "n2": ("10.231.2.2", "10.231.2.1")}
UNDERLAY6 = {"n1": ("fd00:231:1::2", "fd00:231:1::1"), "n2": ("fd00:231:2::2", "fd00:231:2::1")}
POD_CIDR = {"n1": "10.232.1.0/24", "n2": "10.232.2.0/24"}
POD_IP = {"n1": "10.232.1.10", "n2": "10.232.2.10"}
POD_CIDR6 = {"n1": "fd00:232:1::/64", "n2": "fd00:232:2::/64"}
POD_IP6 = {"n1": "fd00:232:1::10", "n2": "fd00:232:2::10"}
POD_GW6 = "fe80::1"


def sh(*args: str, check: bool = True) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def nsx(ns: str, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@dataclass
class Node:
    name: str
    ns: str
    pod_ns: str
    speaker: FakeSpeaker = field(default_factory=learned_speaker)
    reconciler: RoutingReconciler | None = None

    def start(self, mode: str, protocol: str, datapath: str = "auto") -> RoutingReconciler:
        self.stop()
        links = NetlinkLinks(netns=self.ns)
        self.reconciler = RoutingReconciler(
            NetlinkRoutes(netns=self.ns), links, lambda: {"tor": self.speaker},
            default_tunnels(links, datapath, netns=self.ns), mode, protocol)
        return self.reconciler

    def reconcile(self, snap: Snapshot) -> PassContext:
        assert self.reconciler is not None
        ctx = PassContext(snap, self.name)
        self.reconciler.reconcile(ctx)
        return ctx

    def stop(self) -> None:
        if self.reconciler is not None:
            self.reconciler.close()
            self.reconciler = None

    def link_stats(self, dev: str) -> tuple[int, int]:
        """(rx_packets, tx_packets) of a device in the node."""
        doc = json.loads(nsx(self.ns, "ip", "-s", "-j", "link", "show", dev))
        s = doc[0]["stats64"]
        return int(s["rx"]["packets"]), int(s["tx"]["packets"])


class Topo:
    def __init__(self, tag: str | None = None, dual: bool = False, underlay6: bool = False,
                 ipv6_only_pods: bool = False) -> None:
        self.tag = tag or f"rrt{os.getpid() % 1000000}"
        self.dual = dual
        self.underlay6 = underlay6
        self.ipv6_only_pods = ipv6_only_pods
        self.router = f"{self.tag}r"
        self.nodes = {n: Node(n, f"{self.tag}{n}", f"{self.tag}p{n[-1]}") for n in UNDERLAY}
        self.made: list[str] = []

    def address(self, node: str) -> str:
        """The node's underlay address (its InternalIP)."""
        return (UNDERLAY6 if self.underlay6 else UNDERLAY)[node][0]

    def snapshot(self, mode: str, protocol: str, underlay: str | None = None) -> Snapshot:
        """The two-node cluster; `underlay` sets its tunnel underlay (None: the default)."""
        return cluster({n: (self.address(n), self.pod_cidrs(n)) for n in UNDERLAY}, mode,
                       protocol, underlay)

    def pod_cidrs(self, node: str) -> list[str]:
        if self.ipv6_only_pods:
            return [POD_CIDR6[node]]
        return [POD_CIDR[node], POD_CIDR6[node]] if self.dual else [POD_CIDR[node]]

    def _ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.made.append(name)
        nsx(name, "ip", "link", "set", "lo", "up")

    def build(self, pod_mtu: int = 1450) -> Topo:
        try:
            self._build(pod_mtu)
        except BaseException:
            self.teardown()
            raise
        return self

    def _build(self, pod_mtu: int) -> None:
        r = self.router
        self._ns(r)
        nsx(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.underlay6:
            self._no_dad(r)
            nsx(r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for i, (name, node) in enumerate(self.nodes.items(), start=1):
            self._ns(node.ns)
            self._ns(node.pod_ns)
            n = node.ns
            nsx(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            sh("ip", "link", "add", "u0", "netns", n, "type", "veth", "peer", f"r{i}", "netns", r)
            if self.underlay6:
                ip, gw = UNDERLAY6[name]
                self._no_dad(n)
                nsx(n, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
                nsx(n, "ip", "-6", "addr", "add", f"{ip}/64", "dev", "u0", "nodad")
                nsx(r, "ip", "-6", "addr", "add", f"{gw}/64", "dev", f"r{i}", "nodad")
            else:
                ip, gw = UNDERLAY[name]
                nsx(n, "ip", "addr", "add", f"{ip}/24", "dev", "u0")
                nsx(r, "ip", "addr", "add", f"{gw}/24", "dev", f"r{i}")
            nsx(n, "ip", "link", "set", "u0", "up")
            nsx(r, "ip", "link", "set", f"r{i}", "up")
            nsx(n, "ip", "-6" if self.underlay6 else "-4", "route", "add", "default", "via", gw)
            p = node.pod_ns
            sh("ip", "link", "add", "eth0", "netns", p, "mtu", str(pod_mtu), "type", "veth",
               "peer", "pod0", "netns", n, "mtu", str(pod_mtu))
            nsx(n, "ip", "link", "set", "pod0", "up")
            nsx(p, "ip", "link", "set", "eth0", "up")
            if not self.ipv6_only_pods:
                self._pod_ipv4(node)
            if self.dual or self.ipv6_only_pods:
                self._pod_ipv6(node)
        if self.underlay6:
            self._wait_not_tentative([r, *(node.ns for node in self.nodes.values())])

    @staticmethod
    def _no_dad(ns: str) -> None:
        """Links made in ns from now on skip duplicate address detection."""
        nsx(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        nsx(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")

    @staticmethod
    def _wait_not_tentative(namespaces: list[str], timeout: float = 5.0) -> None:
        """Until no address in these namespaces is tentative: a router solicits its
        neighbors for forwarded packets from its link-local address only, and sends
        nothing while that is tentative (the first packets across would be lost)."""
        deadline = time.monotonic() + timeout
        while any(nsx(ns, "ip", "-6", "-o", "addr", "show", "tentative").strip()
                  for ns in namespaces):
            if time.monotonic() > deadline:
                raise RuntimeError(f"IPv6 addresses still tentative in {namespaces}")
            time.sleep(0.05)

    def _pod_ipv4(self, node: Node) -> None:
        """The pod's IPv4 address and default route via 169.254.1.1, proxy-answered by
        the node (which needs a route to it out of some other device for that)."""
        n, p, ip = node.ns, node.pod_ns, POD_IP[node.name]
        nsx(n, "sysctl", "-qw", "net.ipv4.conf.pod0.proxy_arp=1")
        nsx(n, "ip", "route", "add", f"{ip}/32", "dev", "pod0")
        if self.underlay6:  # no IPv4 default route through the underlay
            nsx(n, "ip", "link", "add", "gw0", "type", "veth", "peer", "gw1")
            nsx(n, "ip", "link", "set", "gw1", "up")
            nsx(n, "ip", "link", "set", "gw0", "up")
            nsx(n, "ip", "route", "add", "169.254.1.1/32", "dev", "gw0")
        nsx(p, "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
        nsx(p, "ip", "route", "add", "169.254.1.1/32", "dev", "eth0")
        nsx(p, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")

    def _pod_ipv6(self, node: Node) -> None:
        """The pod's IPv6 address and default route via the node (no DAD wait)."""
        n, p, ip6 = node.ns, node.pod_ns, POD_IP6[node.name]
        nsx(n, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        nsx(n, "ip", "-6", "addr", "add", f"{POD_GW6}/64", "dev", "pod0", "nodad")
        nsx(n, "ip", "-6", "route", "add", f"{ip6}/128", "dev", "pod0")
        nsx(p, "ip", "-6", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
        nsx(p, "ip", "-6", "route", "add", "default", "via", POD_GW6, "dev", "eth0")

    def set_pod_mtu(self, mtu: int) -> None:
        for node in self.nodes.values():
            nsx(node.pod_ns, "ip", "link", "set", "eth0", "mtu", str(mtu))
            nsx(node.ns, "ip", "link", "set", "pod0", "mtu", str(mtu))

    def router_knows_pods(self, on: bool) -> None:
        """The router routes the IPv4 pod CIDRs to their nodes: through their IPv4
        addresses, or on an IPv6 underlay through their IPv6 ones (`via inet6`, as a ToR
        installs what it learned over RFC 8950), with the IPv6 pod CIDRs too."""
        for name in self.nodes:
            verb = "replace" if on else "del"
            if not self.underlay6:
                nsx(self.router, "ip", "route", verb, POD_CIDR[name], "via",
                    UNDERLAY[name][0], check=on)
                continue
            nsx(self.router, "ip", "route", verb, POD_CIDR[name], "via", "inet6",
                UNDERLAY6[name][0], check=on)
            if self.dual:
                nsx(self.router, "ip", "-6", "route", verb, POD_CIDR6[name], "via",
                    UNDERLAY6[name][0], check=on)

    def ping(self, src: str, dst: str, count: int = 3, interval: float = 0.2,
             timeout: int = 2, v6: bool = False, size: int | None = None) -> tuple[int, int]:
        """(sent, received) from the pod on src to the pod on dst (IPv6 with v6; a
        payload of `size` bytes, never fragmented, with size)."""
        extra = ("-M", "do", "-s", str(size)) if size is not None else ()
        out = nsx(self.nodes[src].pod_ns, "ping", "-n", "-q", "-c", str(count), "-i",
                  str(interval), "-W", str(timeout), *extra,
                  POD_IP6[dst] if v6 else POD_IP[dst], check=False)
        for line in out.splitlines():
            if "packets transmitted" in line:
                parts = line.split(",")
                return int(parts[0].split()[0]), int(parts[1].split()[0])
        return count, 0

    def router_counter(self) -> dict[str, int]:
        """Packets the router forwarded: UDP 6081, UDP 8472 (either family), pod traffic
        forwarded natively (IPv4, IPv6), tunnel packets whose outer DSCP is EF; and the
        same for tunnel packets in IPv6 ("geneve6", "vxlan6", "tunnel6_ef")."""
        doc = json.loads(nsx(self.router, "nft", "-j", "list", "table", "inet", "rrt"))
        out: dict[str, int] = {}
        for item in doc["nftables"]:
            rule = item.get("rule")
            if rule:
                name = rule.get("comment", "")
                for e in rule["expr"]:
                    if "counter" in e:
                        out[name] = int(e["counter"]["packets"])
        return out

    def install_router_counters(self) -> None:
        script = """
table inet rrt {
  chain rrcount {
    type filter hook forward priority 0; policy accept;
    udp dport 6081 counter comment "geneve"
    udp dport 8472 counter comment "vxlan"
    ip saddr 10.232.0.0/16 counter comment "native"
    ip6 saddr fd00:232::/32 counter comment "native6"
    ip dscp ef udp dport { 6081, 8472 } counter comment "tunnel_ef"
    meta nfproto ipv6 udp dport 6081 counter comment "geneve6"
    meta nfproto ipv6 udp dport 8472 counter comment "vxlan6"
    ip6 dscp ef udp dport { 6081, 8472 } counter comment "tunnel6_ef"
  }
}
"""
        subprocess.run(["ip", "netns", "exec", self.router, "nft", "-f", "-"], input=script,
                       text=True, check=True, capture_output=True)

    def teardown(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()
        for name in reversed(self.made):
            sh("ip", "netns", "del", name, check=False)
        self.made.clear()


def up(topo: Topo, mode: str, protocol: str, datapath: str = "auto",
       underlay: str | None = None) -> dict[str, dict[str, str]]:
    """Start and reconcile both nodes (the cluster's tunnel underlay `underlay`, None:
    the default); returns each node's pass errors."""
    snap = topo.snapshot(mode, protocol, underlay)
    errors: dict[str, dict[str, str]] = {}
    for name, node in topo.nodes.items():
        node.start(mode, protocol, datapath)
        errors[name] = node.reconcile(snap).errors
    return errors


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Counter increases between two readings."""
    return {k: after[k] - before.get(k, 0) for k in after}


def ebpf(topo: Topo, node: str, protocol: str) -> EbpfTunnel:
    """The eBPF tunnel driver of a started node's routing reconciler."""
    r = topo.nodes[node].reconciler
    assert r is not None
    d = r._drivers[protocol]
    assert isinstance(d, EbpfTunnel)
    return d
