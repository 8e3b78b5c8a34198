"""Prometheus metrics of the agent: BGP session state and route counts, reconcile passes."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

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
        for g in (self.session, self.state, self.received, self.advertised, self.held):
            g.clear()
        for inst in doc["instances"]:
            self.held.labels(node, inst["name"]).set(len(inst["heldPaths"]))
            for p in inst["peers"]:
                lab = (node, inst["name"], p["name"], p["peerAddress"])
                self.session.labels(*lab).set(1 if p["state"] == "established" else 0)
                for s in STATES:
                    self.state.labels(*lab, s).set(1 if p["state"] == s else 0)
                for fam, c in p["routeCount"].items():
                    self.received.labels(*lab, fam).set(c["received"])
                    self.advertised.labels(*lab, fam).set(c["advertised"])

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
