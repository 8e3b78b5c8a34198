"""Service health check node ports (kube-proxy's healthCheckNodePort), kept equal to the
plan: one reconciler, a port with a real adapter (an HTTP server per port, in threads of
the agent) and a fake.

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
import threading
from collections.abc import Mapping
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    check: HealthCheck


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        check = self.server.check  # one read: a pass may replace it meanwhile
        body = json.dumps(check.body()).encode()
        self.send_response(200 if check.healthy else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Probes every few seconds from every load balancer: not logged."""


class HealthServers:
    """HealthServerPort: an HTTP server per port on `address` ("" = every address)."""

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
            srv = _Server((self.address, port), _Handler, bind_and_activate=False)
            srv.check = check
            try:
                srv.server_bind()
                srv.server_activate()
            except OSError as e:
                srv.server_close()
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


class HealthCheckReconciler:
    """Serves the node's service health checks."""

    name = "health-checks"

    def __init__(self, port: HealthServerPort) -> None:
        self.port = port

    def reconcile(self, ctx: PassContext) -> None:
        plan = plan_health_checks(ctx.snap, ctx.node)
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
