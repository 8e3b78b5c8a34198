"""The `files` source: a directory of multi-document YAML manifests, re-read on change.

Every `*.yaml`/`*.yml`/`*.json` file under the directory (dot-directories skipped) is
parsed; each problem is reported with its object and field. An object that turns bad
keeps its last good version (and the error is reported), so someone's broken edit never
withdraws what was already working. Status written by the operator (LoadBalancer
ingress, node pod CIDRs and BGP router IDs) is overlaid from `.status/`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import yaml

from controller.cilium import clash_error, shadowed
from controller.model.crds import NodeNetwork
from controller.model.k8s import Service
from controller.model.meta import Meta
from controller.model.parse import ParseResult, parse_object
from controller.status import STATUS_DIR, read_operator
from controller.store import ObjectError, Snapshot, Store

log = logging.getLogger("rackroute.files")
SUFFIXES = (".yaml", ".yml", ".json")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available
Key = tuple[str, str]


def manifest_files(root: Path) -> list[Path]:
    """Manifest files under `root`, sorted, skipping dot files and directories."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix in SUFFIXES:
            out.append(p)
    return out


class ManifestDir:
    """Parses a manifest directory into snapshots, remembering last good objects."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._good: dict[Key, object] = {}
        self._by_file: dict[Path, list[Key]] = {}
        self._parsed: dict[Path, tuple[tuple[int, int], list[ParseResult] | str]] = {}
        self._overlaid: dict[tuple[int, object], tuple[object, object]] = {}
        self.revision = 0

    def _parse_file(self, path: Path, rel: str) -> list[ParseResult] | str:
        """The file's parse results, or its YAML error; unchanged files are not re-read,
        so their objects keep their identity from one snapshot to the next."""
        try:
            st = path.stat()
        except OSError as e:
            return f"{rel}: {e.strerror}"
        sig = (st.st_mtime_ns, st.st_size)
        hit = self._parsed.get(path)
        if hit is not None and hit[0] == sig:
            return hit[1]
        out: list[ParseResult] | str
        try:
            docs = [d for d in yaml.load_all(path.read_text(), Loader=LOADER) if d is not None]
            out = [parse_object(doc, f"{rel}#{i}") for i, doc in enumerate(docs)]
        except (OSError, yaml.YAMLError) as e:
            out = f"{rel}: {_yaml_error(e)}"
        self._parsed[path] = (sig, out)
        return out

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """Changes whenever a manifest or the status files change."""
        files = manifest_files(self.root)
        sd = self.root / STATUS_DIR
        if sd.is_dir():
            files += sorted(p for p in sd.glob("*.yaml"))
        out = []
        for p in files:
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((str(p), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def load(self) -> Snapshot:
        """Parse everything now; never raises on bad content."""
        objects: dict[Key, object] = {}
        origin: dict[Key, str] = {}
        errors: list[ObjectError] = []
        if not self.root.is_dir():
            errors.append(ObjectError(str(self.root), (f"{self.root}: not a directory",)))
        by_file: dict[Path, list[Key]] = {}
        files = [(path, str(path.relative_to(self.root)))
                 for path in (manifest_files(self.root) if self.root.is_dir() else [])]
        every = [(path, rel, self._parse_file(path, rel)) for path, rel in files]
        clashes = shadowed(self._refs(every))
        for path, rel, parsed in every:
            if isinstance(parsed, str):
                errors.append(ObjectError(rel, (parsed,)))
                for key in self._by_file.get(path, []):  # keep what this file had
                    if _ref(key) in clashes:
                        errors.append(clash_error(_ref(key), clashes[_ref(key)]))
                    elif key in self._good and key not in objects:
                        objects[key], origin[key] = self._good[key], rel
                by_file[path] = self._by_file.get(path, [])
                continue
            keys: list[Key] = []
            for res in parsed:
                if res.ignored:
                    continue
                key = res.key
                if res.ref in clashes:
                    clash = clash_error(res.ref, clashes[res.ref])
                    errors.append(clash)
                    log.warning("event=manifest_error file=%s msg=%r", rel, clash.messages[0])
                    continue
                if res.obj is None:
                    kept = self._good.get(key) if res.kind else None
                    note = " (keeping the last good version)" if kept is not None else ""
                    msgs = tuple(m + note for m in res.errors)
                    errors.append(ObjectError(res.ref, msgs, res.generation))
                    for m in msgs:
                        log.warning("event=manifest_error file=%s msg=%r", rel, m)
                    if kept is not None and key not in objects:
                        objects[key], origin[key] = kept, rel
                        keys.append(key)
                    continue
                if key in objects:
                    errors.append(
                        ObjectError(
                            res.ref,
                            (
                                f"{res.ref}: defined in both {origin[key]} and {rel}; "
                                f"using {origin[key]}",
                            ),
                        )
                    )
                    continue
                objects[key], origin[key] = res.obj, rel
                keys.append(key)
            by_file[path] = keys
        self._good = {k: v for k, v in objects.items()}
        self._by_file = by_file
        for gone in set(self._parsed) - set(by_file):
            del self._parsed[gone]
        self.revision += 1
        return Snapshot.build(self._overlay(list(objects.values())), errors, self.revision)

    def _refs(self, every: list[tuple[Path, str, list[ParseResult] | str]]) -> list[str]:
        """Every object the files define (what a broken file had last, for it)."""
        out: list[str] = []
        for path, _, parsed in every:
            if isinstance(parsed, str):
                out += [_ref(k) for k in self._by_file.get(path, [])]
            else:
                out += [r.ref for r in parsed if r.kind and not r.ignored]
        return out

    def _overlay(self, objects: list[object]) -> list[object]:
        """Apply the operator's status: service ingress, node pod CIDRs and router IDs
        (a node the status lists gets both from it)."""
        st = read_operator(self.root)
        out: list[object] = []
        nets = dict(st.pod_cidrs)
        overlaid: dict[tuple[int, object], tuple[object, object]] = {}
        for obj in objects:
            if isinstance(obj, Service) and obj.key in st.ingress:
                ingress = st.ingress[obj.key]
                hit = self._overlaid.get((id(obj), ingress))
                if hit is None or hit[0] is not obj:  # same input, same object out
                    hit = (obj, dataclasses.replace(obj, status_ingress=ingress))
                overlaid[(id(obj), ingress)] = hit
                obj = hit[1]
            if isinstance(obj, NodeNetwork) and obj.meta.name in nets:
                name = obj.meta.name
                obj = dataclasses.replace(obj, pod_cidrs=nets.pop(name),
                                          bgp_router_id=st.router_ids.get(name))
            out.append(obj)
        for name, cidrs in sorted(nets.items()):
            out.append(NodeNetwork(Meta("NodeNetwork", name), cidrs, st.router_ids.get(name)))
        self._overlaid = overlaid
        return out


def _ref(key: Key) -> str:
    """`Kind [ns/]name` of a key (the kind as written)."""
    return f"{key[0]} {key[1]}"


def _yaml_error(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e)
    return f"YAML syntax error{where}: {problem}"


class FileSource:
    """Watches a manifest directory and publishes a snapshot to the store on change.

    With inotify the directory is read again only when something in it changed, plus a
    full check every `rescan` seconds (a safety net for what inotify cannot report, such
    as a manifest directory created after the start); without it, every `interval`.
    (Checking 10k manifests costs ~0.1 s: done every 0.2 s, that kept an idle agent at
    60 % of a core.)"""

    def __init__(self, root: Path, store: Store, interval: float = 0.2,
                 rescan: float = 10.0) -> None:
        self.dir = ManifestDir(root)
        self.store = store
        self.interval = interval
        self.rescan = rescan
        self._last: tuple[tuple[str, int, int], ...] | None = None

    def poll(self) -> bool:
        """Re-read if anything changed; True when a new snapshot was published."""
        fp = self.dir.fingerprint()
        if fp == self._last:
            return False
        self._last = fp
        self.store.publish(self.dir.load())
        return True

    def _dirs(self) -> list[Path]:
        root = self.dir.root
        dirs = [root, root / STATUS_DIR]
        if root.is_dir():
            dirs += [p for p in root.rglob("*") if p.is_dir()
                     and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        return dirs

    def run(self, stop: threading.Event) -> None:
        """Re-read on every change: at once with inotify (and every `rescan` seconds),
        else every `interval`."""
        watcher = None
        try:
            from controller.sources.inotify import Watcher

            watcher = Watcher()
        except OSError as e:
            log.info("event=inotify_unavailable error=%r fallback=poll", e)
        try:
            changed, checked = True, time.monotonic()
            while not stop.is_set():
                if watcher is None or changed or time.monotonic() - checked >= self.rescan:
                    if watcher is not None:
                        watcher.watch(self._dirs())
                    try:
                        self.poll()
                    except Exception:  # keep watching whatever happens to one read
                        log.exception("event=source_error dir=%s", self.dir.root)
                    checked = time.monotonic()
                if watcher is not None:
                    # a burst of writes is one change: settle briefly, then re-read
                    changed = watcher.wait(self.interval)
                    if changed and not stop.is_set():
                        watcher.wait(0.005)
                else:
                    stop.wait(self.interval)
        finally:
            if watcher is not None:
                watcher.close()
