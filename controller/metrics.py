"""Prometheus metrics of the agent: BGP session state and route counts, reconcile passes,
(with the datapath) the pinned maps' entries against their capacity and the address
filters' state, read from the kernel when scraped, at most every `min_interval` seconds
(a full conntrack walk is not free), and the tunnel in use with its counters. The same
HTTP server answers the agent's own probes, /readyz and /healthz (AgentProbes)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from controller.reconcile.loop import Loop

STATES = ("idle", "connect", "active", "opensent", "openconfirm", "established", "unknown")


class AgentMetrics:
    """Gauges refreshed from the node status document."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["node", "instance", "peer", "peer_address"]
        self.session = Gauge(
            "rackroute_bgp_session_established",
            "1 when the BGP session is Established",
            labels,
            registry=self.registry,
        )
        self.bfd = Gauge(
            "rackroute_bfd_session_up",
            "1 while the peer's BFD session is Up (peers whose config enables BFD)",
            labels,
            registry=self.registry,
        )
        self.state = Gauge(
            "rackroute_bgp_session_state",
            "1 for the session's current FSM state",
            [*labels, "state"],
            registry=self.registry,
        )
        self.received = Gauge(
            "rackroute_bgp_routes_received",
            "Routes received from a peer",
            [*labels, "family"],
            registry=self.registry,
        )
        self.advertised = Gauge(
            "rackroute_bgp_routes_advertised",
            "Routes advertised to a peer",
            [*labels, "family"],
            registry=self.registry,
        )
        self.held = Gauge(
            "rackroute_bgp_paths_held",
            "Paths held back until the datapath is programmed",
            ["node", "instance"],
            registry=self.registry,
        )
        self.passes = Counter(
            "rackroute_reconcile_passes", "Reconcile passes run", ["node"], registry=self.registry
        )
        self.errors = Counter(
            "rackroute_reconcile_errors",
            "Reconciler failures",
            ["node", "reconciler"],
            registry=self.registry,
        )

    def update(self, doc: dict[str, Any]) -> None:
        node = doc["node"]
        for g in (self.session, self.state, self.received, self.advertised, self.held,
                  self.bfd):
            g.clear()
        for inst in doc["instances"]:
            self.held.labels(node, inst["name"]).set(len(inst["heldPaths"]))
            for p in inst["peers"]:
                lab = (node, inst["name"], p["name"], p["peerAddress"])
                self.session.labels(*lab).set(1 if p["state"] == "established" else 0)
                if p.get("bfd"):
                    self.bfd.labels(*lab).set(1 if p["bfd"]["state"] == "up" else 0)
                for s in STATES:
                    self.state.labels(*lab, s).set(1 if p["state"] == s else 0)
                for fam, c in p["routeCount"].items():
                    self.received.labels(*lab, fam).set(c["received"])
                    self.advertised.labels(*lab, fam).set(c["advertised"])

    def serve(self, port: int, addr: str = "0.0.0.0",
              probes: AgentProbes | None = None) -> MetricsServer:
        """Serve /metrics (and with probes /readyz and /healthz) on addr:port (0: any
        free port) from a daemon thread; the returned handle says the port and stops."""
        return serve_http(addr, port, probe_app(make_wsgi_app(self.registry), probes))


# the agent's probes -------------------------------------------------------------------

Clock = Callable[[], float]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class AgentProbes:
    """The agent's own readiness and liveness, for the kubelet's probes.

    /readyz answers 200 once the agent's first full reconcile pass has completed (every
    reconciler ran once over a complete view of the cluster: routes, the datapath, the
    CNI config and BGP programmed as far as they could be), 503 before. From then on it
    keeps answering 200, whatever later passes report: readiness gates the DaemonSet's
    rolling update and the pod's Ready condition, and a transient problem (an API server
    away for a minute, a peer down, one reconciler failing once) must not flap them; no
    traffic depends on the agent pod being Ready (it runs on the host network and serves
    nothing through a Service but its metrics), and a pass's errors are told where they
    are acted on: the node's NodeNetwork status and rackroute_reconcile_errors.

    /healthz answers 200 while the main loop is alive: before it starts (the agent may
    wait for the API server's first complete list however long it takes; a restart would
    not shorten that), then while the loop went round within `stale` seconds (it wakes at
    least twice a second, and a pass marks it too). A loop stuck longer (a reconciler
    hung) answers 503, and the kubelet restarts the agent."""

    def __init__(self, ready: Callable[[], bool], last_alive: Callable[[], float | None],
                 stale: float, clock: Clock = time.monotonic) -> None:
        self._ready_now, self.last_alive, self.stale, self.clock = (
            ready, last_alive, stale, clock)
        self._ready = False

    @classmethod
    def for_loop(cls, loop: Loop, stale: float, clock: Clock = time.monotonic
                 ) -> AgentProbes:
        """Probes of a controller.reconcile.loop.Loop: ready after its first pass, alive
        while its `alive_at` is recent."""
        return cls(lambda: loop.passes > 0, lambda: loop.alive_at, stale, clock)

    def ready(self) -> bool:
        """True from the first completed pass on (latched: see the class)."""
        if not self._ready and self._ready_now():
            self._ready = True
        return self._ready

    def alive(self) -> bool:
        """True unless the loop, once started, has not gone round for `stale` seconds."""
        at = self.last_alive()
        return at is None or self.clock() - at <= self.stale


def _probe_answer(ok: bool, what: str) -> tuple[str, bytes]:
    return ("200 OK", b"ok\n") if ok else ("503 Service Unavailable",
                                           f"{what}\n".encode())


def probe_app(metrics: WsgiApp, probes: AgentProbes | None) -> WsgiApp:
    """A WSGI app answering /readyz and /healthz from probes (when given), and anything
    else from metrics (the Prometheus exposition)."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if probes is None or path not in ("/readyz", "/healthz"):
            return metrics(environ, start_response)
        status, body = (_probe_answer(probes.ready(), "no reconcile pass completed yet")
                        if path == "/readyz" else
                        _probe_answer(probes.alive(), "the reconcile loop is stuck"))
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
        return [body]

    return app


class _Quiet(WSGIRequestHandler):
    """Scrapes and probes come every few seconds: not logged."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Not logged (see the class)."""


class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class MetricsServer:
    """A running metrics server: its port (the one bound, with port 0) and stop."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)


def serve_http(addr: str, port: int, app: WsgiApp) -> MetricsServer:
    """Serve app on addr:port (an IPv6 addr: an IPv6 socket) from a daemon thread."""

    class Server(_Threading):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    httpd = make_server(addr, port, app, Server, handler_class=_Quiet)
    t = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
    t.start()
    return MetricsServer(httpd, t)


MapStats = tuple[list[Any], list[Any]]  # (bpf.mapstat.MapStat list, FilterStat list)


class DatapathCollector:
    """rackroute_datapath_map_{entries,capacity,memory_bytes}{map} and
    rackroute_datapath_filter_armed{filter}, from `read()` (bpf.mapstat on the pin dir),
    cached for min_interval seconds between scrapes."""

    def __init__(self, node: str, read: Callable[[], MapStats], min_interval: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node, self.read, self.min_interval, self.clock = node, read, min_interval, clock
        self._cached: MapStats | None = None
        self._at = 0.0
        self._lock = threading.Lock()
        self.reads = 0

    def _stats(self) -> MapStats:
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._at >= self.min_interval:
                self._cached, self._at = self.read(), now
                self.reads += 1
            return self._cached

    def collect(self) -> Iterator[Metric]:
        try:
            maps, filters = self._stats()
        except OSError:
            return  # the pins are gone (an agent restarting): nothing to say
        fams = {
            "entries": GaugeMetricFamily("rackroute_datapath_map_entries",
                                         "Entries in use in a pinned datapath map",
                                         labels=["node", "map"]),
            "capacity": GaugeMetricFamily("rackroute_datapath_map_capacity",
                                          "Capacity (max entries) of a pinned datapath map",
                                          labels=["node", "map"]),
            "memory": GaugeMetricFamily("rackroute_datapath_map_memory_bytes",
                                        "Kernel memory a pinned datapath map holds",
                                        labels=["node", "map"]),
        }
        for m in maps:
            fams["entries"].add_metric([self.node, m.name], m.entries)
            fams["capacity"].add_metric([self.node, m.name], m.max_entries)
            fams["memory"].add_metric([self.node, m.name], m.memlock)
        armed = GaugeMetricFamily("rackroute_datapath_filter_armed",
                                  "1 when an address filter is armed (packets elsewhere skip "
                                  "the lookups)", labels=["node", "filter"])
        for f in filters:
            armed.add_metric([self.node, f.name], 1 if f.armed else 0)
        yield from fams.values()
        yield armed


class PolicyCollector:
    """Network policy at work: `rackroute_policy_packets_total{verdict}` (passed: of a flow
    let pass before, or its reply; dropped; new: a flow a decision let pass), from the
    programs' counters, `rackroute_policy_pod_dropped_total{pod}` (what was refused for
    each pod under policy), and `rackroute_policy_endpoints` (this node's pods under policy
    after the last pass). Read at scrape time."""

    def __init__(self, node: str, read: Callable[[], Mapping[str, int]],
                 endpoints: Callable[[], int],
                 drops: Callable[[], Mapping[str, int]] = dict) -> None:
        self.node, self.read, self.endpoints, self.drops = node, read, endpoints, drops

    def collect(self) -> Iterator[Metric]:
        eps = GaugeMetricFamily("rackroute_policy_endpoints",
                                "Pods of this node under network policy", labels=["node"])
        eps.add_metric([self.node], self.endpoints())
        yield eps
        try:
            counts = self.read()
        except OSError:
            return  # not pinned (an agent restarting)
        packets = CounterMetricFamily("rackroute_policy_packets",
                                      "Packets the network policy programs decided",
                                      labels=["node", "verdict"])
        for verdict, n in sorted(counts.items()):
            packets.add_metric([self.node, verdict], n)
        yield packets
        try:
            per_pod = self.drops()
        except OSError:
            return
        pods = CounterMetricFamily("rackroute_policy_pod_dropped",
                                   "Packets refused for a pod under network policy",
                                   labels=["node", "pod"])
        for pod, n in sorted(per_pod.items()):
            pods.add_metric([self.node, pod], n)
        yield pods


class KubeSourceCollector:
    """The kube source's reflectors, one series per resource: whether it has listed
    (`rackroute_kube_synced`), whether the API server serves it at all
    (`rackroute_kube_resource_served`: 0 for a CRD not installed), the objects it holds
    (`rackroute_kube_objects`) and whether its last request failed
    (`rackroute_kube_error`); and whether the agent still serves the snapshot it saved
    before a restart, the API server not having answered yet
    (`rackroute_kube_from_cache`). Read at scrape time; nothing is cached."""

    def __init__(self, node: str, reflectors: Callable[[], Sequence[Any]],
                 from_cache: Callable[[], bool] = lambda: False) -> None:
        self.node, self.reflectors, self.from_cache = node, reflectors, from_cache

    def collect(self) -> Iterator[Metric]:
        names = {
            "synced": "1 once the resource has been listed",
            "resource_served": "0 when the API server does not serve the resource (no CRD)",
            "objects": "Objects of the resource in the agent's cache",
            "error": "1 while the last list or watch of the resource failed",
        }
        fams = {k: GaugeMetricFamily(f"rackroute_kube_{k}", doc, labels=["node", "kind"])
                for k, doc in names.items()}
        for r in self.reflectors():
            kind = r.res.kind
            fams["synced"].add_metric([self.node, kind], float(r.synced.is_set()))
            fams["resource_served"].add_metric([self.node, kind], float(not r.missing))
            fams["objects"].add_metric([self.node, kind], float(len(r.objects)))
            fams["error"].add_metric([self.node, kind], float(bool(r.error)))
        yield from fams.values()
        cache = GaugeMetricFamily("rackroute_kube_from_cache",
                                  "1 while the agent serves its saved snapshot (the API server "
                                  "not listed yet since its start)", labels=["node"])
        cache.add_metric([self.node], float(self.from_cache()))
        yield cache


class TunnelCollector:
    """The tunnel in use, read when scraped from `state()` (the routing reconciler's
    `tunnel_state`): `rackroute_tunnel_info` (1, labelled with protocol, device, endpoint
    and underlay family), `rackroute_tunnel_peers`, `rackroute_tunnel_mtu` and the
    counters `rackroute_tunnel_<counter>_total` (controller.kernel.tunnels.STATS). Nothing
    while no tunnel is in use."""

    def __init__(self, node: str, state: Callable[[], Any]) -> None:
        self.node, self.state = node, state

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        st = self.state()
        if st is None:
            return
        family = f"ipv{st.endpoint.version}"
        info = GaugeMetricFamily("rackroute_tunnel_info", "1 for the tunnel in use",
                                 labels=["node", "protocol", "device", "endpoint", "underlay"])
        info.add_metric([self.node, st.protocol, st.dev, str(st.endpoint), family], 1.0)
        yield info
        labels = ["node", "protocol"]
        peers = GaugeMetricFamily("rackroute_tunnel_peers", "Remote nodes the tunnel reaches",
                                  labels=labels)
        peers.add_metric([self.node, st.protocol], float(st.peers))
        yield peers
        if st.mtu is not None:
            mtu = GaugeMetricFamily("rackroute_tunnel_mtu", "The tunnel device's MTU "
                                    "(and the pods' on this node)", labels=labels)
            mtu.add_metric([self.node, st.protocol], float(st.mtu))
            yield mtu
        docs = {"encap_packets": "Packets wrapped for a remote node",
                "encap_bytes": "Bytes wrapped for a remote node",
                "decap_packets": "Packets unwrapped from a remote node",
                "decap_bytes": "Bytes unwrapped from a remote node",
                "miss": "Packets with no tunnel entry for their destination",
                "errors": "Packets the tunnel failed to wrap or unwrap"}
        for name, value in sorted(st.stats.items()):
            c = CounterMetricFamily(f"rackroute_tunnel_{name}", docs.get(name, name),
                                    labels=labels)
            c.add_metric([self.node, st.protocol], float(value))
            yield c
