"""The real agent (`rackroute agent`, a process in each node namespace) against an FRR ToR.

Per speaker kind: sessions establish; the ToR's table and kernel hold exactly the planned
pod CIDRs and LoadBalancer /32s with the planned communities; a Local service is
advertised only by the node with its endpoint; nodes learn each other's pod CIDR and a
ping between those CIDRs works with no tunnel; a changed manifest changes the ToR's
table; a removed service is withdrawn; the status and `rackroute bgp peers` say
Established; SIGTERM stops the agent cleanly.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.lab.leftovers import kill_leftover_speakers, stop_all
from controller.lab.netns import wait_for
from controller.operator import Operator
from controller.sources.files import ManifestDir
from controller.status import read_nodes
from tests.integration.bgp.conftest import Topo, build_topo
from tests.manifests import LB_ADVERTISEMENT, tor_cluster

RACKROUTE = [sys.executable, "-m", "controller.cli"]


def cluster_docs(topo: Topo, v6_underlay: bool = False) -> list[dict[str, Any]]:
    """The cluster these tests run: a ToR instance, the nodes of `topo`, two LoadBalancer
    services (web: Cluster, endpoint on n2; local: Local, endpoint on n1). With
    v6_underlay, the nodes have IPv6 InternalIPs only and peer with the ToR's IPv6 address,
    both families over that one session (RFC 8950), each node's router ID set."""
    docs = tor_cluster(65010, "fd55::1" if v6_underlay else "10.55.0.1", "all", [
        {"advertisementType": "PodCIDR",
         "attributes": {"communities": {"standard": ["65000:100"]}}},
        {**LB_ADVERTISEMENT, "attributes": {"communities": {"standard": ["65000:200"],
                                                            "large": ["65000:1:2"]}}}])
    if v6_underlay:
        pc = next(d for d in docs if d["kind"] == "BGPPeerConfig")
        fam = pc["spec"]["families"][0]
        pc["spec"]["families"] = [fam, {**fam, "afi": "ipv6"}]
    for n in topo.nodes:
        docs.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{n.idx}"},
                     "status": {"addresses": [{"type": "InternalIP", "address":
                                               n.addr6 if v6_underlay else n.addr4}]}})
        inst: dict[str, Any] = {"name": "tor", "localASN": n.asn}
        if v6_underlay:
            inst["routerID"] = n.loopback  # no IPv4 address to take one from
        docs.append({"apiVersion": "rackroute.io/v1alpha1", "kind": "BGPNodeConfigOverride",
                     "metadata": {"name": f"n{n.idx}"}, "spec": {"bgpInstances": [inst]}})
    for name, etp, node in (("web", "Cluster", "n2"), ("local", "Local", "n1")):
        docs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": "demo",
                                  "creationTimestamp": f"2026-01-0{1 if name == 'web' else 2}"},
                     "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp,
                              "ports": [{"port": 80}]}})
        docs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": f"{name}-1", "namespace": "demo",
                                  "labels": {"kubernetes.io/service-name": name}},
                     "addressType": "IPv4",
                     "endpoints": [{"addresses": ["10.244.9.9"], "nodeName": node}],
                     "ports": [{"port": 80}]})
    return docs


def manifests(root: Path, topo: Topo, v6_underlay: bool = False) -> None:
    (root / "all.yaml").write_text(yaml.safe_dump_all(cluster_docs(topo, v6_underlay)))


@dataclass
class Cluster:
    topo: Topo
    root: Path
    agents: dict[str, subprocess.Popen[bytes]]


@pytest.fixture(params=["gobgp", "exabgp"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    yield from run_cluster(request, v6_underlay=False)


@pytest.fixture(params=["gobgp", "exabgp"])
def cluster6(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The nodes' links carry IPv6 only (their IPv4 addresses removed before the agents
    start); the ToR takes IPv4 over IPv6 sessions (capability extended-nexthop)."""
    yield from run_cluster(request, v6_underlay=True)


def run_cluster(request: pytest.FixtureRequest, v6_underlay: bool) -> Iterator[Cluster]:
    kind = str(request.param)
    topo = build_topo(kind, 2)
    tmp = Path(tempfile.mkdtemp(prefix="rrb-agent-"))
    agents: dict[str, subprocess.Popen[bytes]] = {}
    try:
        root = tmp / "manifests"
        root.mkdir()
        manifests(root, topo, v6_underlay)
        Operator(root).reconcile(ManifestDir(root).load())
        for n in topo.nodes:
            if v6_underlay:
                n.ns.ip("addr", "del", f"{n.addr4}/24", "dev", "eth0")
                topo.tor_neighbor(n, address=n.addr6, families=("ipv4", "ipv6"),
                                  extended_nexthop=True)
            else:
                topo.tor_neighbor(n)
            log = open(tmp / f"agent-n{n.idx}.log", "wb")  # noqa: SIM115
            agents[f"n{n.idx}"] = n.ns.popen(
                [*RACKROUTE, "agent", "--node", f"n{n.idx}", "--manifests", str(root),
                 "--speaker", kind, "--state-dir", str(tmp / f"state-n{n.idx}"),
                 "--metrics-port", "0", "--resync", "5", "--import-routes"],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).parents[3]))
        yield Cluster(topo, root, agents)
    finally:
        stop_all(agents.values())
        kill_leftover_speakers(tmp)
        topo.lab.close()
        logs = "".join((f.name + ":\n" + f.read_text(errors="replace")[-3000:])
                       for f in tmp.glob("agent-*.log"))
        shutil.rmtree(tmp, ignore_errors=True)
        if hasattr(request.node, "rep_call") and request.node.rep_call.failed:
            print(logs)


def tor_paths(c: Cluster) -> dict[str, list[dict[str, object]]]:
    return c.topo.tor.bgp_routes()


def nexthops(routes: list[dict[str, object]]) -> set[str]:
    return {str(h["ip"]) for r in routes for h in r.get("nexthops", [])}  # type: ignore[union-attr]


@pytest.mark.timeout(150)
def test_agents_advertise_the_plan_and_follow_changes(cluster: Cluster) -> None:
    c = cluster
    want = {"10.244.0.0/24", "10.244.1.0/24", "198.51.100.0/32", "198.51.100.1/32"}
    wait_for(lambda: want <= set(tor_paths(c)), 60, 0.2, "planned paths at the ToR")
    wait_for(lambda: want <= c.topo.tor.installed_bgp(), 20, 0.2, "routes in the ToR kernel")
    routes = tor_paths(c)
    # web (Cluster): both nodes; local (Local, endpoint on n1): only n1
    assert nexthops(routes["198.51.100.0/32"]) == {"10.55.0.11", "10.55.0.12"}
    assert nexthops(routes["198.51.100.1/32"]) == {"10.55.0.11"}
    d = c.topo.tor.bgp_route_detail("198.51.100.0/32")["paths"][0]
    assert d["community"]["string"] == "65000:200"
    assert d["largeCommunity"]["string"] == "65000:1:2"
    pod = c.topo.tor.bgp_route_detail("10.244.1.0/24")["paths"][0]
    assert pod["community"]["string"] == "65000:100"

    # status files and the CLI say Established
    wait_for(lambda: all(p["state"] == "established"
                         for d in read_nodes(c.root).values() for i in d["instances"]
                         for p in i["peers"]) and len(read_nodes(c.root)) == 2,
             20, 0.2, "Established in the status files")
    out = subprocess.run([*RACKROUTE, "bgp", "peers", "--manifests", str(c.root)],
                         capture_output=True, text=True, check=True).stdout
    lines = [ln.split() for ln in out.splitlines()[1:] if ln.strip()]
    rows = [ln for ln in lines if ln[1] != "problem:"]
    assert {(ln[0], ln[1], ln[2], ln[3], ln[4]) for ln in rows} == {
        ("n1", "65011", "65000", "10.55.0.1", "established"),
        ("n2", "65012", "65000", "10.55.0.1", "established"),
    }
    # the peer config's 1 s connect retry: gobgpd applies it, ExaBGP says it cannot
    said = [" ".join(ln) for ln in lines if ln[1] == "problem:"]
    assert len(said) == (2 if c.topo.kind == "exabgp" else 0), said
    assert all("spec.timers.connectRetryTimeSeconds 1: not applied" in m for m in said)

    # native routing: n1 learned n2's pod CIDR, and a ping between the CIDRs works
    n1, n2 = c.topo.nodes
    n1.ns.add_address("lo", "10.244.0.1/32")
    n2.ns.add_address("lo", "10.244.1.1/32")
    wait_for(lambda: "10.244.1.0/24 via 10.55.0.12 dev eth0 proto 201"
             in n1.ns.ip("route").stdout, 20, 0.2, "learned route in n1's kernel")
    wait_for(lambda: "10.244.0.0/24 via 10.55.0.11 dev eth0 proto 201"
             in n2.ns.ip("route").stdout, 20, 0.2, "learned route in n2's kernel")
    ping = n1.ns.run(["ping", "-c", "2", "-W", "1", "-I", "10.244.0.1", "10.244.1.1"],
                     check=False)
    assert ping.returncode == 0, ping.stdout

    # a changed manifest: the Local endpoint moves to n2, web is deleted
    f = c.root / "all.yaml"
    docs = list(yaml.safe_load_all(f.read_text()))
    kept = []
    for d in docs:
        meta = d["metadata"]
        if meta["name"] in ("web", "web-1"):
            continue
        if meta["name"] == "local-1":
            d["endpoints"][0]["nodeName"] = "n2"
        kept.append(d)
    f.write_text(yaml.safe_dump_all(kept))
    Operator(c.root).reconcile(ManifestDir(c.root).load())
    wait_for(lambda: "198.51.100.0/32" not in tor_paths(c), 20, 0.2, "web withdrawn")
    wait_for(lambda: nexthops(tor_paths(c).get("198.51.100.1/32", [])) == {"10.55.0.12"},
             20, 0.2, "local now only via n2")

    # SIGTERM: clean exit
    for p in c.agents.values():
        p.send_signal(signal.SIGTERM)
    for p in c.agents.values():
        assert p.wait(timeout=20) == 0


@pytest.mark.timeout(120)
def test_bad_peer_config_is_reported_and_the_good_peer_works(cluster: Cluster) -> None:
    c = cluster
    f = c.root / "all.yaml"
    docs = list(yaml.safe_load_all(f.read_text()))
    for d in docs:
        if d["kind"] == "BGPClusterConfig":
            d["spec"]["bgpInstances"][0]["peers"] += [
                {"name": "ghost", "peerAddress": "10.55.0.99", "peerASN": 65000,
                 "peerConfigRef": {"name": "nope"}},
                {"name": "silent", "peerAddress": "10.55.0.98", "peerASN": 65000,
                 "peerConfigRef": {"name": "default"}}]
    f.write_text(yaml.safe_dump_all(docs))
    wait_for(lambda: {"10.244.0.0/24", "10.244.1.0/24"} <= set(tor_paths(c)), 60, 0.2,
             "the good peer still gets its paths")
    wait_for(lambda: any("BGPPeerConfig 'nope' not found" in p
                         for d in read_nodes(c.root).values() for p in d.get("problems", [])),
             20, 0.2, "problem in node status")
    out = subprocess.run([*RACKROUTE, "bgp", "peers", "--manifests", str(c.root), "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    peers = [p["peerAddress"] for d in json.loads(out).values() for i in d["instances"]
             for p in i["peers"]]
    assert "10.55.0.99" not in peers
    # a peer nobody answers for: its status and the CLI say why it is not up
    wait_for(lambda: all((p.get("lastError") or "").startswith(
                 "no TCP connection with 10.55.0.98 port 179")
                 for d in read_nodes(c.root).values() for i in d["instances"]
                 for p in i["peers"] if p["peerAddress"] == "10.55.0.98")
             and len(read_nodes(c.root)) == 2, 20, 0.2, "lastError in the status")

    def not_up() -> list[str]:
        out = subprocess.run([*RACKROUTE, "bgp", "peers", "--manifests", str(c.root)],
                             capture_output=True, text=True, check=True).stdout
        return [ln for ln in out.splitlines() if " not up: " in ln]

    wait_for(lambda: sorted(ln.split(":")[0] for ln in not_up()) == ["n1", "n2"], 20, 0.5,
             "one peer not up per node, in the CLI")
    said = not_up()
    assert all("peer 10.55.0.98 (tor/silent) not up: no TCP connection" in ln for ln in said)
    assert all(p["lastError"] is None for d in read_nodes(c.root).values()
               for i in d["instances"] for p in i["peers"] if p["peerAddress"] == "10.55.0.1")


EXCLUDE_LB = "node.kubernetes.io/exclude-from-external-load-balancers"
GRACEFUL_SHUTDOWN = "bgp.rackroute.io/graceful-shutdown"
PODS = {"10.244.0.0/24", "10.244.1.0/24"}
WEB, LOCAL = "198.51.100.0/32", "198.51.100.1/32"  # web: Cluster; local: Local, on n1


def edit_node(c: Cluster, node: str, part: str, changes: dict[str, str | None]) -> None:
    """Sets (or with None removes) entries of the Node manifest's metadata.<part> (labels,
    annotations), as `kubectl label` / `kubectl annotate` would."""
    f = c.root / "all.yaml"
    docs = list(yaml.safe_load_all(f.read_text()))
    for d in docs:
        if d["kind"] == "Node" and d["metadata"]["name"] == node:
            entries = d["metadata"].setdefault(part, {})
            for k, v in changes.items():
                if v is None:
                    entries.pop(k, None)
                else:
                    entries[k] = v
    f.write_text(yaml.safe_dump_all(docs))


@pytest.mark.timeout(150)
def test_a_node_labelled_exclude_from_external_load_balancers_withdraws_its_lb_ips(
        cluster: Cluster) -> None:
    """n1 labelled: the ToR has web's LoadBalancer IP via n2 only and the Local service
    (endpoint on n1 alone) nowhere, both pod CIDRs stay; the status says why; the label
    removed, n1 advertises them again."""
    c = cluster
    n1, n2 = c.topo.nodes
    wait_for(lambda: PODS | {WEB, LOCAL} <= set(tor_paths(c)), 60, 0.2,
             "planned paths at the ToR")
    assert nexthops(tor_paths(c)[WEB]) == {n1.addr4, n2.addr4}
    edit_node(c, "n1", "labels", {EXCLUDE_LB: ""})

    def drained() -> bool:
        routes = tor_paths(c)
        return (nexthops(routes.get(WEB, [])) == {n2.addr4} and LOCAL not in routes
                and set(routes) >= PODS)

    wait_for(drained, 30, 0.2, "n1's LoadBalancer IPs withdrawn, the pod CIDRs kept")
    assert nexthops(tor_paths(c)["10.244.0.0/24"]) == {n1.addr4}
    wait_for(lambda: {s["subject"] for s in read_nodes(c.root).get("n1", {}).get(
                 "notAdvertised", []) if EXCLUDE_LB in s["reason"]}
             == {f"Service demo/web LoadBalancerIP {WEB[:-3]}",
                 f"Service demo/local LoadBalancerIP {LOCAL[:-3]}"},
             20, 0.2, "the status says why")
    edit_node(c, "n1", "labels", {EXCLUDE_LB: None})
    wait_for(lambda: nexthops(tor_paths(c).get(WEB, [])) == {n1.addr4, n2.addr4}
             and nexthops(tor_paths(c).get(LOCAL, [])) == {n1.addr4}, 30, 0.2,
             "n1's LoadBalancer IPs back at the ToR")


@pytest.mark.timeout(150)
def test_graceful_shutdown_annotation_tags_the_node_paths_and_the_tor_moves_away(
        cluster: Cluster) -> None:
    """n1 annotated: its paths stay but carry GRACEFUL_SHUTDOWN (FRR: "graceful-shutdown"),
    the ToR lowers their LOCAL_PREF to 0 and web's best path is n2's alone; the
    annotation removed, the paths are untagged and both nodes share web again."""
    c = cluster
    n1, n2 = c.topo.nodes
    wait_for(lambda: PODS | {WEB, LOCAL} <= set(tor_paths(c)), 60, 0.2,
             "planned paths at the ToR")

    def path_of(prefix: str, node: str) -> dict[str, Any]:
        paths = c.topo.tor.bgp_route_detail(prefix).get("paths", [])
        return next((p for p in paths if nexthops([p]) == {node}), {})

    def community(prefix: str, node: str) -> str:
        return str(path_of(prefix, node).get("community", {}).get("string", ""))

    edit_node(c, "n1", "annotations", {GRACEFUL_SHUTDOWN: "true"})
    wait_for(lambda: all("graceful-shutdown" in community(p, n1.addr4)
                         for p in ("10.244.0.0/24", WEB, LOCAL)), 30, 0.2,
             "n1's paths tagged graceful-shutdown at the ToR")
    assert set(community(WEB, n1.addr4).split()) == {"graceful-shutdown", "65000:200"}
    assert "graceful-shutdown" not in community(WEB, n2.addr4)
    assert PODS | {WEB, LOCAL} <= set(tor_paths(c))  # nothing withdrawn
    web = path_of(WEB, n1.addr4)
    assert web.get("locPrf") == 0, web  # FRR's receiver side of RFC 8326 (eBGP)
    assert path_of(WEB, n2.addr4).get("bestpath", {}).get("overall") is True
    wait_for(lambda: nexthops([r for r in tor_paths(c)[WEB] if r.get("multipath")
                               or r.get("bestpath")]) == {n2.addr4}, 20, 0.2,
             "web's traffic only via n2")
    edit_node(c, "n1", "annotations", {GRACEFUL_SHUTDOWN: None})
    wait_for(lambda: community(WEB, n1.addr4) == "65000:200", 30, 0.2,
             "n1's paths untagged again")


def kernel_routes(ns: Any, *args: str) -> str:
    return str(ns.ip("route", *args).stdout)


@pytest.mark.timeout(150)
def test_agents_on_an_ipv6_only_underlay_route_ipv4_over_ipv6_sessions(
        cluster6: Cluster) -> None:
    """RFC 8950 end to end with the real agents: no IPv4 address on the nodes' links, one
    IPv6 session each; the ToR installs the IPv4 pod CIDRs and LoadBalancer IPs through the
    nodes' IPv6 addresses, each node installs the other's IPv4 pod CIDR through an IPv6
    next hop (`via inet6`, --import-routes), and IPv4 pod traffic crosses."""
    c = cluster6
    n1, n2 = c.topo.nodes
    assert "inet " not in n1.ns.ip("-4", "addr", "show", "dev", "eth0").stdout
    want = {"10.244.0.0/24", "10.244.1.0/24", "198.51.100.0/32", "198.51.100.1/32"}
    wait_for(lambda: want <= c.topo.tor.installed_bgp(), 60, 0.2,
             "the IPv4 paths in the ToR's kernel")
    for prefix, node in (("10.244.0.0/24", n1), ("10.244.1.0/24", n2),
                         ("198.51.100.1", n1)):
        got = c.topo.tor_ns.ip("route", "get", prefix.split("/")[0]).stdout
        assert f"via inet6 {node.addr6} " in got, got
    routes = tor_paths(c)
    assert nexthops(routes["198.51.100.1/32"]) == {n1.addr6}  # Local: n1 alone
    assert nexthops(routes["198.51.100.0/32"]) == {n1.addr6, n2.addr6}
    n1.ns.add_address("lo", "10.244.0.1/32")
    n2.ns.add_address("lo", "10.244.1.1/32")
    wait_for(lambda: "10.244.1.0/24 via inet6 " in kernel_routes(n1.ns, "show", "proto", "201"),
             20, 0.2, "n1's route to n2's pods through an IPv6 next hop")
    wait_for(lambda: "10.244.0.0/24 via inet6 " in kernel_routes(n2.ns, "show", "proto", "201"),
             20, 0.2, "n2's route to n1's pods through an IPv6 next hop")
    ping = n1.ns.run(["ping", "-c", "2", "-W", "1", "-I", "10.244.0.1", "10.244.1.1"],
                     check=False)
    assert ping.returncode == 0, ping.stdout
