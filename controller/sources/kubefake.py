"""An in-memory Kubernetes API for unit tests, with the real server's rules where
rackroute relies on them: one resourceVersion counter across every write; watches that
replay from a resourceVersion and then follow (410 Gone once it is compacted away); status
written only through the status subresource; JSON merge patches, a resourceVersion in the
patch being a precondition (409 Conflict); AlreadyExists and NotFound; resources that are
not installed (a CRD missing) answering 404. It passes the contract tests the real server
passes.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from controller.sources.kubeapi import ApiError, Gone, Obj, Resource, WatchEvent

Key = tuple[str, str, str]  # (plural, namespace, name)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of `target` by `patch` (a new value)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


class _FakeWatch:
    def __init__(self, api: FakeKubeAPI, res: Resource, rv: int, namespace: str,
                 timeout: float) -> None:
        self._api, self._res, self._rv, self._ns = api, res, rv, namespace
        self._deadline = time.monotonic() + timeout
        self._closed = False

    def __iter__(self) -> Iterator[WatchEvent]:
        api = self._api
        while True:
            with api._cond:
                while True:
                    if self._closed:
                        return
                    if self._rv <= api._compacted:
                        raise Gone(410, "Expired",
                                   f"too old resource version: {self._rv} ({api._compacted})")
                    pending = [h for h in api._history if h[0] > self._rv]
                    if pending:
                        break
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        return
                    api._cond.wait(left)
                self._rv = pending[-1][0]
            for _, plural, ns, typ, obj in pending:
                if plural == self._res.plural and (not self._ns or ns == self._ns):
                    yield WatchEvent(typ, copy.deepcopy(obj))

    def close(self) -> None:
        with self._api._cond:
            self._closed = True
            self._api._cond.notify_all()


class FakeKubeAPI:
    """Objects in a dict, events in a history list, one lock."""

    def __init__(self, installed: set[str] | None = None) -> None:
        self._cond = threading.Condition()
        self._objects: dict[Key, Obj] = {}
        self._history: list[tuple[int, str, str, str, Obj]] = []
        self._rv = 1
        self._compacted = 0
        # kinds served (at every version), or "group/version Kind" (at that version
        # alone); None: every kind
        self.installed = installed
        self.calls: list[tuple[str, str]] = []  # (verb, path) of every call, for tests

    # --- test controls -------------------------------------------------------------------
    def compact(self) -> None:
        """Forget the history, as when the server's watch cache starts again: every open
        watch, and any watch from a resourceVersion before now, gets 410 Gone."""
        with self._cond:
            self._history.clear()
            self._compacted = self._rv
            self._rv += 1  # what is listed from now on can be watched from
            self._cond.notify_all()

    def bookmark(self, res: Resource) -> None:
        """Send a BOOKMARK at the current resourceVersion to watchers of `res`."""
        with self._cond:
            self._rv += 1
            self._history.append((self._rv, res.plural, "", "BOOKMARK",
                                  {"kind": res.kind, "apiVersion": res.api_version,
                                   "metadata": {"resourceVersion": str(self._rv)}}))
            self._cond.notify_all()

    # --- the port ------------------------------------------------------------------------
    def _check(self, res: Resource, namespace: str, verb: str) -> None:
        self.calls.append((verb, res.path(namespace)))
        if self.installed is not None and res.kind not in self.installed \
                and f"{res.api_version} {res.kind}" not in self.installed:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if verb in ("create", "get", "patch", "delete") and res.namespaced and not namespace:
            raise ApiError(400, "BadRequest", f"{res.plural}: a namespace is required")

    def _record(self, res: Resource, ns: str, typ: str, obj: Obj) -> None:
        self._history.append((self._rv, res.plural, ns, typ, copy.deepcopy(obj)))
        self._cond.notify_all()

    def list(self, res: Resource, namespace: str = "") -> tuple[list[Obj], str]:
        self._check(res, namespace, "list")
        with self._cond:
            items = []
            for (plural, ns, _), obj in sorted(self._objects.items()):
                if plural == res.plural and (not namespace or ns == namespace):
                    items.append(copy.deepcopy(obj))
            return items, str(self._rv)

    def watch(self, res: Resource, resource_version: str, namespace: str = "",
              timeout: int = 300) -> _FakeWatch:
        self._check(res, namespace, "watch")
        rv = int(resource_version or 0)
        with self._cond:
            if rv <= self._compacted:
                raise Gone(410, "Expired", f"too old resource version: {rv}")
        return _FakeWatch(self, res, rv, namespace, timeout)

    def get(self, res: Resource, name: str, namespace: str = "") -> Obj:
        self._check(res, namespace, "get")
        with self._cond:
            obj = self._objects.get((res.plural, namespace if res.namespaced else "", name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            return copy.deepcopy(obj)

    def create(self, res: Resource, obj: Obj, namespace: str = "") -> Obj:
        self._check(res, namespace, "create")
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        ns = namespace if res.namespaced else ""
        with self._cond:
            key = (res.plural, ns, name)
            if key in self._objects:
                raise ApiError(409, "AlreadyExists", f'{res.plural} "{name}" already exists')
            self._rv += 1
            new = copy.deepcopy(obj)
            new["apiVersion"], new["kind"] = res.api_version, res.kind
            new.pop("status", None)  # status only through the subresource
            m = new.setdefault("metadata", {})
            if ns:
                m["namespace"] = ns
            m.update(resourceVersion=str(self._rv), uid=str(uuid.uuid4()), generation=1,
                     creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self._objects[key] = new
            self._record(res, ns, "ADDED", new)
            return copy.deepcopy(new)

    def merge_patch(self, res: Resource, name: str, patch: Obj, namespace: str = "",
                    sub: str = "") -> Obj:
        self._check(res, namespace, "patch")
        if sub not in ("", "status"):
            raise ApiError(404, "NotFound", f"{res.plural}/{sub}: no such subresource")
        ns = namespace if res.namespaced else ""
        with self._cond:
            key = (res.plural, ns, name)
            old = self._objects.get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            want = (patch.get("metadata") or {}).get("resourceVersion")
            if want is not None and str(want) != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} '
                               f'"{name}": the object has been modified')
            new = merge(old, patch)
            # the main resource ignores status; the status subresource changes nothing else
            if sub == "status":
                new = dict(old, status=new.get("status"))
            else:
                new["status"] = copy.deepcopy(old.get("status"))
                if new.get("status") is None:
                    new.pop("status")
                if new.get("spec") != old.get("spec"):
                    new["metadata"]["generation"] = int(old["metadata"]["generation"]) + 1
            for k in ("uid", "creationTimestamp", "namespace", "name"):
                if k in old["metadata"]:
                    new["metadata"][k] = old["metadata"][k]
            if new == old:
                return copy.deepcopy(old)  # no change, no event, same resourceVersion
            self._rv += 1
            new["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[key] = new
            self._record(res, ns, "MODIFIED", new)
            return copy.deepcopy(new)

    def delete(self, res: Resource, name: str, namespace: str = "") -> None:
        self._check(res, namespace, "delete")
        ns = namespace if res.namespaced else ""
        with self._cond:
            old = self._objects.pop((res.plural, ns, name), None)
            if old is None:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            self._rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record(res, ns, "DELETED", gone)
