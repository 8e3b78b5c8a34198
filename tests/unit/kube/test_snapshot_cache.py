"""The agent's saved snapshot: written atomically and owner-only, read back equal; every
reason not to use it (no file, another format or model, too old, truncated, not a
snapshot) refused and logged; never re-saved from itself. And the agent: an API server
that does not answer within the wait has it start from the saved view, which the live
view replaces once the server answers; with the cache off it keeps waiting."""

from __future__ import annotations

import copyreg
import logging
import os
import pickle
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import pytest

from bgp.bfd_port import FakeBfd
from bgp.fake import FakeSpeaker
from controller.agent import Agent, AgentConfig
from controller.sources import snapcache
from controller.sources.kube import ParseCache
from controller.sources.kubeapi import RESOURCES, Resource
from controller.sources.kubefake import FakeKubeAPI
from controller.sources.snapcache import MAGIC, SnapshotCache
from controller.store import Snapshot
from tests.unit.kube.cluster import create_all, lab_docs, raw_objects


def lab_snapshot() -> Snapshot:
    api = FakeKubeAPI()
    create_all(api, lab_docs())
    return ParseCache().snapshot(raw_objects(api), 7)


def test_a_saved_snapshot_reads_back_equal_and_owner_only(tmp_path: Path) -> None:
    snap = lab_snapshot()
    assert snap.services and snap.nodes and snap.pools  # a real view, not an empty one
    now = [1000.0]
    cache = SnapshotCache(tmp_path / "state" / "kube-snapshot", clock=lambda: now[0])
    cache.save(snap)
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    assert [p.name for p in cache.path.parent.iterdir()] == ["kube-snapshot"]  # no temp left
    now[0] += 42.0
    got = SnapshotCache(cache.path, clock=lambda: now[0]).load()
    assert got is not None
    back, age = got
    assert back == snap and back.revision == 7 and age == pytest.approx(42.0)
    assert isinstance(back.services, MappingProxyType)  # read-only as published
    # the process's own pickling is untouched: only the file's pickler knows proxies
    assert MappingProxyType not in copyreg.dispatch_table
    with pytest.raises(TypeError):
        pickle.dumps(snap)


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


@pytest.mark.parametrize(("name", "damage", "reason"), [
    ("magic", lambda d: b"something else\n" + d[len(MAGIC):], "not a snapshot file"),
    ("format", lambda d: d.replace(MAGIC + b"1 ", MAGIC + b"9 ", 1), "format ['9']"),
    ("truncated", lambda d: d[:len(d) // 2], "unreadable"),
])
def test_a_damaged_file_is_refused_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str,
        damage: Callable[[bytes], bytes], reason: str) -> None:
    cache = SnapshotCache(tmp_path / "kube-snapshot")
    cache.save(lab_snapshot())
    write(cache.path, damage(cache.path.read_bytes()))
    with caplog.at_level(logging.WARNING, "rackroute.kube"):
        assert SnapshotCache(cache.path).load() is None
    assert "event=kube_cache_unused" in caplog.text and reason in caplog.text, caplog.text


def test_too_old_another_model_or_not_a_snapshot_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    cache = SnapshotCache(tmp_path / "kube-snapshot", max_age=60, clock=lambda: now[0])
    cache.save(lab_snapshot())
    now[0] += 61
    with caplog.at_level(logging.WARNING, "rackroute.kube"):
        assert cache.load() is None
        assert "61 s old, more than 60 s" in caplog.text
        now[0] -= 2
        assert cache.load() is not None  # 59 s: still good
        monkeypatch.setattr(snapcache, "fingerprint", lambda: "0" * 16)
        assert cache.load() is None
        assert "written by an agent with another model" in caplog.text
        monkeypatch.undo()
        head = cache.path.read_bytes().split(b"\n", 2)
        cache.path.write_bytes(head[0] + b"\n" + head[1] + b"\n" + pickle.dumps({"x": 1}))
        assert cache.load() is None
        assert "holds a dict, not a snapshot" in caplog.text


def test_no_file_is_no_failure(tmp_path: Path) -> None:
    assert SnapshotCache(tmp_path / "none").load() is None


def test_the_model_fingerprint_follows_the_fields() -> None:
    assert snapcache.fingerprint() == snapcache.fingerprint()
    assert len(snapcache.fingerprint()) == 16


def test_maybe_save_writes_new_snapshots_at_most_every_interval(tmp_path: Path) -> None:
    cache = SnapshotCache(tmp_path / "kube-snapshot", interval=0.2)
    a, b = lab_snapshot(), lab_snapshot()
    assert cache.maybe_save(a) is True
    assert cache.maybe_save(a) is False  # the same object
    assert cache.maybe_save(b) is False  # too soon
    time.sleep(0.25)
    assert cache.maybe_save(b) is True
    # a snapshot loaded from the file is never written back (its age would restart)
    fresh = SnapshotCache(cache.path, interval=0.0)
    loaded = fresh.load()
    assert loaded is not None
    assert fresh.maybe_save(loaded[0]) is False


def test_a_failed_save_is_logged_not_raised(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    cache = SnapshotCache(tmp_path / "file" / "kube-snapshot")  # its directory is a file
    with caplog.at_level(logging.WARNING, "rackroute.kube"):
        assert cache.maybe_save(lab_snapshot()) is False
    assert "event=kube_cache_save_failed" in caplog.text
    # a failure in the child that writes it: reported, no file and no temporary left
    cache = SnapshotCache(tmp_path / "d" / "kube-snapshot")
    bad = Snapshot(errors=(lambda: 0,))  # type: ignore[arg-type]
    with pytest.raises(OSError, match="writing .*kube-snapshot: .*Can't pickle"):
        cache.save(bad)
    assert list((tmp_path / "d").iterdir()) == []
    cache.save(lab_snapshot())  # and the next one is written
    assert cache.load() is not None


# ---------------------------------------------------------------- the agent


class Outage(FakeKubeAPI):
    """The fake API server, every request refused while `down` is set (as the real
    client sees a server out of reach: the connection refused)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()

    def _check(self, res: Resource, namespace: str, verb: str) -> None:
        if self.down.is_set():
            raise ConnectionRefusedError(111, "Connection refused")
        super()._check(res, namespace, verb)


@contextmanager
def running(agent: Agent) -> Iterator[threading.Event]:
    stop = threading.Event()
    t = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield stop
    finally:
        stop.set()
        t.join(timeout=10)
        assert not t.is_alive()


def until(pred: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("not reached")


def agent(api: FakeKubeAPI, state: Path, wait: float | None) -> Agent:
    return Agent(AgentConfig(node="node-1", manifests=None, api=api, state_dir=state,
                             secrets_namespace="default", kube_cache_wait=wait),
                 factory=lambda instance: FakeSpeaker(), bfd_port=FakeBfd())


def from_cache_metric(a: Agent) -> float | None:
    return a.metrics.registry.get_sample_value("rackroute_kube_from_cache", {"node": "node-1"})


def test_an_agent_restarted_while_the_api_server_is_away_starts_from_its_saved_view(
        tmp_path: Path) -> None:
    api = Outage()
    create_all(api, lab_docs())
    first = agent(api, tmp_path, 5.0)
    with running(first):
        until(lambda: (tmp_path / "kube-snapshot").exists())
    saved = first.store.snapshot()
    assert saved.services

    api.down.set()
    second = agent(api, tmp_path, 0.3)
    with running(second):
        until(lambda: second.from_cache)
        assert second.store.snapshot() == saved  # the view it was serving
        until(lambda: second.loop.passes >= 1)  # the reconcilers run on it
        assert from_cache_metric(second) == 1.0
        time.sleep(1.5)  # status writes refused meanwhile: logged, the agent runs on
        assert second.loop.passes >= 1 and second.from_cache
        api.down.clear()  # back: the live view replaces the saved one
        api.create(RESOURCES["Service"], {
            "metadata": {"name": "new-svc", "namespace": "default"},
            "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}, "default")
        until(lambda: not second.from_cache)
        until(lambda: "default/new-svc" in second.store.snapshot().services)
        assert from_cache_metric(second) == 0.0


def test_with_the_cache_off_the_agent_waits_for_the_api_server(tmp_path: Path) -> None:
    api = Outage()
    create_all(api, lab_docs())
    first = agent(api, tmp_path, 5.0)
    with running(first):
        until(lambda: (tmp_path / "kube-snapshot").exists())
    api.down.set()
    waiting = agent(api, tmp_path, None)
    with running(waiting):
        time.sleep(1.0)
        assert not waiting.from_cache and waiting.loop.passes == 0
        assert waiting.store.snapshot().services == {}
