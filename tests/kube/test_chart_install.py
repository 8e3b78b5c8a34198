"""The Helm chart rendered by a real helm and applied to a real kube-apiserver: the server
takes every object, and the RBAC it grants is what the code needs, no more. The agent's and
the operator's service account tokens (from the TokenRequest API) run the kube source, the
operator's writes and the agent's BGPNodeConfig writes without one refusal, and each is
refused what belongs to the other."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controller.kubenodestatus import KubeNodeStatus, network_status, node_doc
from controller.leader import LeaderElector
from controller.operator import KubeOperator
from controller.sources.kube import (
    AGENT_KINDS,
    OPERATOR_KINDS,
    WATCH_CILIUM_KINDS,
    KubeSource,
    with_cilium,
)
from controller.sources.kubeapi import RESOURCES, ApiError, HTTPKubeAPI, KubeConfig, Resource
from controller.store import Store
from tests.kube.apiserver import GEN, REPO, ApiServer
from tests.kube.conftest import NAMESPACE, apply, cilium_crd, client, create_crds
from tests.unit.kube.cluster import lab_docs
from tests.unit.kube.test_node_status import doc as node_status_doc

HELM = GEN / "helm"
NS = "rackroute-system"
KINDS: dict[str, Resource] = {
    "ServiceAccount": Resource("ServiceAccount", "v1", "serviceaccounts", True),
    "ConfigMap": Resource("ConfigMap", "v1", "configmaps", True),
    "Service": RESOURCES["Service"],
    "ClusterRole": Resource("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles",
                            False),
    "ClusterRoleBinding": Resource("ClusterRoleBinding", "rbac.authorization.k8s.io/v1",
                                   "clusterrolebindings", False),
    "Role": Resource("Role", "rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": Resource("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings",
                            True),
    "DaemonSet": Resource("DaemonSet", "apps/v1", "daemonsets", True),
    "Deployment": Resource("Deployment", "apps/v1", "deployments", True),
    "RackrouteConfig": RESOURCES["RackrouteConfig"],
}


CHART = REPO / "helm" / "rackroute"
TEMPLATE = [str(HELM), "template", "rackroute", str(CHART), "--kube-version", "v1.34.4"]


def render(*values: str) -> list[dict[str, Any]]:
    sets = [a for v in values for a in ("--set", v)]
    out = subprocess.run([*TEMPLATE, "--namespace", NS, *sets], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def token(api: ApiServer, sa: str) -> str:
    got = api.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token",
                      {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": {"expirationSeconds": 3600}})
    return str(got["status"]["token"])


def as_account(api: ApiServer, sa: str) -> HTTPKubeAPI:
    return HTTPKubeAPI(KubeConfig(api.url, token=token(api, sa), ca_file=api.ca_file))


def install(api: ApiServer, *values: str) -> None:
    """The chart rendered with `values`, and the lab's cluster, with the chart's
    RackrouteConfig in place of the lab's."""
    if not HELM.exists():
        pytest.skip(f"missing helm ({HELM}); run make setup")
    with client(api) as admin:
        admin.create(NAMESPACE, {"metadata": {"name": NS}})
        for d in render(*values):
            res = KINDS[d["kind"]]
            admin.create(res, d, NS if res.namespaced else "")
        apply(admin, [d for d in lab_docs() if d["kind"] != "RackrouteConfig"])


@pytest.fixture
def installed(fresh_apiserver: ApiServer) -> Iterator[ApiServer]:
    install(fresh_apiserver, "datapath.enabled=true")
    yield fresh_apiserver


def test_helm_renders_what_the_server_takes_and_what_the_commands_accept() -> None:
    if not HELM.exists():
        pytest.skip(f"missing helm ({HELM}); run make setup")
    from controller.cli import build_parser

    for values, source_flag in (((), "--in-cluster"), (("source=manifests",), "--manifests")):
        docs = render(*values)
        by_kind = {d["kind"]: d for d in docs}
        agent = by_kind["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
        op = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        for c in (agent, op):
            args = [a.replace("$(NODE_NAME)", "n1") for a in c["args"]]
            assert source_flag in args
            assert "--watch-cilium-crds" not in args  # opt-in
            build_parser().parse_args(args)  # exits on a flag the command does not take
        mounts = {m["name"] for m in agent["volumeMounts"]}
        assert ("manifests" in mounts) == (source_flag == "--manifests")
        # with manifests the agent writes the conflist, and the init container does
        # not wait for the API server; from the API server the init container writes the
        # first one (the node goes Ready before the agent runs); the agent keeps it either
        # way, at the path the host's CNI conf dir is mounted at in its container
        init = by_kind["DaemonSet"]["spec"]["template"]["spec"]["initContainers"][0]
        by_agent = {e["name"]: e.get("value") for e in init["env"]}.get("CNI_CONF_BY_AGENT")
        assert (by_agent == "1") == (source_flag == "--manifests")
        parsed = build_parser().parse_args([a.replace("$(NODE_NAME)", "n1")
                                            for a in agent["args"]])
        conf_mount = next(m["mountPath"] for m in agent["volumeMounts"]
                          if m["name"] == "cni-conf")
        assert parsed.cni_conf == f"{conf_mount}/05-rackroute.conflist"
        assert (parsed.cni_mtu, parsed.cni_network_name) == (1500, "rackroute")
        # the probes ask the agent whether it has done its work, on its metrics port
        port = int(parsed.metrics_port)
        assert {k: (agent[k]["httpGet"]["path"], agent[k]["httpGet"]["port"])
                for k in ("readinessProbe", "livenessProbe")} == {
            "readinessProbe": ("/readyz", port), "livenessProbe": ("/healthz", port)}
    docs = render("k8sServiceHost=10.0.0.5", "k8sServicePort=6443")
    for d in docs:
        if d["kind"] in ("DaemonSet", "Deployment"):
            pod = d["spec"]["template"]["spec"]
            for c in pod["containers"] + pod.get("initContainers", []):
                e = {v["name"]: v.get("value") for v in c["env"]}
                assert (e["KUBERNETES_SERVICE_HOST"], e["KUBERNETES_SERVICE_PORT"]) == (
                    "10.0.0.5", "6443"), c["name"]
    # network policy: the agent's flag, and its read of pods and policies, only when asked
    for on in (False, True):
        docs = render("datapath.enabled=true", f"datapath.networkPolicy={str(on).lower()}")
        by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        agent = by_kind[("DaemonSet", "rackroute-agent")]["spec"]["template"]["spec"][
            "containers"][0]
        assert ("--network-policy" in agent["args"]) == on
        build_parser().parse_args([a.replace("$(NODE_NAME)", "n1") for a in agent["args"]])
        rules = by_kind[("ClusterRole", "rackroute-agent")]["rules"]
        reads = {r for rule in rules for r in rule["resources"]}
        assert ({"pods", "namespaces", "networkpolicies"} <= reads) == on
        assert not ({"pods", "networkpolicies"} & reads) or on
    # Cilium's objects: the flag for both commands, and their read, only when asked
    for values in (("watchCiliumCRDs=true",), ("watchCiliumCRDs=true", "source=manifests")):
        by_kind = {(d["kind"], d["metadata"]["name"]): d for d in render(*values)}
        kube_source = "source=manifests" not in values
        for kind, name in (("DaemonSet", "rackroute-agent"), ("Deployment", "rackroute-operator")):
            c = by_kind[(kind, name)]["spec"]["template"]["spec"]["containers"][0]
            args = [a.replace("$(NODE_NAME)", "n1") for a in c["args"]]
            assert ("--watch-cilium-crds" in args) == kube_source
            assert build_parser().parse_args(args).watch_cilium_crds == kube_source
        for role in ("rackroute-agent", "rackroute-operator"):
            rules = by_kind[("ClusterRole", role)]["rules"]
            cilium = [r for r in rules if "cilium.io" in r["apiGroups"]]
            assert [r["verbs"] for r in cilium] == [["get", "list", "watch"]]
    bad = subprocess.run([*TEMPLATE, "--set", "source=etcd"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "source must be kubernetes or manifests" in bad.stderr



def test_helm_refuses_network_policy_without_the_datapath() -> None:
    """datapath.networkPolicy without datapath.enabled would enforce nothing: helm fails,
    naming both values; with the datapath it renders."""
    if not HELM.exists():
        pytest.skip(f"missing helm ({HELM}); run make setup")
    bad = subprocess.run([*TEMPLATE, "--set", "datapath.networkPolicy=true"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "datapath.networkPolicy" in bad.stderr and "datapath.enabled" in bad.stderr
    assert render("datapath.networkPolicy=true", "datapath.enabled=true")


def _install_cni_env(*values: str) -> dict[str, str | None]:
    ds = next(d for d in render(*values) if d["kind"] == "DaemonSet")
    init = ds["spec"]["template"]["spec"]["initContainers"][0]
    return {e["name"]: e.get("value") for e in init["env"]}


def test_helm_gives_the_plugin_the_pin_dir_whenever_policy_is_on() -> None:
    """Without per-packet LB and with kernel host routing the pods' veths carry nothing,
    but under network policy new pods still need the policy programs: the plugin gets
    the pin dir, told to attach those alone."""
    if not HELM.exists():
        pytest.skip(f"missing helm ({HELM}); run make setup")
    bare = ("datapath.enabled=true", "datapath.perPacketLB=false",
            "datapath.socketLBCgroup=/sys/fs/cgroup/kubepods", "datapath.hostRouting=kernel")
    env = _install_cni_env(*bare, "datapath.networkPolicy=true")
    assert env["CNI_BPF_PIN_DIR"] == "/sys/fs/bpf/rackroute/$(NODE_NAME)"
    assert (env["CNI_BPF_POD_PROGRAMS"], env["CNI_BPF_POLICY_WAIT"]) == ("0", "10")
    env = _install_cni_env(*bare)
    assert not {"CNI_BPF_PIN_DIR", "CNI_BPF_POD_PROGRAMS", "CNI_BPF_POLICY_WAIT"} & set(env)
    env = _install_cni_env("datapath.enabled=true", "datapath.networkPolicy=true")
    assert env["CNI_BPF_PIN_DIR"] and "CNI_BPF_POD_PROGRAMS" not in env

def test_the_service_accounts_can_do_their_work_and_no_more(installed: ApiServer) -> None:
    agent = as_account(installed, "rackroute-agent")
    operator = as_account(installed, "rackroute-operator")
    try:
        # the operator: reads its kinds, writes allocations and conditions, no refusal
        store = Store()
        src = KubeSource(operator, store, OPERATOR_KINDS, secrets_namespace=NS)
        assert src.poll(timeout=20), dict(src.problems())
        assert not src.problems()
        op = KubeOperator(operator)
        assert op.reconcile(store.snapshot())
        assert not op.writer.failures, op.writer.failures
        with client(installed) as admin:  # its events too (a lost event is only logged)
            assert admin.list(RESOURCES["Event"], "demo")[0]
        src.close()
        # the agent: reads every kind (Secrets in the release namespace), writes its node
        store = Store()
        src = KubeSource(agent, store, AGENT_KINDS, secrets_namespace=NS)
        assert src.poll(timeout=20), dict(src.problems())
        assert not src.problems()
        assert store.snapshot().node_networks  # the operator's writes, seen by the agent
        src.close()
        # an instance that does not listen (localPort unset) is taken as well
        quiet = node_status_doc()
        quiet["instances"][0]["localPort"] = -1
        KubeNodeStatus(agent).write(quiet, "2026-11-27T00:00:00Z")  # raises if refused
        KubeNodeStatus(agent).write(node_status_doc(), "2026-11-27T00:00:00Z")
        # the schema keeps every field the agent writes (the API server prunes the others)
        back = node_doc(agent.get(RESOURCES["BGPNodeConfig"], "n1"))
        [peer] = back["instances"][0]["peers"]
        assert peer["bfd"] == {"state": "up", "diag": "none"}
        assert peer["appliedTimers"] == {"holdTimeSeconds": 9, "keepAliveTimeSeconds": 3}
        assert KubeNodeStatus(agent).write_network(
            "node-1", network_status(True, None, "2026-11-27T00:00:00Z"))
        # the CRD takes the most problems the agent ever writes, at their longest
        assert KubeNodeStatus(agent).write_network(
            "node-1", network_status(False, None, "2026-11-27T00:00:00Z",
                                     ["é" * 5000] * 40))
        # the operator's lease, in the release namespace
        assert LeaderElector(operator, NS, "operator-0").step()
        # least privilege, both ways
        for api, res, name, ns, sub in (
                (agent, RESOURCES["Service"], "web-local", "demo", "status"),
                (agent, RESOURCES["NodeNetwork"], "node-1", "", ""),
                (operator, RESOURCES["BGPNodeConfig"], "n1", "", "status")):
            with pytest.raises(ApiError) as e:
                api.merge_patch(res, name, {"metadata": {"labels": {"x": "y"}}}, ns, sub)
            assert e.value.status == 403
        for api in (agent, operator):  # Secrets in the release namespace alone
            with pytest.raises(ApiError) as e:
                api.list(RESOURCES["Secret"], "default")
            assert e.value.status == 403
            # and nothing of Cilium's without watchCiliumCRDs
            with pytest.raises(ApiError) as e:
                api.list(RESOURCES["CiliumLoadBalancerIPPool"])
            assert e.value.status == 403
    finally:
        agent.close()
        operator.close()


def test_with_watch_cilium_crds_both_accounts_read_cilium_objects_and_write_none(
        fresh_apiserver: ApiServer) -> None:
    create_crds(fresh_apiserver, [cilium_crd(k) for k in WATCH_CILIUM_KINDS])
    install(fresh_apiserver, "watchCiliumCRDs=true")
    pool = RESOURCES["CiliumLoadBalancerIPPool"]
    with client(fresh_apiserver) as admin:
        admin.create(pool, {"metadata": {"name": "cil"},
                            "spec": {"blocks": [{"cidr": "192.0.2.0/28"}]}})
        # a name the lab's rackroute pools have: told in an Event (reading the object)
        admin.create(pool, {"metadata": {"name": "general"},
                            "spec": {"blocks": [{"cidr": "198.51.100.0/28"}]}})
    agent = as_account(fresh_apiserver, "rackroute-agent")
    operator = as_account(fresh_apiserver, "rackroute-operator")
    try:
        for api, kinds in ((operator, OPERATOR_KINDS), (agent, AGENT_KINDS)):
            store = Store()
            src = KubeSource(api, store, with_cilium(kinds, True), secrets_namespace=NS)
            try:
                assert src.poll(timeout=20), dict(src.problems())
                assert not src.problems()
                assert store.snapshot().pools["cil"].meta.written_kind == pool.kind
            finally:
                src.close()
            for k in WATCH_CILIUM_KINDS:  # read-only, the status too
                for sub in ("", "status"):
                    with pytest.raises(ApiError) as e:
                        api.merge_patch(RESOURCES[k], "cil", {"metadata": {"labels": {"x": "y"}}},
                                        sub=sub)
                    assert e.value.status == 403, (k, sub)
                with pytest.raises(ApiError) as e:
                    api.delete(RESOURCES[k], "cil")
                assert e.value.status == 403, k
        # the operator's pass: allocations and the Cilium pool's Event, without one refusal
        store = Store()
        src = KubeSource(operator, store, with_cilium(OPERATOR_KINDS, True), secrets_namespace=NS)
        assert src.poll(timeout=20)
        src.close()
        op = KubeOperator(operator)
        assert op.reconcile(store.snapshot())
        assert not op.writer.failures, op.writer.failures
        with client(fresh_apiserver) as admin:
            evs = admin.list(RESOURCES["Event"], "default")[0]
        assert [(e["reason"], e["regarding"]["name"]) for e in evs
                if e["regarding"]["kind"] == pool.kind] == [("NameClash", "general")]
    finally:
        agent.close()
        operator.close()
