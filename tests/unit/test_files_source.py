"""The files source: parsing a directory, errors per object, last-good objects, status overlay."""

from __future__ import annotations

import ipaddress
import shutil
import threading
import time
from pathlib import Path

from controller.sources.files import FileSource, ManifestDir
from controller.status import write_operator
from controller.store import Store

LAB = Path(__file__).resolve().parents[2] / "examples" / "frr-lab" / "manifests"

POOL = """
apiVersion: rackroute.io/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: p1}
spec:
  blocks: [{cidr: 10.96.0.0/24}]
"""

BAD_POOL = """
apiVersion: rackroute.io/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: p1}
spec:
  blocks: [{cidr: 10.96.0.1/24}]
"""


def test_lab_manifests_load_without_errors() -> None:
    snap = ManifestDir(LAB).load()
    assert snap.errors == ()
    assert sorted(snap.nodes) == ["node-1", "node-2", "node-3"]
    assert "demo/web-local" in snap.services
    assert snap.network_config is not None
    assert snap.network_config.cluster_pool_v4_mask == 24


def test_bad_object_reported_others_load(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POOL.replace("p1", "good") + "---\n" + BAD_POOL)
    snap = ManifestDir(tmp_path).load()
    assert list(snap.pools) == ["good"]
    (err,) = snap.errors
    assert err.ref == "LoadBalancerIPPool p1"
    assert err.messages == (
        "LoadBalancerIPPool p1: spec.blocks[0].cidr: host bits set in '10.96.0.1/24', "
        "did you mean 10.96.0.0/24?",
    )


def test_object_turned_bad_keeps_last_good_version(tmp_path: Path) -> None:
    f = tmp_path / "pool.yaml"
    f.write_text(POOL)
    md = ManifestDir(tmp_path)
    assert "p1" in md.load().pools
    f.write_text(BAD_POOL)
    snap = md.load()
    assert str(snap.pools["p1"].blocks[0]) == "10.96.0.0/24"
    assert snap.errors[0].messages[0].endswith("(keeping the last good version)")


def test_yaml_syntax_error_keeps_that_files_objects(tmp_path: Path) -> None:
    f = tmp_path / "pool.yaml"
    f.write_text(POOL)
    (tmp_path / "other.yaml").write_text(POOL.replace("p1", "p2"))
    md = ManifestDir(tmp_path)
    md.load()
    f.write_text("apiVersion: [unclosed\n")
    snap = md.load()
    assert sorted(snap.pools) == ["p1", "p2"]
    (err,) = snap.errors
    assert err.ref == "pool.yaml"
    assert err.messages[0].startswith("pool.yaml: YAML syntax error at line")


def test_duplicate_definition_first_file_wins(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POOL)
    (tmp_path / "b.yaml").write_text(POOL.replace("10.96.0.0/24", "10.97.0.0/24"))
    snap = ManifestDir(tmp_path).load()
    assert str(snap.pools["p1"].blocks[0]) == "10.96.0.0/24"
    assert "defined in both a.yaml and b.yaml; using a.yaml" in snap.errors[0].messages[0]


def test_status_overlay_sets_ingress_and_node_networks(tmp_path: Path) -> None:
    shutil.copytree(LAB, tmp_path / "m")
    root = tmp_path / "m"
    write_operator(
        root,
        {
            "services": {"demo/web-local": {"ingress": ["10.96.100.7"]}},
            "nodeNetworks": {
                "node-1": {"podCIDRs": ["10.244.9.0/24"], "bgpRouterID": "10.255.0.9"},
                "node-2": {"podCIDRs": ["10.244.8.0/24"], "bgpRouterID": "fd00::9"},
            },
        },
    )
    snap = ManifestDir(root).load()
    assert snap.services["demo/web-local"].status_ingress == (ipaddress.ip_address("10.96.100.7"),)
    assert snap.node_networks["node-1"].pod_cidrs == (ipaddress.ip_network("10.244.9.0/24"),)
    assert snap.node_networks["node-1"].bgp_router_id == ipaddress.IPv4Address("10.255.0.9")
    assert snap.node_networks["node-2"].bgp_router_id is None  # a hand edit gone wrong
    assert snap.errors == ()  # the status directory is not read as manifests


def test_file_source_publishes_on_change_only(tmp_path: Path) -> None:
    (tmp_path / "pool.yaml").write_text(POOL)
    store = Store()
    src = FileSource(tmp_path, store)
    assert src.poll() is True
    assert store.wait(0) is True
    assert src.poll() is False
    assert store.wait(0) is False
    (tmp_path / "pool2.yaml").write_text(POOL.replace("p1", "p2"))
    assert src.poll() is True
    assert sorted(store.snapshot().pools) == ["p1", "p2"]


def test_store_signal_coalesces() -> None:
    store = Store()
    for _ in range(5):
        store.poke()
    assert store.wait(0) is True
    assert store.wait(0) is False
    t = threading.Timer(0.05, store.poke)
    t.start()
    assert store.wait(2) is True


def test_unchanged_files_keep_their_objects(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POOL)
    (tmp_path / "b.yaml").write_text(POOL.replace("p1", "p2"))
    md = ManifestDir(tmp_path)
    first = md.load()
    (tmp_path / "b.yaml").write_text(POOL.replace("p1", "p2").replace("10.96.0.0", "10.97.0.0"))
    second = md.load()
    assert second.pools["p1"] is first.pools["p1"]  # a.yaml was not parsed again
    assert second.pools["p2"] is not first.pools["p2"]
    assert str(second.pools["p2"].blocks[0]) == "10.97.0.0/24"


def test_running_source_sees_a_write(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POOL)
    store = Store()
    src = FileSource(tmp_path, store, interval=5.0)  # long poll: the change must wake it
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(stop,))
    t.start()
    try:
        assert store.wait(5)
        assert list(store.snapshot().pools) == ["p1"]
        (tmp_path / "b.yaml").write_text(POOL.replace("p1", "p2"))
        assert store.wait(4)
        assert sorted(store.snapshot().pools) == ["p1", "p2"]
    finally:
        stop.set()
        t.join(10)


def _running(src: FileSource) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(stop,))
    t.start()
    return stop, t


def test_an_idle_watched_directory_is_not_read_again(tmp_path: Path) -> None:
    """With inotify, nothing changing means no re-read between the slow safety checks
    (reading 10k manifests every poll kept an idle agent at 60 % of a core)."""
    (tmp_path / "a.yaml").write_text(POOL)
    store = Store()
    src = FileSource(tmp_path, store, interval=0.01, rescan=60.0)
    reads = []
    real = src.dir.fingerprint

    def counted() -> tuple[tuple[str, int, int], ...]:
        reads.append(1)
        return real()

    src.dir.fingerprint = counted  # type: ignore[method-assign]
    stop, t = _running(src)
    try:
        assert store.wait(5)
        time.sleep(0.5)  # 50 intervals
        assert len(reads) == 1
        (tmp_path / "b.yaml").write_text(POOL.replace("p1", "p2"))
        assert store.wait(4)  # a change is still seen at once
        assert sorted(store.snapshot().pools) == ["p1", "p2"]
    finally:
        stop.set()
        t.join(10)


def test_the_safety_rescan_finds_a_directory_made_after_the_start(tmp_path: Path) -> None:
    root = tmp_path / "later"  # not there yet: nothing to watch
    store = Store()
    stop, t = _running(FileSource(root, store, interval=0.01, rescan=0.1))
    try:
        assert store.wait(5) and store.snapshot().errors  # "not a directory"
        root.mkdir()
        (root / "a.yaml").write_text(POOL)
        assert store.wait(5)
        assert list(store.snapshot().pools) == ["p1"]
    finally:
        stop.set()
        t.join(10)
