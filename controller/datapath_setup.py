"""Agent start-up of the eBPF datapath: load once, attach, pin, adopt the maps.

The agent compiles and loads the programs once per start, attaches the north-south
program to the node's uplink (SNAT sources: the uplink's IPv4 address and its global
IPv6 address, whichever it has; an IPv6-only node has IPv4 flows to remote backends
refused), pins every program (so the CNI plugin attaches pod
programs from the pins without compiling), re-attaches the new programs to the pod
veths that already exist (programs are replaced in place; the pinned maps, and with
them established connections, are kept), and hands the DatapathReconciler a Syncer
that has adopted the pinned maps.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgp.speaker import logfmt
from bgp.types import IPAddress
from bpf.loader import DEFAULT_PIN_ROOT, Datapath, DatapathConfig, detach_tc
from bpf.mapstore import PinnedMap
from bpf.policy import PolicyMaps
from bpf.progpin import pin_programs
from bpf.sync import Syncer
from controller.reconcile.datapath import DatapathReconciler
from controller.reconcile.loop import Reconciler
from controller.reconcile.podifs import PodIfsReconciler

log = logging.getLogger("rackroute.datapath")

POD_VETH_PREFIX = "rr"  # host side of pod veths, as the CNI plugin names them
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20


@dataclass(frozen=True)
class DatapathSettings:
    instance: str
    uplink: str = "eth0"
    pin_root: Path = DEFAULT_PIN_ROOT
    drain: float = 2.0  # seconds an entry keeps serving after its prefix is withdrawn
    socket_lb_cgroup: Path | None = None  # a cgroup v2 directory the agent owns (never root)
    # service translation on each pod's veth (TC). Off only with socket LB whose cgroup
    # holds every pod: connect()/sendmsg() already chose the backend, so the per-packet
    # programs would only cost (Cilium likewise leaves per-packet LB out with full
    # socket LB). North-south service traffic stays on the uplink either way.
    per_packet_lb: bool = True
    # packets leaving pods, and from the uplink those translated or for a local pod, are
    # routed by the programs (bpf_fib_lookup, then sent from the route's interface or
    # into a local pod) instead of by the kernel's forwarding path, as Cilium's eBPF host
    # routing does; False ("kernel"): the kernel forwards them, through netfilter
    host_routing: bool = True
    # the source a pod reaching itself through a service is given (per-packet path), as
    # Cilium's ipv4-service-loopback-address: an address no pod has, that pods route
    # through their default route
    service_loopback4: str = DatapathConfig.service_loopback4
    service_loopback6: str = DatapathConfig.service_loopback6
    # services labelled service.kubernetes.io/service-proxy-name belong to the proxy of
    # that name: this agent serves those with this name ("": the unlabelled ones)
    service_proxy_name: str = ""
    # NetworkPolicy enforced on each pod's own interface (bpf/src/policy.c)
    network_policy: bool = False
    # the CNI plugin's data dir: its records of new pods' addresses, acknowledged once
    # their policy is programmed (controller/cni/podrecords.py); None: not read
    cni_data_dir: Path | None = None

    # map sizes (a change recreates that pinned map, losing its contents once)
    max_services: int = 65536
    max_tables: int = 16384  # Maglev tables, preallocated: ~4 KB each
    ct_size: int = 262144    # IPv4 conntrack entries, two per flow
    ct6_size: int = 0        # IPv6 conntrack entries; 0: a quarter of ct_size

    def __post_init__(self) -> None:
        if not self.per_packet_lb and self.socket_lb_cgroup is None:
            raise ValueError("per-packet LB off needs socket LB (socket_lb_cgroup): pods "
                             "would reach no service")

    @property
    def pod_programs(self) -> bool:
        """Pods' veths carry programs: with per-packet LB, or to forward in BPF (then
        the ingress program alone, per-packet LB off)."""
        return self.per_packet_lb or self.host_routing

    @property
    def cni_pin_dir(self) -> Path | None:
        """The pin dir the CNI plugin attaches new pods' programs from (its conflist's
        bpf.pinDir): whenever it has any to attach, the pod programs on the veth or the
        network policy ones on the pod's own interface (the agent attaches policy to
        the pods that exist only at start; a pod made later would go unguarded). None:
        nothing for the plugin to attach."""
        if not (self.pod_programs or self.network_policy):
            return None
        return self.pin_root / self.instance


def _uplink_ipv4(ipr: Any, ifname: str) -> ipaddress.IPv4Address | None:
    """The uplink's IPv4 address (the SNAT source of IPv4 flows), None on an IPv6-only
    node."""
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise LookupError(f"--uplink {ifname}: no such interface")
    for a in ipr.get_addr(index=idx[0], family=2):
        return ipaddress.IPv4Address(a.get_attr("IFA_ADDRESS"))
    return None


def _uplink_ipv6(ipr: Any, ifname: str) -> ipaddress.IPv6Address | None:
    """The uplink's global IPv6 address (the SNAT source of IPv6 flows), None if it has
    none: link-local and failed-DAD addresses do not count; a deprecated one only if
    there is nothing else."""
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise LookupError(f"--uplink {ifname}: no such interface")
    found: list[tuple[bool, ipaddress.IPv6Address]] = []
    for a in ipr.get_addr(index=idx[0], family=10):
        flags = a.get_attr("IFA_FLAGS") or a["flags"]
        if a["scope"] != 0 or flags & IFA_F_DADFAILED:
            continue
        found.append((bool(flags & IFA_F_DEPRECATED),
                      ipaddress.IPv6Address(a.get_attr("IFA_ADDRESS"))))
    return min(found, key=lambda f: f[0])[1] if found else None


def _is_pod_veth(link: Any) -> bool:
    """The host side of a pod's veth, as the CNI plugin names them."""
    name = str(link.get_attr("IFLA_IFNAME"))
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return kind == "veth" and name.startswith(POD_VETH_PREFIX) and len(name) == 13


def _pod_veths(ipr: Any) -> list[str]:
    return sorted(str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()
                  if _is_pod_veth(link))


def _policy_maps(pin_dir: Path) -> PolicyMaps | None:
    """The pinned policy maps, if a datapath with network policy ever pinned them."""
    if not (pin_dir / "rr_pol_eps").exists():
        return None
    node, drops = pin_dir / "rr_pol_node", pin_dir / "rr_pol_drops"
    return PolicyMaps(PinnedMap.open(str(pin_dir / "rr_pol_eps")),
                      PinnedMap.open(str(pin_dir / "rr_pol")),
                      PinnedMap.open(str(node)) if node.exists() else None,
                      PinnedMap.open(str(drops)) if drops.exists() else None)


def _close_policy(maps: PolicyMaps) -> None:
    for port in (maps.eps, maps.rules, maps.node, maps.drops):
        if isinstance(port, PinnedMap):
            port.close()


def _pod_side(ipr: Any) -> dict[int, tuple[str, int, set[str]]]:
    """A namespace's veths: ifindex -> (name, peer ifindex, MACs its neighbours have)."""
    out: dict[int, tuple[str, int, set[str]]] = {}
    for link in ipr.get_links():
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "veth":
            continue
        idx = int(link["index"])
        macs = {str(n.get_attr("NDA_LLADDR")) for n in ipr.get_neighbours(ifindex=idx)}
        out[idx] = (str(link.get_attr("IFLA_IFNAME")), int(link.get_attr("IFLA_LINK") or 0),
                    macs)
    return out


def attach_policy_to_pods(pin_dir: Path, netns_dir: Path = Path("/run/netns")) -> int:
    """Attach the pinned policy programs to the pods that exist already (the CNI plugin
    does it for new ones). A pod is found as the other end of one of this namespace's pod
    veths, in a namespace of netns_dir: its interface's peer is the veth, the veth's peer
    is it, and its gateway's neighbour entry holds the veth's MAC (what the plugin wrote),
    so no interface of anyone else's is ever touched. Returns how many were attached."""
    from pyroute2 import IPRoute

    from bpf.progpin import attach_policy_pinned

    hosts: dict[int, tuple[int, str]] = {}  # host veth index -> (its peer's index, MAC)
    with IPRoute() as ipr:
        for link in ipr.get_links():
            if _is_pod_veth(link):
                hosts[int(link["index"])] = (int(link.get_attr("IFLA_LINK") or 0),
                                             str(link.get_attr("IFLA_ADDRESS")))
    if not hosts or not netns_dir.is_dir():
        return 0
    done = 0
    for ns in sorted(p.name for p in netns_dir.iterdir()):
        try:
            with IPRoute(netns=ns, flags=0) as pr:
                side = _pod_side(pr)
        except Exception:
            continue  # not a namespace we can read: not one of our pods
        for idx, (name, peer, macs) in side.items():
            host = hosts.get(peer)
            if host is None or host[0] != idx or host[1] not in macs:
                continue
            try:
                if attach_policy_pinned(name, pin_dir, ns):
                    done += 1
            except Exception as e:
                log.warning(logfmt("policy_attach_error", netns=ns, ifname=name, error=e))
    return done


def start_datapath(s: DatapathSettings) -> tuple[Datapath, list[Reconciler]]:
    """Load (compiled in a child process: bcc never enters the agent), attach and pin;
    returns the loaded datapath and its reconcilers in pass order: the service maps',
    after the one closing connected UDP sockets of removed backends when connect() is
    translated (socket LB without per-packet LB), then the pruning of pod veths that are
    gone from rr_pod_ifs."""
    from pyroute2 import IPRoute

    parts: tuple[str, ...] = ("pod", "uplink", "sock") if s.socket_lb_cgroup \
        else ("pod", "uplink")
    if s.network_policy:
        parts += ("policy",)
    dp = Datapath(DatapathConfig(s.instance, pin_root=s.pin_root, max_services=s.max_services,
                                 max_tables=s.max_tables, ct_size=s.ct_size,
                                 ct6_size=s.ct6_size,
                                 # with per-packet LB, connected UDP is the TC path's: its
                                 # conntrack follows a backend that goes away
                                 sock_udp_connect=not s.per_packet_lb,
                                 host_routing=s.host_routing,
                                 per_packet_lb=s.per_packet_lb,
                                 service_loopback4=s.service_loopback4,
                                 service_loopback6=s.service_loopback6,
                                 network_policy=s.network_policy,
                                 )).load(parts, isolated=True)
    if s.socket_lb_cgroup is not None:
        s.socket_lb_cgroup.mkdir(parents=True, exist_ok=True)
        dp.attach_cgroup(s.socket_lb_cgroup)  # refuses a cgroup mount root
    with IPRoute() as ipr:
        addr = _uplink_ipv4(ipr, s.uplink)
        addr6 = _uplink_ipv6(ipr, s.uplink)
        pods = _pod_veths(ipr)
    if addr is None and addr6 is None:
        raise LookupError(f"--uplink {s.uplink}: has neither an IPv4 nor a global IPv6 "
                          "address (NodePorts listen there, and remote backends are "
                          "reached from it)")
    dp.attach_uplink(s.uplink, addr, node_addr6=addr6)
    pin_programs(dp)
    for veth in pods:
        if s.pod_programs:
            dp.attach_pod(veth)  # without per-packet LB: ingress only, forwarding
        else:  # nothing for them to do: service traffic is the socket hooks' alone
            detach_tc(veth)
    policy = _policy_maps(dp.cfg.pin_dir)
    guarded = 0
    if s.network_policy:
        guarded = attach_policy_to_pods(dp.cfg.pin_dir)
    elif policy is not None:  # switched off: programs still on pods let everything pass
        policy.sync({})
        _close_policy(policy)
        policy = None
    marked = dp.arm_replies()  # every program that makes reply entries now marks them
    syncer = Syncer(dp.maps())
    adopted = syncer.adopt()
    log.info(logfmt("datapath_ready", instance=s.instance, uplink=s.uplink,
                    node_addr=addr or "-",
                    node_addr6=addr6 or "-",
                    pin_dir=dp.cfg.pin_dir, pods_reattached=len(pods) if s.pod_programs else 0,
                    pods_detached=0 if s.pod_programs else len(pods), adopted=len(adopted),
                    reply_filter="armed" if marked is None else f"armed now ({marked} words)",
                    socket_lb=s.socket_lb_cgroup or "-",
                    network_policy=f"on ({guarded} pods)" if s.network_policy else "off"))
    node_addresses: list[IPAddress] = [a for a in (addr, addr6) if a is not None]
    rec = DatapathReconciler(syncer, node_addresses=node_addresses, drain=s.drain,
                             proxy_name=s.service_proxy_name)
    # entries of pod veths that went without the CNI plugin's DEL are removed
    prune = PodIfsReconciler(PinnedMap.open(str(dp.cfg.pin_dir / "rr_pod_ifs")))
    extra: list[Reconciler] = [prune]
    if policy is not None:
        from controller.cni.netsetup import host_veth_present
        from controller.cni.podrecords import PodRecord, PodRecordDir
        from controller.reconcile.policy import PolicyReconciler

        def present(r: PodRecord) -> bool:
            return host_veth_present(r.container_id, r.ifname)

        extra.append(PolicyReconciler(policy, local=PodRecordDir(s.cni_data_dir, present)
                                      if s.cni_data_dir is not None else None))
    if s.socket_lb_cgroup is None or s.per_packet_lb:
        return dp, [rec, *extra]
    # connect() of UDP sockets is translated: a socket connected to a backend that goes
    # away is closed (before the datapath in the pass: its finalize runs after)
    from controller.kernel.udpsockets import SockDiagUdpSockets
    from controller.reconcile.sockets import UdpSocketReconciler

    return dp, [UdpSocketReconciler(SockDiagUdpSockets(s.socket_lb_cgroup),
                                    syncer.programmed), rec, *extra]
