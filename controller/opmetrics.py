"""The operator's metrics and probes, on one HTTP server (`--metrics-port`).

Metrics: `rackroute_operator_leader` (1 while this replica writes), passes and their
failures, the writes it has pending after a failure, and LB-IPAM's state from the last
pass: each pool's IPs (`rackroute_lbipam_pool_ips{pool,state=total|available|used}`,
what its conditions say) and the LoadBalancer services with and without addresses.
Probes: /readyz once the first complete list is in (a standby replica is ready: it only
waits for the lease) and, while leading, once a pass has run; /healthz while the loop
went round recently (controller.metrics.AgentProbes, the agent's own rules).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from controller.desired.cluster import Allocations
from controller.desired.lbipam import IPS_AVAILABLE, IPS_TOTAL, IPS_USED
from controller.metrics import AgentProbes, MetricsServer, probe_app, serve_http

POOL_STATES = {IPS_TOTAL: "total", IPS_AVAILABLE: "available", IPS_USED: "used"}


@dataclass
class OperatorState:
    """What the operator's loop did, for metrics and probes (written by the loop only)."""

    started: bool = False  # the first complete list is in: the loop runs
    leader: bool = True
    passes: int = 0
    failures: int = 0
    pending_writes: int = 0
    alive_at: float | None = None
    pools: dict[str, dict[str, int]] = field(default_factory=dict)
    services: dict[str, int] = field(default_factory=dict)  # allocated | pending
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tick(self) -> None:
        self.alive_at = time.monotonic()

    def record(self, alloc: Allocations) -> None:
        """LB-IPAM's state after a pass."""
        pools: dict[str, dict[str, int]] = {}
        for name, conds in alloc.lbipam.pools.items():
            for c in conds:
                if c.type in POOL_STATES and c.message.isdigit():
                    pools.setdefault(name, {})[POOL_STATES[c.type]] = int(c.message)
        allocated = sum(1 for s in alloc.lbipam.services.values() if s.ips)
        with self.lock:
            self.pools = pools
            self.services = {"allocated": allocated,
                             "pending": len(alloc.lbipam.services) - allocated}

    def ready(self) -> bool:
        return self.started and (not self.leader or self.passes > 0)


class OperatorCollector:
    """Reads an OperatorState when scraped."""

    def __init__(self, state: OperatorState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        st = self.state
        with st.lock:
            pools, services = dict(st.pools), dict(st.services)
        g = GaugeMetricFamily("rackroute_operator_leader", "1 while this replica writes")
        g.add_metric([], 1 if st.leader else 0)
        yield g
        c = CounterMetricFamily("rackroute_operator_passes", "Operator passes run")
        c.add_metric([], st.passes)
        yield c
        c = CounterMetricFamily("rackroute_operator_pass_failures", "Passes that raised")
        c.add_metric([], st.failures)
        yield c
        g = GaugeMetricFamily("rackroute_operator_pending_writes",
                              "Writes that failed and are tried again")
        g.add_metric([], st.pending_writes)
        yield g
        g = GaugeMetricFamily("rackroute_lbipam_pool_ips", "A pool's IPs, as its conditions "
                              "count them", labels=["pool", "state"])
        for pool, counts in sorted(pools.items()):
            for state, n in sorted(counts.items()):
                g.add_metric([pool, state], n)
        yield g
        g = GaugeMetricFamily("rackroute_lbipam_services", "LoadBalancer services managed, "
                              "with addresses or still without", labels=["state"])
        for state, n in sorted(services.items()):
            g.add_metric([state], n)
        yield g


def registry_of(state: OperatorState) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(OperatorCollector(state))
    return reg


def serve(state: OperatorState, port: int, addr: str = "0.0.0.0",
          stale: float = 60.0) -> MetricsServer:
    """/metrics, /readyz and /healthz of the operator on addr:port (0: any free port)."""
    probes = AgentProbes(state.ready, lambda: state.alive_at, stale)
    return serve_http(addr, port, probe_app(make_wsgi_app(registry_of(state)), probes))
