"""The `kube` source: lists and watches the API server and publishes snapshots.

One reflector per resource keeps a cache of raw objects: it lists, then watches from the
list's resourceVersion (bookmarks move it on), watches again when the server ends a watch,
and lists again when the resourceVersion is gone (410), swapping the cache only once the
new list is complete. A resource with older versions (Cilium's: cilium.io/v2, else
v2alpha1) is read at the first one the server serves. A resource that is not installed (a
CRD missing: 404) counts as empty and is asked for again later; any other failure keeps
the last known objects and retries with backoff. Nothing is published until every
reflector has listed once, so a consumer never plans from half a cluster (the operator
would release what it cannot see).

Objects are parsed as they arrive, by the same parser as the manifest directory's, once
per resourceVersion, and only the parsed object is kept (with its status conditions, for
the operator): the raw JSON of 10k services and their EndpointSlices would take about
100 MB, the parsed objects a third of that. An object whose new version does not parse
keeps its last good version and its errors are reported with its name, as with the files
source.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controller.cilium import clash_error, shadowed
from controller.model.parse import CILIUM_KINDS, ParseResult, parse_object
from controller.sources.kubeapi import RESOURCES, ApiError, Gone, KubeAPI, Obj, Resource, Watch
from controller.store import ObjectError, Snapshot, Store

log = logging.getLogger("rackroute.kube")

# what each role reads (the Helm chart's RBAC grants exactly these)
# (Secrets in the secrets namespace alone: the operator reports a BGPPeerConfig's
# MissingAuthSecret from them, the agents configure the passwords)
OPERATOR_KINDS = ("Node", "Service", "BGPClusterConfig", "BGPPeerConfig", "BGPAdvertisement",
                  "BGPNodeConfigOverride", "LoadBalancerIPPool", "NodeNetwork",
                  "RackrouteConfig", "Secret")
AGENT_KINDS = (*OPERATOR_KINDS, "EndpointSlice")
# what network policy needs besides (an agent with --network-policy, `rackroute policy`)
POLICY_KINDS = ("Pod", "Namespace", "NetworkPolicy")
# Cilium's spellings of the configuration kinds, read (never written) besides ours with
# --watch-cilium-crds; a cluster without Cilium's CRDs serves none (404): nothing then
WATCH_CILIUM_KINDS = tuple(CILIUM_KINDS)


def with_cilium(kinds: tuple[str, ...], watch_cilium: bool) -> tuple[str, ...]:
    """`kinds`, and Cilium's spellings of ours when asked to watch them too."""
    return (*kinds, *WATCH_CILIUM_KINDS) if watch_cilium else kinds


@dataclass(frozen=True)
class Backoff:
    """Delays between retries: doubling from `first` up to `cap`, with jitter."""

    first: float = 0.5
    cap: float = 30.0
    missing: float = 30.0  # a resource that is not installed is asked for again this often

    def delay(self, attempt: int) -> float:
        base: float = min(self.cap, self.first * (2 ** min(attempt, 16)))
        return base * random.uniform(0.8, 1.0)


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    return f"{ns}/{name}" if ns else name


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(obj: Obj, res: Resource) -> Obj:
    """The object as kept in the cache: kind and apiVersion set (typed lists leave them
    off), without the managed fields and kubectl's copy of the last applied object, which
    rackroute never reads and which can be larger than the rest."""
    obj.setdefault("apiVersion", res.api_version)
    obj.setdefault("kind", res.kind)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        ann = meta.get("annotations")
        if isinstance(ann, dict):
            ann.pop(LAST_APPLIED, None)
    return obj


class Reflector:
    """Keeps `objects` (ns/name -> parsed entry) equal to the server's, for one resource.
    `error` holds the last failure until a list or a watch succeeds again."""

    def __init__(self, api: KubeAPI, res: Resource, on_change: threading.Event,
                 namespace: str = "", backoff: Backoff = Backoff(),
                 watch_timeout: int = 300) -> None:
        self.api, self.res, self.namespace = api, res, namespace
        self.versions = res.versions()  # tried in order; `res`: the one served
        self.on_change = on_change
        self.backoff = backoff
        self.watch_timeout = watch_timeout
        self.objects: dict[str, Entry] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.missing = False  # the server does not serve this resource (404)
        self.error = ""  # the last failure, "" once things work again
        self._watch: Watch | None = None
        self._rv = ""

    def _list_served(self) -> tuple[list[Obj], str] | ApiError:
        """The list at the first of the resource's versions the server serves (`res` is
        then that one), or the 404 of the last when it serves none."""
        missing: ApiError | None = None
        for res in self.versions:
            try:
                items, rv = self.api.list(res, self.namespace)
            except ApiError as e:
                if e.status != 404:
                    raise
                missing = e
                continue
            if res != self.res:
                log.info("event=kube_resource_version kind=%s api_version=%s", res.kind,
                         res.api_version)
                self.res = res
            return items, rv
        assert missing is not None
        return missing

    def _list(self) -> None:
        listed = self._list_served()
        if isinstance(listed, ApiError):
            if not self.missing:
                log.warning("event=kube_resource_missing kind=%s path=%s msg=%r",
                            self.res.kind, ",".join(r.path(self.namespace)
                                                    for r in self.versions), listed.message)
            self.missing = True
            items: list[Obj] = []
            rv = ""
        else:
            items, rv = listed
            if self.missing:
                log.info("event=kube_resource_found kind=%s", self.res.kind)
            self.missing = False
        old = self.objects
        fresh = {}
        for o in items:
            key = _key(o)
            fresh[key] = ingest(o, self.res, old.get(key))
        with self.lock:
            self.objects = fresh
            self._rv = rv
        self.error = ""
        self.synced.set()
        self.on_change.set()

    def _follow(self, stop: threading.Event) -> None:
        """Watch from the last resourceVersion until the server ends the watch."""
        w = self.api.watch(self.res, self._rv, self.namespace, self.watch_timeout)
        self._watch = w
        self.error = ""
        if stop.is_set():
            w.close()
        try:
            for ev in w:
                if ev.type == "BOOKMARK":
                    self._rv = _rv(ev.obj) or self._rv
                    continue
                obj, key = ev.obj, _key(ev.obj)
                entry = (ingest(obj, self.res, self.objects.get(key))
                         if ev.type in ("ADDED", "MODIFIED") else None)
                with self.lock:
                    if ev.type == "DELETED":
                        self.objects.pop(key, None)
                    elif entry is not None:
                        self.objects[key] = entry
                    self._rv = _rv(obj) or self._rv
                self.on_change.set()
        finally:
            self._watch = None

    def run(self, stop: threading.Event) -> None:
        """List and watch until `stop`."""
        attempt = 0
        need_list = True
        while not stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                if self.missing:
                    stop.wait(self.backoff.missing)
                    need_list = True
                    continue
                self._follow(stop)
                attempt = 0
                self.error = ""
            except Gone:
                log.info("event=kube_relist kind=%s reason=resource_version_gone", self.res.kind)
                need_list = True
            except Exception as e:  # connection refused, 5xx, 403, a bad line: retry
                self.error = str(e)
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.warning("event=kube_error kind=%s error=%r retry_in=%.1f",
                            self.res.kind, self.error, delay)
                stop.wait(delay)
                need_list = need_list or attempt > 1

    def close(self) -> None:
        w = self._watch
        if w is not None:
            w.close()


@dataclass(frozen=True, slots=True)
class Entry:
    """One object as the cache keeps it: parsed, with its last good version."""

    kind: str
    key: str  # ns/name
    rv: str
    result: ParseResult
    good: object | None  # result.obj, or the last good version when this one is bad
    conditions: tuple[Obj, ...] = ()  # status.conditions as the object carries them


def ingest(raw: Obj, res: Resource, previous: Entry | None = None) -> Entry:
    """Parse one raw object (not again when its resourceVersion is the one already
    parsed), keeping the previous entry's good version when this one does not parse."""
    raw = slim(raw, res)
    key, rv = _key(raw), _rv(raw)
    if previous is not None and rv and previous.rv == rv:
        return previous
    conds = (raw.get("status") or {}).get("conditions")
    conditions = tuple(c for c in conds if isinstance(c, dict)) if isinstance(conds, list) \
        else ()
    result = parse_object(raw, key)
    for m in result.errors:  # once per version of the object: it is parsed once
        log.warning("event=object_invalid msg=%r", m)
    good = result.obj if result.obj is not None else (previous.good if previous else None)
    return Entry(res.kind, key, rv, result, good, conditions)


def assemble(entries: Iterable[Entry], revision: int) -> Snapshot:
    """The snapshot of a set of entries (pure). A Cilium object that a rackroute object of
    the same kind and name shadows is left out, with a problem naming both."""
    entries = list(entries)
    clashes = shadowed(e.result.ref for e in entries if e.result.kind and not e.result.ignored)
    objects: list[object] = []
    errors: list[ObjectError] = []
    conditions: dict[str, tuple[Obj, ...]] = {}
    for e in entries:
        if e.conditions:
            conditions[f"{e.kind} {e.key}"] = e.conditions
        if e.result.ignored:
            continue
        if e.result.ref in clashes:
            errors.append(clash_error(e.result.ref, clashes[e.result.ref]))
            continue
        if e.result.obj is None:
            note = " (keeping the last good version)" if e.good is not None else ""
            errors.append(ObjectError(e.result.ref, tuple(m + note for m in e.result.errors),
                                      e.result.generation))
        if e.good is not None:
            objects.append(e.good)
    return Snapshot.build(objects, errors, revision, conditions)


class ParseCache:
    """Raw objects -> a snapshot, remembering entries between calls (for callers that
    hold raw objects themselves, such as the tests' view of a fake cluster)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}

    def snapshot(self, raws: Iterable[Obj], revision: int) -> Snapshot:
        entries: dict[tuple[str, str], Entry] = {}
        for raw in raws:
            res = RESOURCES[str(raw.get("kind"))]
            ident = (res.kind, _key(raw))
            entries[ident] = ingest(raw, res, self._entries.get(ident))
        self._entries = entries
        return assemble(entries.values(), revision)


class KubeSource:
    """Reflectors for `kinds`, publishing one snapshot per burst of changes.

    Secrets are read in `secrets_namespace` alone (where BGP passwords live; the chart's
    Role grants no more). `poll()` starts the reflectors and waits for their first lists;
    `run(stop)` publishes until stopped."""

    def __init__(self, api: KubeAPI, store: Store, kinds: Iterable[str] = AGENT_KINDS,
                 secrets_namespace: str = "", settle: float = 0.005,
                 backoff: Backoff = Backoff(), watch_timeout: int = 300) -> None:
        self.api = api
        self.store = store
        self.settle = settle
        self._changed = threading.Event()
        self._stop = threading.Event()
        self.reflectors: list[Reflector] = [
            Reflector(api, RESOURCES[k], self._changed,
                      secrets_namespace if k == "Secret" else "", backoff, watch_timeout)
            for k in kinds
        ]
        self._threads: list[threading.Thread] = []
        self.revision = 0

    def start(self) -> None:
        if self._threads:
            return
        for r in self.reflectors:
            t = threading.Thread(target=r.run, args=(self._stop,), daemon=True,
                                 name=f"kube-{r.res.plural}")
            t.start()
            self._threads.append(t)

    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.synced.wait(max(0.0, deadline - time.monotonic())) for r in self.reflectors)

    def problems(self) -> Mapping[str, str]:
        """kind -> the last error of its reflector (missing resources included)."""
        out = {}
        for r in self.reflectors:
            if r.missing:
                out[r.res.kind] = f"not served by the API server: {r.res.path(r.namespace)}"
            elif r.error:
                out[r.res.kind] = r.error
        return out

    def load(self) -> Snapshot:
        """The snapshot of what the reflectors hold now."""
        entries: list[Entry] = []
        for r in self.reflectors:
            with r.lock:
                entries.extend(r.objects.values())
        self.revision += 1
        return assemble(entries, self.revision)

    def poll(self, timeout: float = 60.0) -> bool:
        """Start, wait for every first list and publish; False when that took too long
        (nothing is published then)."""
        self.start()
        if not self.wait_synced(timeout):
            waiting = [r.res.kind for r in self.reflectors if not r.synced.is_set()]
            log.warning("event=kube_not_synced waiting=%s errors=%r", ",".join(waiting),
                        dict(self.problems()))
            return False
        self._changed.clear()
        self.store.publish(self.load())
        return True

    def run(self, stop: threading.Event) -> None:
        """Publish a snapshot after every burst of changes, until `stop`."""
        self.start()
        try:
            while not stop.is_set():
                if not self._changed.wait(0.2):
                    continue
                if not self.synced():
                    stop.wait(0.05)  # published once every resource has listed
                    continue
                stop.wait(self.settle)  # a burst of events is one snapshot
                self._changed.clear()
                try:
                    self.store.publish(self.load())
                except Exception:
                    log.exception("event=source_error source=kube")
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        for r in self.reflectors:
            r.close()
        for t in self._threads:
            t.join(timeout=2)
