"""The real health check servers on loopback: 200 with the local endpoint count while
the node has one, 503 without, the answer changed in place (the port stays open), a port
another socket holds reported without stopping the others, a port no longer planned
closed."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from controller.desired.healthcheck import HealthCheck
from controller.reconcile.healthcheck import HealthServers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int) -> tuple[int, dict[str, object], str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.status, json.loads(r.read()), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers["Content-Type"]


@pytest.fixture
def servers() -> Iterator[HealthServers]:
    hs = HealthServers("127.0.0.1")
    try:
        yield hs
    finally:
        hs.close()


def test_answers_follow_the_local_endpoints(servers: HealthServers) -> None:
    port = free_port()
    assert servers.set({port: HealthCheck(port, "demo", "web", 2)}) == {}
    status, body, ctype = get(port)
    assert (status, ctype) == (200, "application/json")
    assert body == {"service": {"namespace": "demo", "name": "web"}, "localEndpoints": 2,
                    "serviceProxyHealthy": True}
    srv = servers.servers[port]
    assert servers.set({port: HealthCheck(port, "demo", "web", 0)}) == {}
    assert servers.servers[port] is srv  # changed in place, not rebound
    status, body, _ = get(port)
    assert status == 503 and body["localEndpoints"] == 0
    assert servers.set({}) == {}
    with pytest.raises(OSError):
        get(port)


def test_a_port_someone_holds_is_reported_and_the_others_served(
        servers: HealthServers) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        busy, ok = int(taken.getsockname()[1]), free_port()
        errors = servers.set({busy: HealthCheck(busy, "demo", "a", 1),
                              ok: HealthCheck(ok, "demo", "b", 1)})
        assert set(errors) == {busy} and "in use" in errors[busy]
        assert get(ok)[0] == 200
    finally:
        taken.close()
    assert servers.set({busy: HealthCheck(busy, "demo", "a", 1),
                        ok: HealthCheck(ok, "demo", "b", 1)}) == {}  # free now: retried
    assert get(busy)[0] == 200


def test_node_healthz_answers_200_while_fresh_503_when_stale() -> None:
    from controller.reconcile.healthcheck import NodeHealth, serve_node_health

    now = [5000.0]
    node = NodeHealth(stale=60, clock=lambda: now[0])
    port = free_port()
    stop = serve_node_health(node, "127.0.0.1", port)
    try:
        assert get_path(port, "/healthz")[0] == 503  # nothing programmed yet
        node.last_ok = now[0]
        status, body = get_path(port, "/healthz")
        assert status == 200 and body["nodeEligible"] is True and body["lastUpdated"]
        now[0] += 120
        assert get_path(port, "/healthz")[0] == 503
        assert get_path(port, "/other")[0] == 404
    finally:
        stop()
    with pytest.raises(OSError):
        get_path(port, "/healthz")


def get_path(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw.startswith(b"{") else {}


def test_every_address_means_both_families() -> None:
    """Bound on "" (as the agent does) in a namespace made for the test: answered on its
    IPv4 and IPv6 loopback alike."""
    import os

    from controller.lab.netns import entered, namespace

    with namespace(f"rrh{os.getpid() % 100000}") as ns:
        ns.run(["ip", "link", "set", "lo", "up"])
        port = 32111
        with entered(ns.name):
            hs = HealthServers("")
            assert hs.set({port: HealthCheck(port, "demo", "web", 1)}) == {}
        try:
            for host in ("127.0.0.1", "[::1]"):
                out = ns.run(["curl", "-s", "-w", " %{http_code}",
                              f"http://{host}:{port}/"]).stdout
                assert out.endswith(" 200") and '"localEndpoints": 1' in out, (host, out)
        finally:
            hs.close()
