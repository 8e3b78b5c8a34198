"""The FRR lab end to end: `rackroute lab up` as a user runs it, then what the lab must show.

One lab per module (it takes a few seconds to come up); tests that change manifests put
them back. Everything runs in the lab's own `rrl-` namespaces and is removed at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.lab.netns import Netns, wait_for
from controller.lab.runner import LabRunner
from controller.lab.show import lb_targets, tor_bgp_routes, tor_vtysh, url, wait_ready
from controller.lab.topology import Topology
from controller.status import read_nodes, read_operator

STATE = Path("/run/rackroute-lab-e2e")
CLIENT_IP = "192.168.100.10"
CLIENT_IP6 = "fd00:192:168:100::10"


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[LabRunner, Topology, Path]]:
    for tool in ("vtysh", "gobgpd", "curl", "ping"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed on this machine")
    r = LabRunner(STATE)
    try:
        topo = r.up()
        assert wait_ready(r, 90), "lab not ready"
        assert r.state is not None
        yield r, topo, Path(r.state.manifests)
    finally:
        LabRunner(STATE).down()


def tor_nexthops(r: LabRunner, prefix: str) -> set[str]:
    """Next hops of the ToR's installed (FIB) route for prefix."""
    afi = "ipv6" if ":" in prefix else "ip"
    doc = json.loads(tor_vtysh(r, f"show {afi} route {prefix} json") or "{}")
    return {
        str(h["ip"])
        for route in doc.get(prefix, [])
        if route.get("installed")
        for h in route.get("nexthops", [])
        if h.get("fib") and "ip" in h
    }


def curl(topo: Topology, ip: str, port: int = 80) -> str:
    res = Netns(topo.client_ns).run(["curl", "-sS", "-m", "3", url(ip, port)], check=False)
    return res.stdout.strip()


def lb_ip(mdir: Path, svc: str, version: int = 4) -> str:
    return next(str(ip) for ip in read_operator(mdir).ingress[svc] if ip.version == version)


def forwarded(ns: str) -> int:
    snmp = Netns(ns).run(["cat", "/proc/net/snmp"]).stdout.splitlines()
    head, vals = [ln.split() for ln in snmp if ln.startswith("Ip:")][:2]
    return int(vals[head.index("ForwDatagrams")])


def test_sessions_and_tor_routes(lab: tuple[LabRunner, Topology, Path]) -> None:
    r, topo, mdir = lab
    docs = read_nodes(mdir)
    assert sorted(docs) == [n.name for n in topo.nodes]
    for d in docs.values():  # an IPv4 and an IPv6 session, each with BFD up
        assert [(p["peerAddress"], p["state"], p["bfd"]["state"])
                for i in d["instances"] for p in i["peers"]] == [
            ("10.0.0.1", "established", "up"), ("fd00:10::1", "established", "up")]
    bfd = {p["peer"]: p["status"] for p in json.loads(tor_vtysh(r, "show bfd peers json"))}
    assert bfd == {a: "up" for n in topo.nodes for a in (n.address, n.address6)}
    # BFD started once BGP was up: no session was reset for it (FRR's bfdd starts the
    # peer's session anew when BGP comes up; one Up before that went Down and took BGP)
    assert "BFD Down" not in tor_vtysh(r, "show bgp neighbors")
    routes = tor_bgp_routes(r)
    for cidrs in read_operator(mdir).pod_cidrs.values():
        assert sorted(c.version for c in cidrs) == [4, 6]
        for c in cidrs:
            assert str(c) in routes
    for _, ip, _, _ in lb_targets(mdir):
        assert f"{ip}/{32 if '.' in ip else 128}" in routes


def test_pod_to_pod_native_crosses_the_tor(lab: tuple[LabRunner, Topology, Path]) -> None:
    r, topo, _ = lab
    src = next(p for p in topo.pods if p.node == topo.nodes[0].name)
    dst = next(p for p in topo.pods if p.node == topo.nodes[-1].name)
    dst_cidr = ".".join(dst.ip.split(".")[:3]) + ".0/24"
    assert "mtu 1500" in Netns(topo.pod_ns(src.name)).ip("link", "show", "eth0").stdout
    src_ns = Netns(topo.node(src.node).ns)
    wait_for(lambda: f"{dst_cidr} via 10.0.0.1 " in src_ns.ip("route").stdout,
             20, 0.2, "the learned route through the ToR")
    before = forwarded(topo.tor_ns)
    res = Netns(topo.pod_ns(src.name)).run(["ping", "-c", "5", "-i", "0.2", "-W", "1", dst.ip],
                                           check=False)
    assert res.returncode == 0, res.stdout
    assert forwarded(topo.tor_ns) - before >= 10  # 5 requests + 5 replies routed by the ToR
    for n in topo.nodes:  # no tunnel device carried anything
        links = Netns(n.ns).ip("-s", "-j", "link", "show").stdout
        assert "rr.vxlan" not in links


def test_local_service_next_hops_client_address_and_endpoint_removal(
    lab: tuple[LabRunner, Topology, Path],
) -> None:
    r, topo, mdir = lab
    ip = lb_ip(mdir, "demo/web-local")
    ready_nodes = {topo.node(p.node).address for p in topo.pods if p.name.startswith("web-local")}
    assert tor_nexthops(r, f"{ip}/32") == ready_nodes
    answers = [curl(topo, ip) for _ in range(6)]
    assert all(a.startswith("pod=web-local-") for a in answers), answers
    assert all(f"client={CLIENT_IP}" in a for a in answers), answers  # source preserved

    f = mdir / "50-endpoints.yaml"
    original = f.read_text()
    docs = list(yaml.safe_load_all(original))
    for d in docs:
        if d["metadata"]["name"] == "web-local-abc":
            d["endpoints"] = [e for e in d["endpoints"] if e["nodeName"] != "node-2"]
    try:
        f.write_text(yaml.safe_dump_all(docs))
        gone = topo.node("node-2").address
        deadline = time.monotonic() + 20
        failures = 0
        while gone in tor_nexthops(r, f"{ip}/32") and time.monotonic() < deadline:
            # node-2 drains (keeps serving) while the ToR converges: any answer is a success
            failures += 0 if curl(topo, ip).startswith("pod=web-local-") else 1
            time.sleep(0.1)
        assert tor_nexthops(r, f"{ip}/32") == {topo.node("node-1").address}
        assert failures == 0
        assert all(curl(topo, ip).startswith("pod=web-local-1") for _ in range(5))
    finally:
        f.write_text(original)
    wait_for(lambda: tor_nexthops(r, f"{ip}/32") == ready_nodes, 20, 0.2, "node-2 back")


def test_cluster_service_every_node_advertises_and_reaches_remote_backend(
    lab: tuple[LabRunner, Topology, Path],
) -> None:
    r, topo, mdir = lab
    ip = lb_ip(mdir, "demo/web-cluster")
    assert tor_nexthops(r, f"{ip}/32") == {n.address for n in topo.nodes}
    answers = {curl(topo, ip) for _ in range(12)}
    assert answers and all(a.startswith("pod=web-cluster-1 node=node-3") for a in answers), answers
    # through nodes without the backend the source is the node (SNAT), otherwise the client
    clients = {a.split("client=")[1] for a in answers}
    assert clients <= {CLIENT_IP, *(n.address for n in topo.nodes)}


def test_lab_show_runs(lab: tuple[LabRunner, Topology, Path]) -> None:
    res = subprocess.run([sys.executable, "-m", "controller.cli", "lab", "show", "--state-dir",
                          str(STATE)], capture_output=True, text=True, timeout=60, check=False)
    assert "=== BGP sessions" in res.stdout
    glance = res.stdout.split("=== The cluster at a glance (rackroute status) ===", 1)[1]
    assert "LoadBalancer IPs:" in glance.split("=== BGP sessions", 1)[0]
    assert "established" in res.stdout
    assert "pod=web-local-" in res.stdout
    v6 = [ln for ln in res.stdout.splitlines()
          if ln.startswith("demo/web-local") and "[fd00:" in ln]
    assert v6 and all("pod=web-local-" in ln and CLIENT_IP6 in ln for ln in v6), v6
    assert "=== The ToR's IPv6 routes" in res.stdout
    assert '"localEndpoints": ' in res.stdout and "(HTTP 200)" in res.stdout  # health checks
    # the manifests' NetworkPolicy: its verdict, and the connections as it says
    assert "=== NetworkPolicy: pod web-cluster-1 to pod web-local-1" in res.stdout
    assert "refused: demo/web-cluster-1 -> demo/web-local-1 tcp/8080" in res.stdout
    assert "-> refused (no answer)" in res.stdout and res.returncode == 0, res.stdout
    maps = res.stdout.split("=== What node-1's policy maps hold", 1)[1]
    assert "endpoint 1: 10.244.0.10" in maps and "192.168.100.0/24" in maps
    # the curls' flows, as the nodes' datapaths hold them
    assert "=== The flows node-1's datapath holds" in res.stdout
    assert "192.168.100.10:" in res.stdout.split("=== The flows node-1's", 1)[1]


def test_load_balancer_source_ranges_from_the_manifest(
    lab: tuple[LabRunner, Topology, Path],
) -> None:
    """spec.loadBalancerSourceRanges in the Service manifest reaches every node's datapath:
    the external client is refused while no range holds it, served once one does."""
    r, topo, mdir = lab
    ip = lb_ip(mdir, "demo/web-cluster")
    f = mdir / "40-services.yaml"
    original = f.read_text()

    def ranges(*nets: str) -> None:
        docs = list(yaml.safe_load_all(original))
        for d in docs:
            if d and d["metadata"]["name"] == "web-cluster":
                d["spec"]["loadBalancerSourceRanges"] = list(nets)
        f.write_text(yaml.safe_dump_all(docs))

    try:
        ranges("198.51.100.0/24")
        wait_for(lambda: curl(topo, ip) == "", 20, 0.3, "the client refused")
        assert all(curl(topo, ip) == "" for _ in range(3))  # through every node
        ranges("198.51.100.0/24", "192.168.100.0/24")
        wait_for(lambda: curl(topo, ip).startswith("pod=web-cluster-1"), 20, 0.3,
                 "the client served")
    finally:
        f.write_text(original)
    wait_for(lambda: curl(topo, ip).startswith("pod=web-cluster-1"), 20, 0.3, "restored")


def test_health_check_node_port_answers_per_node(
    lab: tuple[LabRunner, Topology, Path],
) -> None:
    """web-local's healthCheckNodePort: 200 with the count on nodes with a ready pod of
    it, 503 on the node without (as kube-proxy answers an outside load balancer)."""
    _, topo, _ = lab
    with_pods = {p.node for p in topo.pods if p.name.startswith("web-local")}
    for n in topo.nodes:
        res = Netns(topo.client_ns).run(
            ["curl", "-sS", "-m", "3", "-w", "\n%{http_code}", f"http://{n.address}:32080/"],
            check=False)
        body, _, code = res.stdout.rpartition("\n")
        doc = json.loads(body)
        assert doc["service"] == {"namespace": "demo", "name": "web-local"}
        if n.name in with_pods:
            assert code == "200" and doc["localEndpoints"] >= 1, (n.name, res.stdout)
        else:
            assert code == "503" and doc["localEndpoints"] == 0, (n.name, res.stdout)


def test_network_policy_from_the_manifests(lab: tuple[LabRunner, Topology, Path]) -> None:
    """The manifests' NetworkPolicy holds on the pods of every node it selects (the lab's
    pods were made through the CNI plugin, whose ADD waited for each pod's policy):
    web-local's pods answer the external client, directly and through their Local
    LoadBalancer, and refuse the pod web-cluster-1; with the policy deleted from the
    manifests they answer it too, and refuse it again once the policy is back."""
    _, topo, mdir = lab
    src = Netns(topo.pod_ns("web-cluster-1"))
    targets = [p for p in topo.pods if p.name.startswith("web-local")]
    assert len({p.node for p in targets}) == 2

    def from_pod(ip: str) -> str:
        return src.run(["curl", "-sS", "-m", "2", f"http://{ip}:8080/"],
                       check=False).stdout.strip()

    for p in targets:
        assert from_pod(p.ip) == ""
        assert curl(topo, p.ip, 8080).startswith(f"pod={p.name} ")
    assert curl(topo, lb_ip(mdir, "demo/web-local")).startswith("pod=web-local-")
    f = mdir / "70-policy.yaml"
    original = f.read_text()
    try:
        f.unlink()
        wait_for(lambda: all(from_pod(p.ip).startswith(f"pod={p.name} ") for p in targets),
                 20, 0.3, "web-local served to the pod without the policy")
    finally:
        f.write_text(original)
    wait_for(lambda: all(from_pod(p.ip) == "" for p in targets), 20, 0.3,
             "web-local refusing the pod again")


def forwarded6(ns: str) -> int:
    for line in Netns(ns).run(["cat", "/proc/net/snmp6"]).stdout.splitlines():
        if line.startswith("Ip6OutForwDatagrams"):
            return int(line.split()[1])
    raise AssertionError("no Ip6OutForwDatagrams")


def test_dual_stack_pods_and_load_balancer_ips_over_ipv6_sessions(
    lab: tuple[LabRunner, Topology, Path],
) -> None:
    """The IPv6 half of the lab, end to end: each node's IPv6 pod CIDR and its services'
    IPv6 LoadBalancer IPs reach the ToR over the node's IPv6 session (next hop: the
    node's IPv6 address), pods talk across nodes in IPv6 through the ToR, and the external
    client reaches both services over IPv6: Local only through the nodes with a pod (its
    address kept), Cluster through every node to the pod on node-3; the NetworkPolicy's
    IPv6 block lets the client in and keeps the other pod out."""
    r, topo, mdir = lab
    by_name = {n.name: n for n in topo.nodes}
    for name, cidrs in read_operator(mdir).pod_cidrs.items():
        (c6,) = [str(c) for c in cidrs if c.version == 6]
        assert tor_nexthops(r, c6) == {by_name[name].address6}
    local6 = lb_ip(mdir, "demo/web-local", 6)
    cluster6 = lb_ip(mdir, "demo/web-cluster", 6)
    with_pods = {topo.node(p.node).address6 for p in topo.pods if p.name.startswith("web-local")}
    assert tor_nexthops(r, f"{local6}/128") == with_pods
    assert tor_nexthops(r, f"{cluster6}/128") == {n.address6 for n in topo.nodes}

    src = next(p for p in topo.pods if p.node == topo.nodes[0].name)
    dst = next(p for p in topo.pods if p.node == topo.nodes[-1].name)
    before = forwarded6(topo.tor_ns)
    res = Netns(topo.pod_ns(src.name)).run(
        ["ping", "-6", "-c", "5", "-i", "0.2", "-W", "1", dst.ip6], check=False)
    assert res.returncode == 0, res.stdout
    assert forwarded6(topo.tor_ns) - before >= 10  # both ways through the ToR

    answers = [curl(topo, local6) for _ in range(6)]
    assert all(a.startswith("pod=web-local-") and a.endswith(f"client={CLIENT_IP6}")
               for a in answers), answers
    answers = [curl(topo, cluster6) for _ in range(12)]
    assert all(a.startswith("pod=web-cluster-1 node=node-3") for a in answers), answers
    clients = {a.split("client=")[1] for a in answers}
    assert clients <= {CLIENT_IP6, *(n.address6 for n in topo.nodes)}, clients
    # NodePort on a node's IPv6 address: Cluster from a node without the pod (SNAT to
    # that node), and the Local health check node port answering per node
    n1 = topo.node("node-1")
    assert curl(topo, n1.address6, 30081) == f"pod=web-cluster-1 node=node-3 client={n1.address6}"
    assert '"localEndpoints": 1' in curl(topo, n1.address6, 32080)

    guarded = next(p for p in topo.pods if p.name == "web-local-1")
    pod = Netns(topo.pod_ns("web-cluster-1"))
    refused = pod.run(["curl", "-sS", "-m", "2", url(guarded.ip6, 8080)], check=False)
    assert refused.returncode != 0 and refused.stdout == ""
    assert curl(topo, guarded.ip6, 8080).startswith("pod=web-local-1 ")


def test_status_shows_every_node_healthy_with_its_sessions_up(
        lab: tuple[LabRunner, Topology, Path]) -> None:
    _, topo, mdir = lab

    def rows() -> dict[str, list[str]]:
        res = subprocess.run([sys.executable, "-m", "controller.cli", "status", "--manifests",
                              str(mdir)], capture_output=True, text=True, timeout=60,
                             check=False)
        lines = res.stdout.split("\n\n")[0].splitlines()[1:]
        return {ln.split()[0]: ln.split() for ln in lines if ln.strip()}

    want = {n.name for n in topo.nodes}
    got = wait_for(lambda: (r := rows()).keys() == want and all(
        x[1] == "ok" and x[3].split("/")[0] == x[3].split("/")[1] != "0" for x in r.values())
        and r, 30, 0.5, "every node ok with its sessions up in rackroute status")
    assert all(x[2] == "native" for x in got.values()), got
