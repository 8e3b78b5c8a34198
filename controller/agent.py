"""The per-node agent: source → store → reconcile loop, plus status, metrics and wake-ups.

`rackroute agent --node NAME (--manifests DIR | --kubeconfig FILE | --in-cluster)
[--speaker gobgp|exabgp]` runs this. The loop's reconcilers run in the fixed order of
DESIGN.md; the BGP reconciler is last (it announces only what the earlier ones made
ready). With the kube source the first pass waits for every resource's first list: a
pass over half a cluster would withdraw and unprogram what it cannot see. A status thread
writes the node's BGPNodeConfig-like status whenever it changes (beside the manifests, or
as the node's BGPNodeConfig object) and refreshes the metrics; a watcher wakes the loop
when learned best paths change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgp.bfd_port import BfdPort, DaemonBfd, failed
from bgp.speaker import Speaker, logfmt
from bgp.types import IPAddress, SessionState
from controller.bgpstatus import node_status
from controller.datapath_setup import DatapathSettings
from controller.kernel.masquerade import NftMasquerade
from controller.kubenodestatus import KubeNodeStatus, network_status
from controller.kubestatus import utc_now
from controller.metrics import AgentMetrics, AgentProbes
from controller.reconcile.bgp import BGPReconciler
from controller.reconcile.loop import Loop, Reconciler
from controller.reconcile.masquerade import MasqueradeReconciler
from controller.reconcile.routing import RoutingReconciler, RoutingWhenNeeded
from controller.sources.files import FileSource
from controller.sources.kube import AGENT_KINDS, POLICY_KINDS, KubeSource, with_cilium
from controller.sources.kubeapi import KubeAPI
from controller.sources.snapcache import SnapshotCache
from controller.status import write_node
from controller.store import Store

log = logging.getLogger("rackroute.agent")


@dataclass
class AgentConfig:
    node: str
    manifests: Path | None  # None: read the API server (`api`)
    speaker: str = "gobgp"  # gobgp | exabgp
    state_dir: Path = Path("/run/rackroute")
    metrics_port: int = 0  # 0: no metrics endpoint
    resync: float = 30.0
    status_interval: float = 1.0
    poll_interval: float = 0.2
    import_routes: bool = False  # install learned routes into the kernel
    import_scope: str = "pods"  # which: inside the cluster's pod addresses, or "all"
    datapath: DatapathSettings | None = None  # eBPF service LB on this node
    cni_conf: Path | None = None  # write the node's CNI conflist here
    cni_data_dir: Path = Path("/var/lib/rackroute/cni")
    cni_policy_wait: float | None = None  # the plugin's bpf.policyWait (None: its default)
    cni_mtu: int = 1500  # the pod MTU while the node does not tunnel
    cni_network: str = "rackroute"  # the conflist's network name (the IPAM store's key)
    # pods' hostPorts: portmap chained in the conflist while it is in cni_bin_dir
    cni_host_ports: bool = True
    cni_bin_dir: Path = Path("/opt/cni/bin")
    routing_mode: str | None = None  # native|tunnel|hybrid; None: the cluster config's
    tunnel_protocol: str | None = None  # vxlan|geneve; None: the cluster config's
    tunnel_underlay: str | None = None  # auto|ipv4|ipv6; None: the cluster config's
    tunnel_datapath: str = "auto"  # VXLAN: kernel device (auto|kernel) or eBPF (ebpf)
    # with the datapath: serve services' healthCheckNodePorts on this address ("": all;
    # None: not at all), as kube-proxy does
    health_check_address: str | None = ""
    healthz_port: int = 10256  # the node's proxy health (kube-proxy's /healthz); 0: off
    extra: Sequence[Reconciler] = field(default_factory=tuple)  # datapath, before BGP
    api: KubeAPI | None = None  # the kube source, when there is no manifest directory
    secrets_namespace: str = "kube-system"  # with `api`: where peers' Secrets live
    watch_cilium: bool = False  # with `api`: read Cilium's spellings of our kinds too
    # with `api`: start from the last saved snapshot (controller/sources/snapcache.py) when
    # the API server has not answered within this many seconds (None: never)
    kube_cache_wait: float | None = 10.0
    kube_cache_max_age: float = 86400.0  # an older saved snapshot is not used


def liveness_stale(resync: float) -> float:
    """Seconds the reconcile loop may go without coming round before /healthz fails:
    three resync intervals, and never under a minute (a long pass is not a hang)."""
    return max(3 * resync, 60.0)


def speaker_factory(kind: str, state_dir: Path) -> Callable[[str], Speaker]:
    """Instance name → a new speaker of the chosen kind with its own state directory."""

    def make(instance: str) -> Speaker:
        d = state_dir / f"bgp-{instance}"
        if kind == "exabgp":
            from bgp.exabgp.adapter import ExabgpSpeaker

            return ExabgpSpeaker(d)
        from bgp.gobgp.adapter import GobgpSpeaker

        return GobgpSpeaker(d)

    if kind not in ("gobgp", "exabgp"):
        raise ValueError(f"--speaker: must be gobgp or exabgp, got {kind!r}")
    return make


class Agent:
    """Wires one node's source, store, reconcilers, status and metrics together."""

    def __init__(self, cfg: AgentConfig, factory: Callable[[str], Speaker] | None = None,
                 bfd_port: BfdPort | None = None) -> None:
        self.cfg = cfg
        self.store = Store()
        self.source: FileSource | KubeSource
        self.node_status: KubeNodeStatus | None = None
        self.cache: SnapshotCache | None = None
        self.from_cache = False  # serving the saved snapshot until the live one arrives
        if cfg.api is not None:
            kinds = AGENT_KINDS + POLICY_KINDS if cfg.datapath and cfg.datapath.network_policy \
                else AGENT_KINDS
            self.source = KubeSource(cfg.api, self.store, with_cilium(kinds, cfg.watch_cilium),
                                     cfg.secrets_namespace)
            self.node_status = KubeNodeStatus(cfg.api)
            if cfg.kube_cache_wait is not None:
                self.cache = SnapshotCache(cfg.state_dir / "kube-snapshot",
                                           max_age=cfg.kube_cache_max_age)
        else:
            assert cfg.manifests is not None, "a manifest directory or an API server"
            self.source = FileSource(cfg.manifests, self.store, cfg.poll_interval)
        self.bgp = BGPReconciler(factory or speaker_factory(cfg.speaker, cfg.state_dir))
        first: list[Reconciler] = []
        datapath: list[Reconciler] = []
        self.datapath: Any = None
        self._stops: list[Callable[[], None]] = []  # servers to stop at the end
        if cfg.datapath is not None:
            from controller.datapath_setup import start_datapath

            self.datapath, recs = start_datapath(cfg.datapath)
            datapath.extend(recs)
            if cfg.health_check_address is not None:
                datapath.append(self._health_checks(cfg, cfg.health_check_address))
        # the BFD responder runs apart from the agent, under its state dir, and is adopted
        # after a restart (an agent restart never flaps a session)
        self.bfd_port = bfd_port or DaemonBfd(cfg.state_dir / "bfd")
        # routes of its own: when told (flags), or once the RackrouteConfig asks for a
        # tunnel or direct routes (the routing reconciler is made then)
        first.append(RoutingWhenNeeded(lambda: self._routing(cfg),
                                       cfg.import_routes or cfg.routing_mode is not None))
        # pods' traffic out of the cluster from the node's address, where nothing outside
        # routes the pod CIDRs back (tunnel mode; nft runs only once that is so)
        first.append(MasqueradeReconciler(NftMasquerade, cfg.routing_mode))
        if cfg.cni_conf is not None:
            from controller.reconcile.cniconf import CniConfigReconciler

            routing = next((r for r in first if hasattr(r, "pod_mtu")), None)
            # the plugin attaches the pod programs when pods carry them, and the network
            # policy programs whenever policy is enforced
            dp = cfg.datapath
            first.append(CniConfigReconciler(
                cfg.cni_conf, cfg.cni_data_dir, dp.cni_pin_dir if dp else None,
                routing.pod_mtu if routing is not None else (lambda: None),
                underlay_mtu=cfg.cni_mtu, policy_wait=cfg.cni_policy_wait,
                pod_programs=dp.pod_programs if dp else True, network=cfg.cni_network,
                host_ports=cfg.cni_host_ports, bin_dir=cfg.cni_bin_dir))
        from controller.reconcile.bfd import BfdReconciler

        self.bfd = BfdReconciler(self.bfd_port, self._established)
        order = [*first, *datapath, *cfg.extra, self.bgp, self.bfd]
        self.loop = Loop(self.store, cfg.node, order, cfg.resync)
        self.metrics = AgentMetrics()
        # /readyz after the first pass, /healthz while the loop goes round
        self.probes = AgentProbes.for_loop(self.loop, liveness_stale(cfg.resync))
        if cfg.datapath is not None:
            from bpf import mapstat
            from controller.metrics import DatapathCollector

            pin_dir = cfg.datapath.pin_root / cfg.datapath.instance
            self.metrics.registry.register(DatapathCollector(
                cfg.node, lambda: (mapstat.map_stats(pin_dir), mapstat.filter_stats(pin_dir))))
        policy = next((r for r in datapath if r.name == "policy"), None)
        if policy is not None and cfg.datapath is not None:
            from bpf.policy import read_drops, read_stats
            from controller.metrics import PolicyCollector

            pol_pins = cfg.datapath.pin_root / cfg.datapath.instance

            def pod_drops() -> dict[str, int]:
                ids = getattr(getattr(policy, "maps", None), "last_ids", {})
                by_id = read_drops(pol_pins, ids.values())
                return {pod: by_id[i] for pod, i in ids.items() if i in by_id}

            self.metrics.registry.register(PolicyCollector(
                cfg.node, lambda: read_stats(pol_pins),
                lambda: int(getattr(policy, "endpoints", 0)), pod_drops))
        routing = next((r for r in first if hasattr(r, "tunnel_state")), None)
        if routing is not None:
            from controller.metrics import TunnelCollector

            self.metrics.registry.register(TunnelCollector(cfg.node, routing.tunnel_state))
        if isinstance(self.source, KubeSource):
            from controller.metrics import KubeSourceCollector

            source = self.source
            self.metrics.registry.register(
                KubeSourceCollector(cfg.node, lambda: source.reflectors,
                                    lambda: self.from_cache))
        self._last_status: dict[str, Any] | None = None
        self._status_error: str | None = None  # the last status write's failure

    def _health_checks(self, cfg: AgentConfig, address: str) -> Reconciler:
        """Service health check node ports, and the node's /healthz unless it is off or
        its port is taken (logged; the rest runs without it)."""
        from controller.reconcile.healthcheck import (
            HealthCheckReconciler,
            HealthServers,
            NodeHealth,
            serve_node_health,
        )

        node = NodeHealth(stale=2 * cfg.resync) if cfg.healthz_port else None
        if node is not None:
            try:
                self._stops.append(serve_node_health(node, address, cfg.healthz_port))
            except OSError as e:
                log.error(logfmt("healthz_error", port=cfg.healthz_port,
                                 msg=e.strerror or str(e)))
                node = None
        proxy = cfg.datapath.service_proxy_name if cfg.datapath else ""
        return HealthCheckReconciler(HealthServers(address), node, proxy_name=proxy)

    def _routing(self, cfg: AgentConfig) -> RoutingReconciler:
        """The routing reconciler on this node's kernel (made when first needed)."""
        from controller.kernel.links import NetlinkLinks
        from controller.kernel.routes import NetlinkRoutes
        from controller.reconcile.routing import default_tunnels

        links = NetlinkLinks()
        return RoutingReconciler(
            NetlinkRoutes(),
            links,
            self.bgp.speakers,
            default_tunnels(links, cfg.tunnel_datapath),
            cfg.routing_mode,
            cfg.tunnel_protocol,
            cfg.tunnel_underlay,
            failed_peers=lambda: failed(self.bfd_port.sessions()),
            import_learned=cfg.import_routes,
            import_scope=cfg.import_scope,
        )

    def network_status(self) -> dict[str, Any]:
        """This node's part of its NodeNetwork status: its last pass's health, and how
        other nodes reach its pods. Its problems: the pass's errors, then the EndpointSlices
        that do not parse (no operator reads them, so they are said here; the node's
        health is not theirs to spoil)."""
        last = self.loop.last
        healthy = last is not None and not last.errors
        # the routing reconciler's underlay address, while it tunnels
        ends = (getattr(r, "endpoint", None) for r in self.loop.reconcilers)
        endpoint = next((str(e) for e in ends if e is not None), None)
        problems = [f"{k}: {v}" for k, v in sorted(last.errors.items())] if last else []
        if last is not None:
            problems += ["; ".join(e.messages) for e in last.snap.errors_of("EndpointSlice")]
        return network_status(healthy, endpoint, utc_now(), problems)

    def write_status(self) -> bool:
        """Write the node status if it changed (ignoring its timestamp); refresh metrics.
        With the API server, also this node's part of its NodeNetwork status."""
        if self.node_status is not None:
            self.node_status.write_network(self.cfg.node, self.network_status())
        doc = node_status(self.cfg.node, self.bgp, bfd=self.bfd.sessions())
        self.metrics.update(doc)
        if self.node_status is None:  # the node's health beside it (the NodeNetwork's part)
            net = self.network_status()
            doc["network"] = {k: v for k, v in net.items() if k != "lastHeartbeatTime"}
        comparable = {k: v for k, v in doc.items() if k != "updated"}
        if comparable == self._last_status:
            return False
        if self.node_status is not None:
            self.node_status.write(doc, utc_now())
        else:
            assert self.cfg.manifests is not None
            write_node(self.cfg.manifests, self.cfg.node, doc)
        self._last_status = comparable  # only once written: a failed write is tried again
        return True

    def _try_write_status(self) -> None:
        """write_status, a failure logged (with its traceback once per distinct error, so
        an API server away for an hour is not a traceback a second) and never raised."""
        try:
            self.write_status()
        except Exception as e:
            if str(e) != self._status_error:
                self._status_error = str(e)
                log.warning(logfmt("status_error", node=self.cfg.node, error=str(e)),
                            exc_info=True)
            return
        if self._status_error is not None:
            self._status_error = None
            log.info(logfmt("status_written", node=self.cfg.node))

    def _status_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.cfg.status_interval):
            self._try_write_status()

    def _established(self) -> frozenset[IPAddress]:
        """The peers whose BGP session is Established (the BFD reconciler starts a
        session once its BGP session is up)."""
        out: set[IPAddress] = set()
        for sp in self.bgp.speakers().values():
            try:
                out |= {p.address for p in sp.peers() if p.state is SessionState.ESTABLISHED}
            except Exception:
                continue
        return frozenset(out)

    def _watch_best(self, stop: threading.Event) -> None:
        """Learned best-path changes are inputs too, and sessions coming up (the BFD
        reconciler waits for them): wake the loop for them."""
        up: frozenset[IPAddress] = frozenset()
        while not stop.is_set():
            woke = False
            # the speakers are asked only while a BFD session waits for its BGP session
            now_up = self._established() if self.bfd.waiting else frozenset()
            if now_up - up:
                woke = True
            up = now_up
            for sp in self.bgp.speakers().values():
                try:
                    if sp.best_changes(timeout=0):
                        woke = True
                except Exception:
                    continue
            if woke:
                self.store.poke()
            stop.wait(0.2)

    def _first_snapshot(self, stop: threading.Event) -> bool:
        """Publish the first snapshot; from the API server, wait until it is complete
        (every resource listed once), however long that takes, unless a saved snapshot
        may stand in for it meanwhile (`kube_cache_wait`). False when stopped first."""
        if isinstance(self.source, FileSource):
            self.source.poll()
            return True
        wait = self.cfg.kube_cache_wait
        if self.cache is not None and wait is not None:
            if self.source.poll(timeout=wait):
                return True
            cached = self.cache.load()
            if cached is not None:
                snap, age = cached
                self.from_cache = True
                self.store.publish(snap)
                log.warning(logfmt("kube_cache_start", age_s=round(age, 1),
                                   path=self.cache.path, services=len(snap.services),
                                   nodes=len(snap.nodes)))
                return True
        while not stop.is_set():
            if self.source.poll(timeout=5.0):
                return True
        return False

    def _cache_loop(self, stop: threading.Event) -> None:
        """Save each new complete snapshot (at most every cache interval); note when the
        live view has replaced the saved one."""
        assert self.cache is not None
        while not stop.wait(1.0):
            snap = self.store.snapshot()
            if self.from_cache and snap is not self.cache.saved:
                self.from_cache = False
                log.info(logfmt("kube_cache_replaced", revision=snap.revision))
            if not self.from_cache:
                self.cache.maybe_save(snap)

    def run(self, stop: threading.Event) -> None:
        log.info(
            logfmt(
                "agent_start",
                node=self.cfg.node,
                source=self.cfg.manifests or "kube",
                speaker=self.cfg.speaker,
            )
        )
        if self.cfg.metrics_port:
            self._stops.append(self.metrics.serve(self.cfg.metrics_port,
                                                  probes=self.probes).stop)
        threads = [
            threading.Thread(target=self.source.run, args=(stop,), name="source", daemon=True),
            threading.Thread(target=self._status_loop, args=(stop,), name="status", daemon=True),
            threading.Thread(target=self._watch_best, args=(stop,), name="best", daemon=True),
        ]
        if self.cache is not None:
            threads.append(threading.Thread(target=self._cache_loop, args=(stop,),
                                            name="kube-cache", daemon=True))
        local = next((getattr(r, "local", None) for r in self.loop.reconcilers
                      if r.name == "policy"), None)
        if local is not None and hasattr(local, "version"):
            # a new pod's record (its ADD waits on it) is an input too: a pass for it now
            from controller.cni.podrecords import watch

            threads.append(threading.Thread(target=watch, args=(local.version,
                                                                self.store.poke, stop),
                                            name="pod-records", daemon=True))
        # a BFD session's change is an input too (the routing reconciler drops a failed
        # peer's routes): a pass for it now
        from controller.cni.podrecords import watch as watch_version

        threads.append(threading.Thread(target=watch_version, args=(
            self.bfd_port.version, self.store.poke, stop), name="bfd", daemon=True))
        try:
            if not self._first_snapshot(stop):
                return
            for t in threads:
                t.start()
            self.loop.run_once()
            self._try_write_status()  # the API server may be away (a saved view)
            self.loop.run(stop)
        finally:
            stop.set()
            for t in threads:
                if t.ident is not None:
                    t.join(timeout=2)
            if isinstance(self.source, KubeSource):
                self.source.close()
            self.loop.close()
            for stop_server in self._stops:
                stop_server()
            if self.datapath is not None:
                self.datapath.close()  # programs and pinned maps stay in the kernel
            log.info(logfmt("agent_stop", node=self.cfg.node))
