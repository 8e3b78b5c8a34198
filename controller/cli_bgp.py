"""`rackroute agent` and `rackroute bgp peers|routes` (read from the agents' status files)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.bgpstatus import uptime
from controller.report import table
from controller.sources.select import add_source_args, add_watch_cilium_arg
from controller.status import read_nodes

if TYPE_CHECKING:
    from controller.datapath_setup import DatapathSettings

    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def datapath_settings(args: argparse.Namespace) -> DatapathSettings | None:
    """The agent's datapath settings from its flags (None without --datapath)."""
    from controller.datapath_setup import DatapathSettings

    if not args.datapath:
        return None
    return DatapathSettings(
        args.bpf_instance or args.node, args.uplink, Path(args.bpf_pin_root),
        socket_lb_cgroup=Path(args.socket_lb_cgroup) if args.socket_lb_cgroup else None,
        per_packet_lb=args.per_packet_lb == "on",
        host_routing=args.host_routing == "bpf",
        service_loopback4=str(args.service_loopback_ipv4),
        service_loopback6=str(args.service_loopback_ipv6),
        service_proxy_name=args.service_proxy_name,
        max_services=args.bpf_lb_max_services, max_tables=args.bpf_lb_max_tables,
        ct_size=args.bpf_ct_max, ct6_size=args.bpf_ct6_max,
        network_policy=args.network_policy,
        cni_data_dir=Path(args.cni_data_dir),
    )


def _policy_wait(text: str) -> float:
    """Seconds from 0 to 600 (the plugin's bpf.policyWait range)."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v <= 600:
        raise argparse.ArgumentTypeError(f"must be seconds from 0 to 600, got {text!r}")
    return v


def _mtu(text: str) -> int:
    """An MTU the plugin takes: 68..65535 (1280 and up with IPv6 pod CIDRs)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 68 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be an MTU from 68 to 65535, got {text!r}")
    return v


def _seconds_or_off(text: str) -> str:
    """A non-negative number of seconds, or "off"."""
    if text == "off":
        return text
    try:
        if float(text) >= 0:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"must be seconds (>= 0) or off, got {text!r}")


def cmd_agent(args: argparse.Namespace) -> int:
    from controller.agent import Agent, AgentConfig
    from controller.cli import stop_event

    if args.network_policy and not args.datapath:
        print("rackroute agent: --network-policy needs --datapath (the policy programs are "
              "part of the eBPF datapath)", file=sys.stderr)
        return 2
    if args.per_packet_lb == "off" and not (args.datapath and args.socket_lb_cgroup):
        print("rackroute agent: --per-packet-lb off needs --datapath and --socket-lb-cgroup "
              "(without them pods would reach no service)", file=sys.stderr)
        return 2
    from controller.sources.select import kube_api, secrets_namespace

    try:
        api = kube_api(args)
    except ValueError as e:
        print(f"rackroute agent: {e}", file=sys.stderr)
        return 2
    cfg = AgentConfig(
        node=args.node,
        manifests=Path(args.manifests) if args.manifests else None,
        api=api,
        secrets_namespace=secrets_namespace(args),
        watch_cilium=args.watch_cilium_crds,
        speaker=args.speaker,
        state_dir=Path(args.state_dir or f"/run/rackroute/{args.node}"),
        metrics_port=args.metrics_port,
        resync=args.resync,
        import_routes=args.import_routes is not None,
        import_scope=args.import_routes or "pods",
        routing_mode=args.routing_mode,
        cni_conf=Path(args.cni_conf) if args.cni_conf else None,
        cni_data_dir=Path(args.cni_data_dir),
        cni_policy_wait=args.cni_policy_wait,
        cni_mtu=args.cni_mtu,
        cni_network=args.cni_network_name,
        cni_host_ports=args.cni_host_ports == "on",
        cni_bin_dir=Path(args.cni_bin_dir),
        tunnel_protocol=args.tunnel_protocol,
        tunnel_underlay=args.tunnel_underlay,
        tunnel_datapath=args.tunnel_datapath,
        health_check_address=(None if args.health_check_address == "off"
                              else args.health_check_address),
        healthz_port=args.healthz_port,
        datapath=datapath_settings(args),
        kube_cache_wait=None if args.kube_cache_wait == "off" else float(args.kube_cache_wait),
        kube_cache_max_age=args.kube_cache_max_age,
    )
    if cfg.manifests is not None and not cfg.manifests.is_dir():
        print(f"rackroute agent: --manifests {cfg.manifests}: not a directory", file=sys.stderr)
        return 2
    # handlers first: a SIGTERM while the agent starts (its datapath loading) stops it
    # gracefully instead of killing it half-started
    stop = stop_event()
    Agent(cfg).run(stop)
    return 0


def _nodes(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every agent's status document: the status files, or the BGPNodeConfig objects."""
    from controller.kubenodestatus import RES, node_doc
    from controller.sources.select import kube_api

    api = kube_api(args)
    if api is None:
        docs = read_nodes(Path(args.manifests))
    else:
        items, _ = api.list(RES)
        docs = {str(i["metadata"]["name"]): node_doc(i) for i in items}
    if args.node:
        docs = {k: v for k, v in docs.items() if k == args.node}
    return docs


def peer_rows(docs: dict[str, dict[str, Any]], now: datetime) -> list[list[object]]:
    rows: list[list[object]] = []
    for node, doc in sorted(docs.items()):
        for inst in doc.get("instances", []):
            for p in inst.get("peers", []):
                fams = p.get("routeCount") or {"-": {"received": "-", "advertised": "-"}}
                for fam, c in sorted(fams.items()):
                    rows.append(
                        [
                            node,
                            inst["localASN"],
                            p["peerASN"],
                            p["peerAddress"],
                            p["state"],
                            uptime(p.get("establishedTime"), now),
                            (p.get("bfd") or {}).get("state", "-"),
                            fam,
                            c["received"],
                            c["advertised"],
                        ]
                    )
    return rows


def cmd_peers(args: argparse.Namespace) -> int:
    from controller.sources.kubeapi import ApiError

    try:
        docs = _nodes(args)
    except (ApiError, OSError, ValueError) as e:
        print(f"rackroute bgp peers: {e}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(docs, indent=2))
        return 0
    if not docs:
        where = (f"under {args.manifests}/.status" if args.manifests
                 else "in the cluster's BGPNodeConfigs")
        print(f"no agent status {where} (is an agent running?)")
        return 1
    print(
        table(
            [
                "NODE",
                "LOCAL AS",
                "PEER AS",
                "PEER ADDRESS",
                "STATE",
                "UPTIME",
                "BFD",
                "FAMILY",
                "RECEIVED",
                "ADVERTISED",
            ],
            peer_rows(docs, datetime.now(UTC)),
            indent="",
        )
    )
    for node, doc in sorted(docs.items()):
        for inst in doc.get("instances", []):
            for p in inst.get("peers", []):
                if p.get("lastError"):
                    print(f"{node}: peer {p['peerAddress']} ({inst['name']}/{p['name']}) "
                          f"not up: {p['lastError']}")
        for prob in doc.get("problems", []):
            print(f"{node}: problem: {prob}")
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    if not args.manifests:
        print("rackroute bgp routes: the per-route lists are in the agents' status files "
              "(--manifests); the cluster's BGPNodeConfigs carry the counts: "
              "rackroute bgp peers", file=sys.stderr)
        return 2
    docs = _nodes(args)
    rows: list[list[object]] = []
    for node, doc in sorted(docs.items()):
        for peer, routes in sorted((doc.get("routes") or {}).items()):
            if args.peer and peer != args.peer:
                continue
            for r in routes.get(args.direction, []):
                rows.append(
                    [
                        node,
                        peer,
                        r["prefix"],
                        r["nextHop"],
                        " ".join(map(str, r["asPath"])) or "-",
                        " ".join(r["communities"]) or "-",
                        " ".join(r["largeCommunities"]) or "-",
                        r["localPreference"] if r["localPreference"] is not None else "-",
                    ]
                )
    if args.output == "json":
        keys = ["node", "peer", "prefix", "nextHop", "asPath", "communities", "large", "localPref"]
        print(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], indent=2))
        return 0
    print(
        table(
            ["NODE", "PEER", "PREFIX", "NEXT HOP", "AS PATH", "COMMUNITIES", "LARGE", "LOCAL PREF"],
            rows,
            indent="",
        )
    )
    if args.direction == "advertised":  # and what each node holds back, with the reason
        for node, doc in sorted(docs.items()):
            for na in doc.get("notAdvertised") or []:
                print(f"{node}: not advertised to {na['peer']}: {na['subject']}: "
                      f"{na['reason']}")
    return 0


def register(sub: Sub) -> None:  # noqa: F821
    ag = sub.add_parser("agent", help="run the per-node agent")
    ag.add_argument("--node", required=True)
    add_source_args(ag)
    add_watch_cilium_arg(ag)
    ag.add_argument("--speaker", choices=("gobgp", "exabgp"), default="gobgp")
    ag.add_argument("--state-dir", help="default /run/rackroute/<node>")
    ag.add_argument("--metrics-port", type=int, default=9962, help="0 disables metrics")
    ag.add_argument("--resync", type=float, default=30.0, help="seconds between full resyncs")
    ag.add_argument(
        "--import-routes",
        nargs="?",
        const="pods",
        choices=("pods", "all"),
        help="install routes learned over BGP into the kernel (native routing): those "
             "inside the cluster's pod addresses (pods, the default), or every one (all)",
    )
    ag.add_argument("--routing-mode", choices=("native", "tunnel", "hybrid"),
                    help="override the cluster's RackrouteConfig routingMode")
    ag.add_argument("--tunnel-protocol", choices=("vxlan", "geneve"),
                    help="override the cluster's RackrouteConfig tunnelProtocol")
    ag.add_argument("--kube-cache-wait", default="10", type=_seconds_or_off,
                    help="with the API server: seconds to wait for it at start before "
                         "starting from the snapshot saved in --state-dir (the view before "
                         "a restart; replaced once the API server answers); off: wait for "
                         "the API server however long it takes (default 10)")
    ag.add_argument("--kube-cache-max-age", type=float, default=86400.0,
                    help="seconds after which a saved snapshot is too old to start from")
    ag.add_argument("--tunnel-underlay", choices=("auto", "ipv4", "ipv6"),
                    help="override the cluster's RackrouteConfig tunnelUnderlay")
    ag.add_argument("--tunnel-datapath", choices=("auto", "kernel", "ebpf"), default="auto",
                    help="VXLAN through the kernel device (auto, kernel) or in eBPF")
    ag.add_argument("--cni-conf",
                    help="write the node's CNI conflist here (e.g. "
                         "/etc/cni/net.d/10-rackroute.conflist)")
    ag.add_argument("--cni-data-dir", default="/var/lib/rackroute/cni",
                    help="the CNI plugin's address store")
    ag.add_argument("--cni-mtu", type=_mtu, default=1500, metavar="MTU",
                    help="with --cni-conf: the pod MTU while the node does not tunnel "
                         "(while it does, the tunnel device's, lower; default 1500)")
    ag.add_argument("--cni-network-name", default="rackroute", metavar="NAME",
                    help="with --cni-conf: the conflist's network name (the plugin keys its "
                         "address store by it; default rackroute)")
    ag.add_argument("--cni-host-ports", choices=("on", "off"), default="on",
                    help="with --cni-conf: chain the standard portmap CNI plugin after "
                         "rackroute-cni so pods' hostPorts work (default on; while portmap "
                         "is not in --cni-bin-dir it is left out and one warning names it)")
    ag.add_argument("--cni-bin-dir", default="/opt/cni/bin", metavar="DIR",
                    help="with --cni-conf: the runtime's CNI plugin directory, where "
                         "portmap is looked for (default /opt/cni/bin)")
    ag.add_argument("--cni-policy-wait", type=_policy_wait, metavar="SECONDS",
                    help="with --network-policy: how long the CNI plugin's ADD waits for a "
                         "new pod's policy to be programmed before refusing the pod "
                         "(0..600; 0: no wait, the pod may run unguarded until it is; "
                         "default: the plugin's, 10)")
    ag.add_argument("--datapath", action="store_true",
                    help="load the eBPF service load balancer (kube-proxy replacement)")
    ag.add_argument("--uplink", default="eth0", help="the node's uplink interface")
    ag.add_argument("--bpf-pin-root", default="/sys/fs/bpf/rackroute")
    ag.add_argument("--bpf-instance", help="pin directory name (default: the node name)")
    ag.add_argument("--socket-lb-cgroup",
                    help="cgroup v2 directory (created if missing, never a mount root) whose "
                         "processes get socket-level load balancing")
    ag.add_argument("--health-check-address", default="", metavar="ADDR|off",
                    help="with --datapath: serve each LoadBalancer service's "
                         "healthCheckNodePort (externalTrafficPolicy Local) on this address, "
                         "as kube-proxy does (default: every address; off: not at all)")
    ag.add_argument("--service-proxy-name", default="", metavar="NAME",
                    help="serve the services labelled service.kubernetes.io/service-proxy-name"
                         "=NAME (default: those without the label), as kube-proxy does")
    ag.add_argument("--healthz-port", type=int, default=10256, metavar="PORT",
                    help="with --datapath: the node's proxy health on /healthz, as kube-proxy "
                         "serves it (200 while the service datapath is programmed; 0: off)")
    ag.add_argument("--network-policy", action="store_true",
                    help="with --datapath: enforce NetworkPolicies on each pod's own "
                         "interface (the agent then also reads Pods, Namespaces and "
                         "NetworkPolicies)")
    ag.add_argument("--per-packet-lb", choices=("on", "off"), default="on",
                    help="service translation on each pod's veth too (on), or only in the "
                         "socket hooks (off: needs --socket-lb-cgroup holding every pod; "
                         "saves the per-packet programs' cost)")
    ag.add_argument("--host-routing", choices=("bpf", "kernel"), default="bpf",
                    help="who forwards packets leaving pods, service traffic the uplink "
                         "translated and packets from the network for local pods: bpf (the "
                         "programs route them with the kernel's routing table and send them "
                         "from the route's interface or into a local pod, skipping the "
                         "kernel's forwarding path and netfilter) or kernel")
    from bpf.loader import DatapathConfig

    for fam, cls, default in (("ipv4", ipaddress.IPv4Address, DatapathConfig.service_loopback4),
                              ("ipv6", ipaddress.IPv6Address, DatapathConfig.service_loopback6)):
        ag.add_argument(f"--service-loopback-{fam}", type=cls, default=cls(default),
                        metavar="ADDR",
                        help="the source a pod reaching itself through a service (hairpin) "
                             f"is given, one no pod has (default {default})")
    sizes = "; changing it recreates the pinned map, which loses its contents once"
    ag.add_argument("--bpf-lb-max-services", type=int, default=65536, metavar="N",
                    help="service entries (address, port, protocol)" + sizes)
    ag.add_argument("--bpf-lb-max-tables", type=int, default=16384, metavar="N",
                    help="Maglev tables, preallocated at ~4 KB each (16384: ~68 MB)" + sizes)
    ag.add_argument("--bpf-ct-max", type=int, default=262144, metavar="N",
                    help="IPv4 conntrack entries, two per flow" + sizes)
    ag.add_argument("--bpf-ct6-max", type=int, default=0, metavar="N",
                    help="IPv6 conntrack entries (0: a quarter of --bpf-ct-max)" + sizes)
    ag.set_defaults(func=cmd_agent)

    bgp = sub.add_parser("bgp", help="BGP sessions and routes")
    bsub = bgp.add_subparsers(dest="bgp_command", required=True)
    peers = bsub.add_parser("peers", help="sessions of every node")
    routes = bsub.add_parser("routes", help="routes advertised to / received from peers")
    routes.add_argument(
        "direction", nargs="?", choices=("advertised", "received"), default="advertised"
    )
    routes.add_argument("--peer", help="only this peer address")
    for p in (peers, routes):
        add_source_args(p)
        p.add_argument("--node")
        p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    peers.set_defaults(func=cmd_peers)
    routes.set_defaults(func=cmd_routes)
