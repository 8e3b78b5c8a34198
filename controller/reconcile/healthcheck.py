"""Service health check node ports (kube-proxy's healthCheckNodePort), kept equal to the
plan, and the node's own proxy health (kube-proxy's /healthz, port 10256): one
reconciler, ports with real adapters (HTTP servers in threads of the agent) and fakes.

The node health answers 200 while the service datapath was programmed without error
within the stale limit (by default twice the resync interval, as kube-proxy's two sync
periods), 503 otherwise: `{"lastUpdated": ..., "currentTime": ..., "nodeEligible": true}`.

Each pass computes `controller.desired.healthcheck.plan_health_checks` and hands it to the
port, which opens the servers of new ports, closes those of ports no longer planned, and
changes the answer of the others in place (no rebind: a probing load balancer never
meets a closed port while a count changes). A port that cannot be opened (another
process holds it) is reported per service and retried on the next pass; the others
keep serving. `close` stops every server.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from controller.desired.healthcheck import HealthCheck, plan_health_checks
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.healthcheck")


class HealthServerPort(Protocol):
    def set(self, checks: Mapping[int, HealthCheck]) -> dict[int, str]:
        """Serve exactly these checks; returns why a port could not be served."""
        ...

    def close(self) -> None: ...


class FakeHealthServers:
    """HealthServerPort in memory; `busy` ports fail to open, as if taken."""

    def __init__(self, busy: set[int] | None = None) -> None:
        self.serving: dict[int, HealthCheck] = {}
        self.busy = set(busy or ())
        self.opened = 0

    def set(self, checks: Mapping[int, HealthCheck]) -> dict[int, str]:
        errors: dict[int, str] = {}
        for port in [p for p in self.serving if p not in checks]:
            del self.serving[port]
        for port, check in checks.items():
            if port in self.busy:
                errors[port] = "address already in use"
                continue
            if port not in self.serving:
                self.opened += 1
            self.serving[port] = check
        return errors

    def close(self) -> None:
        self.serving.clear()


class _DualStack(ThreadingHTTPServer):
    """An HTTP server on an address of either family; "" is every address of both (an
    IPv6 socket that takes IPv4 too), or of IPv4 alone where IPv6 is off."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, port: int, handler: type[BaseHTTPRequestHandler]
                 ) -> None:
        host = address
        if address == "" and socket.has_ipv6:
            try:
                socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
                host = "::"
            except OSError:
                host = "0.0.0.0"
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host or "0.0.0.0", port), handler, bind_and_activate=False)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def open(self) -> None:
        """Bind and listen; OSError (the port taken) leaves nothing open."""
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise


class _Server(_DualStack):
    check: HealthCheck


class _JsonHandler(BaseHTTPRequestHandler):
    """Answers with a JSON document, 200 when healthy, 503 when not; probes come every
    few seconds from every load balancer and are not logged."""

    def answer(self, healthy: bool, doc: Mapping[str, object]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Not logged (see the class)."""


class _Handler(_JsonHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        check = self.server.check  # one read: a pass may replace it meanwhile
        self.answer(check.healthy, check.body())


class HealthServers:
    """HealthServerPort: an HTTP server per port on `address` ("" = every address, IPv4
    and IPv6)."""

    def __init__(self, address: str = "") -> None:
        self.address = address
        self.servers: dict[int, _Server] = {}

    def set(self, checks: Mapping[int, HealthCheck]) -> dict[int, str]:
        errors: dict[int, str] = {}
        for port in [p for p in self.servers if p not in checks]:
            self._stop(port)
        for port, check in checks.items():
            srv = self.servers.get(port)
            if srv is not None:
                srv.check = check
                continue
            srv = _Server(self.address, port, _Handler)
            srv.check = check
            try:
                srv.open()
            except OSError as e:
                errors[port] = e.strerror or str(e)
                continue
            threading.Thread(target=srv.serve_forever, name=f"healthcheck-{port}",
                             daemon=True).start()
            self.servers[port] = srv
            log.info("event=healthcheck_open port=%d service=%s/%s", port, check.namespace,
                     check.name)
        return errors

    def _stop(self, port: int) -> None:
        srv = self.servers.pop(port)
        srv.shutdown()
        srv.server_close()
        log.info("event=healthcheck_close port=%d", port)

    def close(self) -> None:
        for port in list(self.servers):
            self._stop(port)


class NodeHealth:
    """When the service datapath was last programmed without error; healthy while that
    is within `stale` seconds (clock injectable)."""

    def __init__(self, stale: float, clock: Callable[[], float] = time.time) -> None:
        self.stale, self.clock = stale, clock
        self.last_ok: float | None = None

    def body(self) -> tuple[bool, dict[str, object]]:
        now = self.clock()
        ok = self.last_ok is not None and now - self.last_ok <= self.stale

        def iso(t: float | None) -> str:
            return "" if t is None else datetime.fromtimestamp(t, UTC).isoformat()

        return ok, {"lastUpdated": iso(self.last_ok), "currentTime": iso(now),
                    "nodeEligible": True}


class _NodeServer(_DualStack):
    health: NodeHealth


class _NodeHandler(_JsonHandler):
    server: _NodeServer

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        if self.path.split("?")[0] not in ("/healthz", "/livez"):
            self.send_error(404)
            return
        self.answer(*self.server.health.body())


def serve_node_health(health: NodeHealth, address: str, port: int) -> Callable[[], None]:
    """Serve health at address:port (/healthz); returns the function that stops it."""
    srv = _NodeServer(address, port, _NodeHandler)
    srv.health = health
    srv.open()
    threading.Thread(target=srv.serve_forever, name="healthz", daemon=True).start()

    def stop() -> None:
        srv.shutdown()
        srv.server_close()

    return stop


class HealthCheckReconciler:
    """Serves the node's service health checks, and keeps the node health's clock: it
    runs after the datapath reconciler, so a pass whose datapath had no error counts."""

    name = "health-checks"

    def __init__(self, port: HealthServerPort, node: NodeHealth | None = None,
                 datapath: str = "datapath", proxy_name: str = "") -> None:
        self.port, self.node, self.datapath = port, node, datapath
        self.proxy_name = proxy_name

    def reconcile(self, ctx: PassContext) -> None:
        if self.node is not None and self.datapath not in ctx.errors:
            self.node.last_ok = self.node.clock()
        plan = plan_health_checks(ctx.snap, ctx.node, self.proxy_name)
        failed = self.port.set(plan.checks)
        msgs = [f"service {key}: {why}" for key, whys in sorted(plan.problems.items())
                for why in whys]
        for port, why in sorted(failed.items()):
            c = plan.checks[port]
            msgs.append(f"service {c.namespace}/{c.name}: spec.healthCheckNodePort {port}: "
                        f"cannot serve: {why}")
        if msgs:
            ctx.errors[self.name] = "; ".join(msgs)

    def close(self) -> None:
        self.port.close()
