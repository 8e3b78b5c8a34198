"""The real agents in node namespaces, fed by a real kube-apiserver instead of a manifest
directory, against an FRR ToR; the real operator allocating into the API.

The agents reach the server (on the host's loopback) through a relay on their namespace's
loopback. Shown: the ToR learns the pod CIDRs and the LoadBalancer IPs the operator wrote
into Service status; each node's BGPNodeConfig says Established and `rackroute bgp peers
--kubeconfig` prints it; changes made through the API (a service deleted, an endpoint
moved) reach the ToR; with the API server out of reach nothing is withdrawn, and once it is
back the agents follow changes again; an agent whose container dies (the agent and its
speaker killed) while the API server is out of reach starts again from the view it saved,
and its node's BGP session and routes come back before the API server does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bgp.pidfile import kill_recorded
from controller.lab.leftovers import kill_leftover_speakers, stop_all
from controller.lab.netns import wait_for
from controller.lab.relay import TcpRelay
from controller.sources.kubeapi import RESOURCES, HTTPKubeAPI, from_kubeconfig
from tests.integration.agent.test_agent_tor import cluster_docs, nexthops
from tests.integration.bgp.conftest import Topo, build_topo
from tests.kube.apiserver import ApiServer, kubeconfig_via
from tests.kube.conftest import apply

RACKROUTE = [sys.executable, "-m", "controller.cli"]
REPO = Path(__file__).resolve().parents[3]
BNC = RESOURCES["BGPNodeConfig"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


OPERATOR_PORT = free_port()


def http_get(path: str) -> tuple[int, str]:
    """The operator's answer on its metrics port (loopback)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{OPERATOR_PORT}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class KubeCluster:
    topo: Topo
    api: ApiServer
    kube: HTTPKubeAPI
    relays: dict[str, TcpRelay]
    procs: dict[str, subprocess.Popen[bytes]]
    tmp: Path
    argv: dict[str, list[str]]  # each agent's command line

    def start_agent(self, name: str) -> None:
        """(Re)start node name's agent, its log appended to."""
        node = next(n for n in self.topo.nodes if f"n{n.idx}" == name)
        with (self.tmp / f"agent-{name}.log").open("ab") as log:
            self.procs[name] = node.ns.popen(self.argv[name], stdout=log,
                                             stderr=subprocess.STDOUT, cwd=REPO)

    def paths(self) -> dict[str, list[dict[str, object]]]:
        return self.topo.tor.bgp_routes()


@pytest.fixture
def cluster(fresh_apiserver: ApiServer, request: pytest.FixtureRequest) -> Iterator[KubeCluster]:
    api = fresh_apiserver
    port = int(api.url.rsplit(":", 1)[1])
    topo = build_topo("gobgp", 2, tag="rrk")
    tmp = Path(tempfile.mkdtemp(prefix="rrk-agents-"))
    kube = HTTPKubeAPI(from_kubeconfig(api.kubeconfig))
    relays: dict[str, TcpRelay] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        apply(kube, cluster_docs(topo))
        with (tmp / "operator.log").open("wb") as log:
            procs["operator"] = subprocess.Popen(
                [*RACKROUTE, "operator", "--kubeconfig", str(api.kubeconfig),
                 "--metrics-address", "127.0.0.1", "--metrics-port", str(OPERATOR_PORT)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        c = KubeCluster(topo, api, kube, relays, procs, tmp, {})
        for n in topo.nodes:
            name = f"n{n.idx}"
            topo.tor_neighbor(n)
            relays[name] = TcpRelay(n.ns.name, ("127.0.0.1", port))
            kc = kubeconfig_via(api, relays[name].port, tmp / f"kubeconfig-{name}")
            c.argv[name] = [*RACKROUTE, "agent", "--node", name, "--kubeconfig", str(kc),
                            "--speaker", "gobgp", "--state-dir", str(tmp / f"state-{name}"),
                            "--metrics-port", "0", "--resync", "5", "--import-routes"]
            c.start_agent(name)
        yield c
    finally:
        stop_all(procs.values())
        for r in relays.values():
            r.close()
        kube.close()
        kill_leftover_speakers(tmp)
        topo.lab.close()
        if hasattr(request.node, "rep_call") and request.node.rep_call.failed:
            for f in sorted(tmp.glob("*.log")):
                print(f.name + ":\n" + f.read_text(errors="replace")[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


def established(kube: HTTPKubeAPI) -> set[str]:
    items, _ = kube.list(BNC)
    return {i["metadata"]["name"] for i in items
            if (i.get("status") or {}).get("establishedPeers") == 1}


def lb_ip(kube: HTTPKubeAPI, name: str) -> str:
    """The address the operator wrote into the service's status ("" until then)."""
    st = kube.get(RESOURCES["Service"], name, "demo").get("status") or {}
    ingress = (st.get("loadBalancer") or {}).get("ingress") or [{}]
    return str(ingress[0].get("ip") or "")


@pytest.mark.timeout(180)
def test_agents_fed_by_the_api_server_advertise_and_follow_it(cluster: KubeCluster) -> None:
    c = cluster
    web = wait_for(lambda: lb_ip(c.kube, "web"), 30, 0.2, "web's IP in its status")
    local = wait_for(lambda: lb_ip(c.kube, "local"), 30, 0.2, "local's IP in its status")
    assert {web, local} == {"198.51.100.0", "198.51.100.1"}
    want = {"10.244.0.0/24", "10.244.1.0/24", f"{web}/32", f"{local}/32"}
    wait_for(lambda: want <= set(c.paths()), 60, 0.2, "planned paths at the ToR")
    wait_for(lambda: want <= c.topo.tor.installed_bgp(), 20, 0.2, "routes in the ToR kernel")
    routes = c.paths()
    assert nexthops(routes[f"{web}/32"]) == {"10.55.0.11", "10.55.0.12"}
    assert nexthops(routes[f"{local}/32"]) == {"10.55.0.11"}  # Local: n1's endpoint

    # status lives in the cluster: each node's BGPNodeConfig, and bgp peers reads it
    wait_for(lambda: established(c.kube) == {"n1", "n2"}, 20, 0.2, "Established in the API")
    out = subprocess.run([*RACKROUTE, "bgp", "peers", "--kubeconfig", str(c.api.kubeconfig)],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    rows = {tuple(ln.split()[:5]) for ln in out.splitlines()[1:] if ln.strip()}
    assert rows == {("n1", "65011", "65000", "10.55.0.1", "established"),
                    ("n2", "65012", "65000", "10.55.0.1", "established")}
    # each agent reports on its NodeNetwork (created by the operator) next to the
    # operator's pod CIDR: healthy, routed natively
    def reported(name: str) -> dict[str, object]:
        st = c.kube.get(RESOURCES["NodeNetwork"], name).get("status") or {}
        return {k: st.get(k) for k in ("healthy", "routing")}
    for name in ("n1", "n2"):
        wait_for(lambda n=name: reported(n) == {"healthy": True, "routing": "native"},  # type: ignore[misc]
                 20, 0.2, f"{name}'s NodeNetwork status")
    # rackroute status reads the same from the API server
    out = subprocess.run([*RACKROUTE, "status", "--kubeconfig", str(c.api.kubeconfig)],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    nodes = {ln.split()[0]: ln.split()[1:4] for ln in out.split("\n\n")[0].splitlines()[1:]}
    assert nodes == {"n1": ["ok", "native", "1/1"], "n2": ["ok", "native", "1/1"]}, out
    assert "LoadBalancer IPs: 2 on 2 services" in out
    # the operator's probes and metrics: ready, alive, its pools and services counted
    assert http_get("/readyz") == (200, "ok\n") and http_get("/healthz")[0] == 200
    metrics = http_get("/metrics")[1]
    assert 'rackroute_lbipam_services{state="allocated"} 2.0' in metrics, metrics
    assert "rackroute_operator_leader 1.0" in metrics
    assert 'rackroute_lbipam_pool_ips{pool="pool",state="used"} 2.0' in metrics

    # changes through the API: the Local endpoint moves to n2, web is deleted
    c.kube.merge_patch(RESOURCES["EndpointSlice"], "local-1",
                       {"endpoints": [{"addresses": ["10.244.9.9"], "nodeName": "n2"}]}, "demo")
    c.kube.delete(RESOURCES["Service"], "web", "demo")
    wait_for(lambda: f"{web}/32" not in c.paths(), 20, 0.2, "web withdrawn")
    wait_for(lambda: nexthops(c.paths().get(f"{local}/32", [])) == {"10.55.0.12"},
             20, 0.2, "local now only via n2")


@pytest.mark.timeout(180)
def test_the_api_server_out_of_reach_withdraws_nothing(cluster: KubeCluster) -> None:
    c = cluster
    web = wait_for(lambda: lb_ip(c.kube, "web"), 30, 0.2, "web's IP in its status")
    local = wait_for(lambda: lb_ip(c.kube, "local"), 30, 0.2, "local's IP in its status")
    want = {"10.244.0.0/24", "10.244.1.0/24", f"{web}/32", f"{local}/32"}
    wait_for(lambda: want <= set(c.paths()), 60, 0.2, "planned paths at the ToR")
    ports = {name: r.port for name, r in c.relays.items()}
    for r in c.relays.values():
        r.close()  # the agents' watches break; every retry is refused
    time.sleep(12)  # two resyncs with the API server away
    assert want <= set(c.paths())
    assert all(p.poll() is None for p in c.procs.values())
    # back: a change made meanwhile reaches the ToR
    c.kube.delete(RESOURCES["Service"], "web", "demo")
    for name, port in ports.items():
        ns = next(n.ns.name for n in c.topo.nodes if f"n{n.idx}" == name)
        c.relays[name] = TcpRelay(ns, c.relays[name].target, port)
    wait_for(lambda: f"{web}/32" not in c.paths(), 60, 0.2, "web withdrawn after")
    assert {"10.244.0.0/24", "10.244.1.0/24", f"{local}/32"} <= set(c.paths())


@pytest.mark.timeout(240)
def test_an_agent_restarted_while_the_api_server_is_away_comes_back_from_its_saved_view(
        cluster: KubeCluster) -> None:
    c = cluster
    web = wait_for(lambda: lb_ip(c.kube, "web"), 30, 0.2, "web's IP in its status")
    want = {"10.244.0.0/24", "10.244.1.0/24", f"{web}/32"}
    wait_for(lambda: want <= set(c.paths()), 60, 0.2, "planned paths at the ToR")
    n1 = next(n for n in c.topo.nodes if n.idx == 1)
    saved = c.tmp / "state-n1" / "kube-snapshot"
    wait_for(saved.exists, 30, 0.2, "n1's saved snapshot")
    ports = {name: r.port for name, r in c.relays.items()}
    for r in c.relays.values():
        r.close()  # the API server is out of reach from here on
    # n1's container dies: the agent and its speaker, at once (no NOTIFICATION sent)
    c.procs["n1"].kill()
    c.procs["n1"].wait(10)
    pidfiles = list((c.tmp / "state-n1").rglob("gobgpd.pid"))
    assert pidfiles and all(kill_recorded(f, str(f.parent)) for f in pidfiles)
    wait_for(lambda: c.topo.tor.neighbor_state(n1.addr4) != "Established", 30, 0.2,
             "the ToR sees n1's session drop")
    c.start_agent("n1")
    log = c.tmp / "agent-n1.log"
    wait_for(lambda: "event=kube_cache_start" in log.read_text(), 60, 0.2,
             "n1 starting from its saved view")
    # the ToR's session comes back, and with it n1's routes, the API server still away
    wait_for(lambda: c.topo.tor.neighbor_state(n1.addr4) == "Established", 60, 0.2,
             "n1's session re-established without the API server")
    wait_for(lambda: want <= set(c.paths()), 30, 0.2, "every path still at the ToR")
    # the API server back: the live view replaces the saved one, and a change arrives
    c.kube.delete(RESOURCES["Service"], "web", "demo")
    for name, port in ports.items():
        ns = next(n.ns.name for n in c.topo.nodes if f"n{n.idx}" == name)
        c.relays[name] = TcpRelay(ns, c.relays[name].target, port)
    wait_for(lambda: "event=kube_cache_replaced" in log.read_text(), 60, 0.2,
             "the live view in n1")
    wait_for(lambda: f"{web}/32" not in c.paths(), 60, 0.2, "web withdrawn after")
    assert {"10.244.0.0/24", "10.244.1.0/24"} <= set(c.paths())
