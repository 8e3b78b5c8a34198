"""`rackroute operator --kubeconfig` against a real kube-apiserver, with the lab's cluster:
LoadBalancer IPs in Service status, pod CIDRs in NodeNetworks, conditions on the objects;
kill -9 and a restart change nothing; bad input lands on its object while the rest goes
on; a deleted node's NodeNetwork goes. `rackroute plan --kubeconfig` reads the same."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.lab.netns import wait_for
from controller.leader import LEASE
from controller.sources.kubeapi import RESOURCES, ApiError, HTTPKubeAPI
from tests.kube.apiserver import ApiServer
from tests.kube.conftest import apply, client
from tests.unit.kube.cluster import lab_docs
from tests.unit.kube.kubeapi_contract import service

RACKROUTE = [sys.executable, "-m", "controller.cli"]
SVC = RESOURCES["Service"]
NN = RESOURCES["NodeNetwork"]
POOL = RESOURCES["LoadBalancerIPPool"]
NODE = RESOURCES["Node"]


# the lab is dual-stack: an address / CIDR of each family
WEB_LOCAL = ["10.96.100.2", "fd00:96:100::2"]
NODE_2 = ["10.244.1.0/24", "fd00:244:0:1::/64"]

def ingress(kube: HTTPKubeAPI, ns: str, name: str) -> list[str]:
    st = kube.get(SVC, name, ns).get("status") or {}
    return [i["ip"] for i in (st.get("loadBalancer") or {}).get("ingress") or []]


def conditions(kube: HTTPKubeAPI, kind: str, name: str, ns: str = "") -> dict[str, Any]:
    st = kube.get(RESOURCES[kind], name, ns).get("status") or {}
    return {c["type"]: c for c in st.get("conditions") or []}


def versions(kube: HTTPKubeAPI) -> dict[str, str]:
    out = {}
    for res in (SVC, NN, POOL):
        items, _ = kube.list(res)
        for i in items:
            m = i["metadata"]
            out[f"{res.kind} {m.get('namespace', '')}/{m['name']}"] = m["resourceVersion"]
    return out


class Operator:
    def __init__(self, api: ApiServer, log: Path, *extra: str) -> None:
        self.api, self.log, self.extra = api, log, extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*RACKROUTE, "operator", "--kubeconfig", str(self.api.kubeconfig),
                 "--metrics-port", "0", *self.extra], stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def kube(fresh_apiserver: ApiServer) -> Iterator[HTTPKubeAPI]:
    """A client of this test's own server, holding the lab's cluster."""
    with client(fresh_apiserver) as c:
        apply(c, lab_docs())
        yield c


@pytest.fixture
def operator(fresh_apiserver: ApiServer, kube: HTTPKubeAPI, tmp_path: Path
             ) -> Iterator[Operator]:
    op = Operator(fresh_apiserver, tmp_path / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.kill()


def test_allocations_land_in_the_api_and_survive_kill_9(
        operator: Operator, kube: HTTPKubeAPI, fresh_apiserver: ApiServer) -> None:
    apiserver = fresh_apiserver
    wait_for(lambda: ingress(kube, "demo", "web-local") == WEB_LOCAL, 30,
             what="web-local's LoadBalancer IP in its status")
    wait_for(lambda: len(kube.list(NN)[0]) == 3, 10, what="three NodeNetworks")
    assert kube.get(NN, "node-2")["spec"]["podCIDRs"] == NODE_2
    sat = conditions(kube, "Service", "web-local", "demo")["rackroute.io/IPAMRequestSatisfied"]
    assert sat["status"] == "True"
    assert "IPsUsed" in conditions(kube, "LoadBalancerIPPool", "general")
    # and says so in events, as kubectl describe shows them
    evs, _ = kube.list(RESOURCES["Event"], "demo")
    assert any(e["reason"] == "IPAllocated" and e["regarding"]["name"] == "web-local"
               and "10.96.100.2" in e["note"] for e in evs)
    # the plan read from the cluster names the same addresses
    out = subprocess.run([*RACKROUTE, "plan", "--kubeconfig", str(apiserver.kubeconfig),
                          "-o", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["loadBalancerIPs"]["demo/web-local"]["ips"] == WEB_LOCAL
    assert plan["podCIDRs"]["node-2"]["cidrs"] == NODE_2
    # settled: kill -9, start again; nothing is written
    time.sleep(1.0)
    before = versions(kube)
    operator.kill()
    operator.start()
    time.sleep(4.0)
    assert operator.proc is not None and operator.proc.poll() is None
    assert versions(kube) == before


def test_bad_input_is_reported_on_its_object_and_the_rest_goes_on(
        operator: Operator, kube: HTTPKubeAPI) -> None:
    wait_for(lambda: ingress(kube, "demo", "web-local"), 30, what="the first allocation")
    kube.create(POOL, {"metadata": {"name": "broken"},
                       "spec": {"blocks": [{"start": "10.96.250.9", "stop": "10.96.250.1"}]}})
    valid = wait_for(lambda: conditions(kube, "LoadBalancerIPPool", "broken").get("Valid"), 15,
                     what="Valid on the broken pool")
    assert valid["status"] == "False"
    assert "stop" in valid["message"] and "10.96.250.1" in valid["message"]
    warned = wait_for(lambda: [e for e in kube.list(RESOURCES["Event"], "default")[0]
                               if e["regarding"]["name"] == "broken"], 10,
                      what="an event about the broken pool")
    assert (warned[0]["type"], warned[0]["reason"]) == ("Warning", "InvalidManifest")
    # a Node is not ours to put a condition on: why it is ignored is told in one Warning
    # event, which `kubectl describe node` finds (its name for a uid, as the kubelet's)
    apply(kube, [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-9"},
                  "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.300"}]}}])
    told = wait_for(lambda: [e for e in kube.list(RESOURCES["Event"], "default")[0]
                             if e["regarding"]["name"] == "node-9"], 15,
                    what="an event about node-9")
    assert (told[0]["type"], told[0]["reason"]) == ("Warning", "InvalidManifest")
    assert told[0]["regarding"]["kind"] == "Node" and told[0]["regarding"]["uid"] == "node-9"
    assert "status.addresses[0].address: not an IP address: '10.0.0.300'" in told[0]["note"]
    # a new service still gets an address, the old ones keep theirs
    svc = service("late")
    svc["metadata"]["namespace"] = "demo"
    kube.create(SVC, svc, "demo")
    wait_for(lambda: ingress(kube, "demo", "late"), 15, what="an IP for the new service")
    assert ingress(kube, "demo", "web-local") == WEB_LOCAL
    # a deleted node gives its pod CIDR back
    kube.delete(NODE, "node-3")
    wait_for(lambda: sorted(n["metadata"]["name"] for n in kube.list(NN)[0])
             == ["node-1", "node-2"], 15, what="node-3's NodeNetwork deleted")
    # told once, not every pass (several passes ran since)
    assert len([e for e in kube.list(RESOURCES["Event"], "default")[0]
                if e["regarding"]["name"] == "node-9"]) == 1


def test_router_ids_from_the_pool_land_in_the_node_networks(
        operator: Operator, kube: HTTPKubeAPI) -> None:
    """RackrouteConfig spec.bgpRouterIDPool: the operator writes one address per node into
    its NodeNetwork (the CRD's schema keeps the field), lowest first by node name, with a
    condition; a pool made too small leaves the last node without one, and says why."""
    wait_for(lambda: len(kube.list(NN)[0]) == 3, 30, what="three NodeNetworks")
    cfg = RESOURCES["RackrouteConfig"]

    def ids() -> dict[str, str]:
        return {n["metadata"]["name"]: n["spec"].get("bgpRouterID", "")
                for n in kube.list(NN)[0]}

    kube.merge_patch(cfg, "default", {"spec": {"bgpRouterIDPool": "10.255.0.0/29"}})
    wait_for(lambda: ids() == {"node-1": "10.255.0.1", "node-2": "10.255.0.2",
                               "node-3": "10.255.0.3"}, 15, what="a router ID per node")
    kube.merge_patch(cfg, "default", {"spec": {"bgpRouterIDPool": "10.255.0.0/30"}})
    wait_for(lambda: ids()["node-3"] == "", 15, what="node-3's router ID taken back")
    assert ids()["node-1"] == "10.255.0.1" and ids()["node-2"] == "10.255.0.2"

    def cond() -> dict[str, str]:
        return dict(conditions(kube, "NodeNetwork", "node-3")["rackroute.io/BGPRouterIDAllocated"])

    # the spec and the status are two writes: the condition may follow a moment later
    wait_for(lambda: cond()["status"] == "False", 15, what="node-3's condition")
    assert cond()["reason"] == "PoolExhausted"
    assert "node-3" in cond()["message"] and "10.255.0.0/30" in cond()["message"]

    def observed() -> dict[str, tuple[int, set[int]]]:
        """Per NodeNetwork: its generation, and its conditions' observedGeneration."""
        return {n["metadata"]["name"]: (n["metadata"]["generation"], {
            c["observedGeneration"] for c in (n.get("status") or {}).get("conditions") or []})
            for n in kube.list(NN)[0]}

    # every condition is at the generation of its NodeNetwork, whose spec the operator
    # changed twice (a router ID given, node-3's taken back)
    wait_for(lambda: all(gen == {g} for g, gen in observed().values()), 15,
             what="the conditions at their NodeNetworks' generations")
    assert observed()["node-3"][0] >= 3


def lease_holder(kube: HTTPKubeAPI) -> str:
    try:
        lease = kube.get(LEASE, "rackroute-operator", "default")
    except ApiError:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


@pytest.mark.timeout(120)
def test_two_operators_elect_one_writer_and_the_survivor_takes_over(
        fresh_apiserver: ApiServer, kube: HTTPKubeAPI, tmp_path: Path) -> None:
    def make(name: str) -> Operator:
        return Operator(fresh_apiserver, tmp_path / f"operator-{name}.log", "--leader-elect",
                        "--leader-elect-namespace", "default", "--leader-elect-identity", name)

    a, b = make("a"), make("b")
    try:
        a.start()
        wait_for(lambda: lease_holder(kube) == "a", 20, what="a holding the lease")
        wait_for(lambda: ingress(kube, "demo", "web-local"), 20, what="a's allocations")
        b.start()
        time.sleep(4)
        assert lease_holder(kube) == "a"
        # a dies without giving the lease up: b takes over once it expires (15 s)
        a.kill()
        svc = service("late")
        svc["metadata"]["namespace"] = "demo"
        kube.create(SVC, svc, "demo")
        wait_for(lambda: lease_holder(kube) == "b", 30, what="b holding the lease")
        wait_for(lambda: ingress(kube, "demo", "late"), 10, what="b allocating")
        assert ingress(kube, "demo", "web-local") == WEB_LOCAL
        # SIGTERM: b gives the lease up on its way out
        assert b.proc is not None
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(timeout=15) == 0
        assert lease_holder(kube) == ""
    finally:
        a.kill()
        b.kill()


def test_a_peer_configs_auth_secret_is_looked_for_where_the_agents_read_it(
        operator: Operator, kube: HTTPKubeAPI) -> None:
    """MissingAuthSecret comes from the Secrets the operator reads (in its namespace, as
    the agents): True while the Secret a BGPPeerConfig names is absent, False once it is
    there; the other conditions of the BGP objects are written healthy too."""
    pc = RESOURCES["BGPPeerConfig"]

    def auth() -> tuple[str, str]:
        c = conditions(kube, "BGPPeerConfig", "default").get("MissingAuthSecret") or {}
        return str(c.get("status")), str(c.get("reason"))

    wait_for(lambda: auth() == ("False", "NoAuthSecret"), 30, what="the healthy condition")
    cc = conditions(kube, "BGPClusterConfig", "tor")
    assert {t: cc[t]["status"] for t in ("NoMatchingNode", "MissingPeerConfigs",
                                         "ConflictingClusterConfig")} == {
        "NoMatchingNode": "False", "MissingPeerConfigs": "False",
        "ConflictingClusterConfig": "False"}
    kube.merge_patch(pc, "default", {"spec": {"authSecretRef": "bgp-auth"}})
    wait_for(lambda: auth()[0] == "True", 15, what="MissingAuthSecret True")
    msg = conditions(kube, "BGPPeerConfig", "default")["MissingAuthSecret"]["message"]
    assert "spec.authSecretRef: Secret 'bgp-auth' not found" in msg
    kube.create(RESOURCES["Secret"], {"metadata": {"name": "bgp-auth"},
                                      "stringData": {"password": "s3cret"}}, "kube-system")
    wait_for(lambda: auth() == ("False", "SecretFound"), 15, what="the Secret found")
