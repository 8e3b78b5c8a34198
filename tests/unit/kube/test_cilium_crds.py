"""Cilium's spellings read from the cluster (--watch-cilium-crds), with the fake API: the
five kinds are listed and watched (cilium.io/v2, else v2alpha1) and turned into the
model; a cluster without them (404) works as before; a rackroute object and a Cilium one
of the same kind and name resolve the same way in both sources (the rackroute one wins);
and the operator never writes a cilium.io object, telling its problems in Warning Events,
once each."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cilium import model_ref, shadowed
from controller.cli import build_parser
from controller.kubecilium import NAME_CLASH
from controller.operator import KubeOperator
from controller.sources.files import ManifestDir
from controller.sources.kube import (
    OPERATOR_KINDS,
    WATCH_CILIUM_KINDS,
    KubeSource,
    ParseCache,
    with_cilium,
)
from controller.sources.kubeapi import RESOURCES, Obj, Resource
from controller.sources.kubefake import FakeKubeAPI
from controller.store import Snapshot, Store
from tests.unit.kube.cluster import raw_objects
from tests.unit.kube.kubeapi_contract import pool, service
from tests.unit.kube.test_kube_source import FAST, running, until

KINDS = with_cilium(OPERATOR_KINDS, True)
C_POOL = RESOURCES["CiliumLoadBalancerIPPool"]
C_CC = RESOURCES["CiliumBGPClusterConfig"]
CC = RESOURCES["BGPClusterConfig"]
SVC = RESOURCES["Service"]
EVENT = RESOURCES["Event"]
R = "rackroute.io/v1alpha1"


def doc(kind: str, name: str, spec: dict[str, Any], api: str = "cilium.io/v2") -> Obj:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec}


def cluster(name: str, asn: object, kind: str = "CiliumBGPClusterConfig",
            api: str = "cilium.io/v2", **peer: Any) -> Obj:
    inst: dict[str, Any] = {"name": "tor", "localASN": asn}
    if peer:
        inst["peers"] = [{"name": "tor-a", "peerAddress": "10.0.0.1", **peer}]
    return doc(kind, name, {"bgpInstances": [inst]}, api)


def c_pool(name: str, cidr: str) -> Obj:
    return doc("CiliumLoadBalancerIPPool", name, {"blocks": [{"cidr": cidr}]})


def asn(snap: Snapshot, name: str) -> int | None:
    return snap.cluster_configs[name].instances[0].local_asn


# ------------------------------------------------------------------ watched, into the model


def test_cilium_objects_are_listed_watched_and_turned_into_the_model() -> None:
    api = FakeKubeAPI()
    api.create(C_POOL, c_pool("cil", "192.0.2.0/28"))
    api.create(C_CC, cluster("cil-tor", 65099))
    with running(api, kinds=KINDS) as (src, store):
        snap = store.snapshot()
        assert snap.errors == ()
        blue = snap.pools["cil"]
        assert [str(b.cidr) for b in blue.blocks] == ["192.0.2.0/28"]
        assert (blue.meta.kind, blue.meta.written_ref) == (
            "LoadBalancerIPPool", "CiliumLoadBalancerIPPool cil")
        assert asn(snap, "cil-tor") == 65099
        assert snap.cluster_configs["cil-tor"].meta.written_kind == "CiliumBGPClusterConfig"
        # followed: a pool created later, an edit, a delete
        api.create(C_POOL, c_pool("late", "198.51.100.0/28"))
        until(store, lambda s: "late" in s.pools)
        api.merge_patch(C_CC, "cil-tor", {"spec": cluster("x", 65100)["spec"]})
        until(store, lambda s: "cil-tor" in s.cluster_configs and asn(s, "cil-tor") == 65100)
        api.delete(C_POOL, "cil")
        until(store, lambda s: "cil" not in s.pools)
        assert {r.res.api_version for r in src.reflectors
                if r.res.kind in WATCH_CILIUM_KINDS} == {"cilium.io/v2"}


def test_without_the_flag_no_cilium_resource_is_asked_for() -> None:
    api = FakeKubeAPI()
    api.create(C_POOL, c_pool("cil", "192.0.2.0/28"))
    mark = len(api.calls)
    assert with_cilium(OPERATOR_KINDS, False) == OPERATOR_KINDS
    with running(api, kinds=OPERATOR_KINDS) as (_, store):
        assert "cil" not in store.snapshot().pools
    assert api.calls[mark:] and not [p for _, p in api.calls[mark:] if "cilium.io" in p]


def test_cilium_crds_not_installed_leave_the_rest_working(
        caplog: pytest.LogCaptureFixture) -> None:
    api = FakeKubeAPI(installed=set(OPERATOR_KINDS))
    api.create(RESOURCES["LoadBalancerIPPool"], pool("ours", "192.0.2.0/28"))
    caplog.set_level(logging.INFO, "rackroute.kube")
    with running(api, kinds=KINDS) as (src, store):
        assert "ours" in store.snapshot().pools  # synced, published
        problems = src.problems()
        assert set(problems) == set(WATCH_CILIUM_KINDS)  # said, not fatal
        assert "not served" in problems["CiliumLoadBalancerIPPool"]
        # both versions asked for, and again later (the CRDs may come)
        lists = [p for v, p in api.calls if v == "list" and "ciliumloadbalancerippools" in p]
        assert {"/apis/cilium.io/v2/ciliumloadbalancerippools",
                "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools"} <= set(lists)
        until(store, lambda s: len([p for v, p in api.calls if v == "list"
                                    and p.endswith("/v2/ciliumloadbalancerippools")]) >= 3)
        # the rest is still followed
        api.create(SVC, service("web"), "default")
        until(store, lambda s: "default/web" in s.services)
        # Cilium installed now: found and read
        api.installed = None
        api.create(C_POOL, c_pool("cil", "198.51.100.0/28"))
        until(store, lambda s: "cil" in s.pools)
    missing = [r for r in caplog.records if "kube_resource_missing" in r.getMessage()
               and "kind=CiliumLoadBalancerIPPool" in r.getMessage()]
    assert len(missing) == 1  # logged once, not at every retry


def test_v2alpha1_is_read_where_v2_is_not_served() -> None:
    served = {f"cilium.io/v2alpha1 {k}" for k in WATCH_CILIUM_KINDS}
    api = FakeKubeAPI(installed=set(OPERATOR_KINDS) | served)
    old = C_POOL.versions()[1]
    assert old.api_version == "cilium.io/v2alpha1"
    api.create(old, c_pool("cil", "192.0.2.0/28"))
    with running(api, kinds=KINDS) as (src, store):
        assert "cil" in store.snapshot().pools
        assert not src.problems()
        [ref] = [r for r in src.reflectors if r.res.kind == "CiliumLoadBalancerIPPool"]
        assert ref.res == old
        api.create(old, c_pool("late", "198.51.100.0/28"))  # watched at v2alpha1
        until(store, lambda s: "late" in s.pools)
    assert not [p for v, p in api.calls if v == "watch" and "cilium.io/v2/" in p]


def test_the_flag_is_on_the_operator_agent_and_plan_command_lines() -> None:
    for cmd in (["operator"], ["agent", "--node", "n1"], ["plan"]):
        base = [*cmd, "--kubeconfig", "k"]
        assert build_parser().parse_args([*base, "--watch-cilium-crds"]).watch_cilium_crds
        assert not build_parser().parse_args(base).watch_cilium_crds


def test_the_agent_watches_the_cilium_kinds_only_when_asked(tmp_path: Path) -> None:
    from bgp.bfd_port import FakeBfd
    from bgp.fake import FakeSpeaker
    from controller.agent import Agent, AgentConfig

    for on in (False, True):
        a = Agent(AgentConfig(node="n1", manifests=None, api=FakeKubeAPI(),
                              state_dir=tmp_path, kube_cache_wait=None, watch_cilium=on),
                  factory=lambda instance: FakeSpeaker(), bfd_port=FakeBfd())
        assert isinstance(a.source, KubeSource)
        kinds = {r.res.kind for r in a.source.reflectors}
        assert (set(WATCH_CILIUM_KINDS) <= kinds) == on
        assert "EndpointSlice" in kinds


# ------------------------------------------------------------------ name clash


def kube_snapshot(docs: list[Obj]) -> Snapshot:
    return ParseCache().snapshot(docs, 1)


def dir_snapshot(tmp: Path, files: dict[str, list[Obj]]) -> Snapshot:
    for name, docs in files.items():
        (tmp / name).write_text(yaml.safe_dump_all(docs))
    return ManifestDir(tmp).load()


OURS = cluster("tor", 65011, "BGPClusterConfig", R)
THEIRS = cluster("tor", 65099)
CLASH_REF = "CiliumBGPClusterConfig tor"


def only_clash(snap: Snapshot) -> None:
    """The rackroute object is used; the Cilium one is left out with a problem naming
    both, on the Cilium object."""
    [err] = [e for e in snap.errors if "ignored" in e.messages[0]]
    assert err.ref == CLASH_REF
    assert "BGPClusterConfig tor" in err.messages[0].replace(CLASH_REF, "")
    assert "rackroute.io object wins" in err.messages[0]


@pytest.mark.parametrize("order", ["cilium-file-first", "cilium-file-last", "same-file"])
def test_directory_mode_the_rackroute_object_wins_whatever_the_file_order(
        tmp_path: Path, order: str) -> None:
    files = {"same-file": {"a.yaml": [THEIRS, OURS]},
             "cilium-file-first": {"a.yaml": [THEIRS], "b.yaml": [OURS]},
             "cilium-file-last": {"a.yaml": [OURS], "b.yaml": [THEIRS]}}[order]
    snap = dir_snapshot(tmp_path, files)
    assert asn(snap, "tor") == 65011
    assert snap.cluster_configs["tor"].meta.written_kind == ""
    only_clash(snap)
    assert len(snap.errors) == 1


@pytest.mark.parametrize("order", ["cilium-listed-first", "cilium-listed-last"])
def test_cluster_mode_the_rackroute_object_wins(order: str) -> None:
    docs = [THEIRS, OURS] if order == "cilium-listed-first" else [OURS, THEIRS]
    snap = kube_snapshot(docs)
    assert asn(snap, "tor") == 65011
    only_clash(snap)
    assert len(snap.errors) == 1


def test_a_broken_rackroute_object_is_not_stood_in_for_by_its_cilium_twin(
        tmp_path: Path) -> None:
    broken = cluster("tor", "x", "BGPClusterConfig", R)
    for snap in (kube_snapshot([THEIRS, broken]),
                 dir_snapshot(tmp_path, {"a.yaml": [THEIRS], "b.yaml": [broken]})):
        assert "tor" not in snap.cluster_configs
        only_clash(snap)
        [bad] = [e for e in snap.errors if e.ref == "BGPClusterConfig tor"]
        assert "localASN" in bad.messages[0]


def test_directory_mode_a_cilium_version_is_never_a_rackroute_objects_last_good_one(
        tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(THEIRS))
    md = ManifestDir(tmp_path)
    assert asn(md.load(), "tor") == 65099  # alone, the Cilium object is used
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cluster("tor", "x", "BGPClusterConfig", R)))
    snap = md.load()
    assert "tor" not in snap.cluster_configs
    [bad] = [e for e in snap.errors if e.ref == "BGPClusterConfig tor"]
    assert "keeping the last good version" not in bad.messages[0]
    # a broken file keeps its objects, and still shadows
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(OURS))
    assert asn(md.load(), "tor") == 65011
    (tmp_path / "b.yaml").write_text("{not yaml")
    snap = md.load()
    assert asn(snap, "tor") == 65011
    only_clash(snap)


def test_directory_mode_a_broken_files_cilium_object_is_shadowed_too(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(THEIRS))
    md = ManifestDir(tmp_path)
    assert asn(md.load(), "tor") == 65099
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(OURS))  # listed first: seen first
    (tmp_path / "b.yaml").write_text("{not yaml")  # keeps what it had, but not over ours
    snap = md.load()
    assert asn(snap, "tor") == 65011
    only_clash(snap)


def test_a_cilium_objects_parse_error_is_reported_on_it_in_both_modes(tmp_path: Path) -> None:
    bad = cluster("tor", "x")
    for snap in (kube_snapshot([bad]), dir_snapshot(tmp_path, {"a.yaml": [bad]})):
        [err] = snap.errors
        assert err.ref == CLASH_REF and "localASN" in err.messages[0]


def test_shadowed_pairs_each_cilium_ref_with_its_rackroute_twin() -> None:
    refs = ["CiliumBGPClusterConfig tor", "BGPClusterConfig tor", "CiliumLoadBalancerIPPool p",
            "LoadBalancerIPPool q", "CiliumBGPPeerConfig d", "BGPPeerConfig d"]
    assert shadowed(refs) == {"CiliumBGPClusterConfig tor": "BGPClusterConfig tor",
                              "CiliumBGPPeerConfig d": "BGPPeerConfig d"}
    assert model_ref("CiliumLoadBalancerIPPool p") == "LoadBalancerIPPool p"
    assert model_ref("Service default/web") == "Service default/web"


# ------------------------------------------------------------------ the operator


def operator_cluster(*docs: Obj, api: FakeKubeAPI | None = None) -> FakeKubeAPI:
    api = api or FakeKubeAPI()
    api.create(RESOURCES["Node"], {"metadata": {"name": "n1"}})
    for d in docs:
        res = RESOURCES[str(d["kind"])]
        api.create(res, d, "default" if res.namespaced else "")
    return api


def reconcile(api: FakeKubeAPI, op: KubeOperator, cache: ParseCache, passes: int = 3) -> None:
    for i in range(passes):
        op.reconcile(cache.snapshot(raw_objects(api, KINDS), i + 1))


def cilium_writes(api: FakeKubeAPI, since: int) -> list[tuple[str, str]]:
    """The calls after the first `since` that were not reads of a cilium.io object."""
    return [(v, p) for v, p in api.calls[since:]
            if "cilium.io" in p and v not in ("list", "watch", "get")]


def events(api: FakeKubeAPI) -> list[Obj]:
    return api.list(EVENT, "default")[0]


def test_the_operator_allocates_from_a_cilium_pool_and_writes_nothing_to_it() -> None:
    api = operator_cluster(c_pool("cil", "192.0.2.0/28"), service("web"))
    before, mark = api.get(C_POOL, "cil"), len(api.calls)
    reconcile(api, KubeOperator(api, lambda: "2026-11-28T00:00:00Z"), ParseCache())
    ingress = api.get(SVC, "web", "default")["status"]["loadBalancer"]["ingress"]
    [ip] = [ipaddress.ip_address(i["ip"]) for i in ingress]
    assert ip in ipaddress.ip_network("192.0.2.0/28")
    assert cilium_writes(api, mark) == []
    assert {v for v, p in api.calls[mark:] if "cilium.io" in p} == {"list"}  # the reads
    assert api.get(C_POOL, "cil") == before  # no status, no new resourceVersion
    # no rackroute pool of that name was written to either (the pool's counters are
    # not written anywhere)
    assert not [p for v, p in api.calls if v == "patch" and "loadbalancerippools" in p]
    assert events(api) and not [e for e in events(api) if e["type"] == "Warning"]


def test_cilium_problems_are_warning_events_on_them_once_each(
        caplog: pytest.LogCaptureFixture) -> None:
    api = operator_cluster(
        OURS, THEIRS,  # a clash
        cluster("cil", 65012, peerConfigRef={"name": "nope"}),  # MissingPeerConfigs
        doc("CiliumBGPPeerConfig", "p", {"timers": {"holdTimeSeconds": 70000}}),  # invalid
        pool("ours", "192.0.2.0/28"), c_pool("zcil", "192.0.2.8/29"))  # PoolConflict
    mark = len(api.calls)
    caplog.set_level(logging.WARNING, "rackroute.operator")
    op = KubeOperator(api, lambda: "2026-11-28T00:00:00Z")
    cache = ParseCache()
    reconcile(api, op, cache)
    told = {(e["regarding"]["kind"], e["regarding"]["name"], e["reason"]): e
            for e in events(api) if e["type"] == "Warning"}
    assert set(told) == {("CiliumBGPClusterConfig", "tor", NAME_CLASH),
                         ("CiliumBGPClusterConfig", "cil", "MissingPeerConfigs"),
                         ("CiliumBGPPeerConfig", "p", "InvalidManifest"),
                         ("CiliumLoadBalancerIPPool", "zcil", "PoolConflict")}
    assert len([e for e in events(api) if e["type"] == "Warning"]) == 4  # once each
    clash = told[("CiliumBGPClusterConfig", "tor", NAME_CLASH)]
    assert clash["regarding"]["apiVersion"] == "cilium.io/v2"
    assert clash["regarding"]["uid"] == api.get(C_CC, "tor")["metadata"]["uid"]
    assert "BGPClusterConfig tor" in clash["note"]
    assert "nope" in told[("CiliumBGPClusterConfig", "cil", "MissingPeerConfigs")]["note"]
    assert "holdTimeSeconds" in told[("CiliumBGPPeerConfig", "p", "InvalidManifest")]["note"]
    logged = [r.getMessage() for r in caplog.records
              if "object_problem object='Cilium" in r.getMessage()]
    assert len(logged) == 4
    # nothing of them on the rackroute object of the same name, nothing written to them
    ours = api.get(CC, "tor").get("status") or {}
    assert "Cilium" not in str(ours)
    assert cilium_writes(api, mark) == []
    # gone, then back: told again; the others not repeated
    api.delete(CC, "tor")
    reconcile(api, op, cache, 1)
    api.create(CC, OURS)
    reconcile(api, op, cache, 2)
    clashes = [e for e in events(api) if e["reason"] == NAME_CLASH]
    assert len(clashes) == 2 and clashes[0]["note"] == clashes[1]["note"]
    assert len([e for e in events(api) if e["type"] == "Warning"
                and e["reason"] in ("PoolConflict", "InvalidManifest")]) == 2


class Away(FakeKubeAPI):
    """The fake, its gets failing while `away`."""

    away = False

    def get(self, res: Resource, name: str, namespace: str = "") -> Obj:
        if self.away:
            raise OSError("connection refused")
        return super().get(res, name, namespace)


def test_a_cilium_problem_not_told_while_the_api_server_is_away_is_told_later() -> None:
    api = operator_cluster(OURS, THEIRS, api=Away())
    assert isinstance(api, Away)
    op = KubeOperator(api, lambda: "2026-11-28T00:00:00Z")
    snap = ParseCache().snapshot(raw_objects(api, KINDS), 1)
    api.away = True
    op.reconcile(snap)
    assert not [e for e in events(api) if e["type"] == "Warning"]
    api.away = False
    op.reconcile(snap)
    op.reconcile(snap)
    assert [e["reason"] for e in events(api) if e["type"] == "Warning"] == [NAME_CLASH]


def test_a_store_published_by_the_source_carries_the_clash() -> None:
    api = operator_cluster(OURS, THEIRS)
    store = Store()
    src = KubeSource(api, store, KINDS, backoff=FAST)
    try:
        assert src.poll(timeout=2.0)
        snap = store.snapshot()
        assert asn(snap, "tor") == 65011
        only_clash(snap)
    finally:
        src.close()
