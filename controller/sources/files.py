"""The `files` source: a directory of multi-document YAML manifests, re-read on change.

Every `*.yaml`/`*.yml`/`*.json` file under the directory (dot-directories skipped) is
parsed; each problem is reported with its object and field. An object that turns bad
keeps its last good version (and the error is reported), so someone's broken edit never
withdraws what was already working. Status written by the operator (LoadBalancer
ingress, node pod CIDRs) is overlaid from `.status/`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import yaml

from controller.model.crds import NodeNetwork
from controller.model.k8s import Service
from controller.model.meta import Meta
from controller.model.parse import parse_object
from controller.status import STATUS_DIR, read_operator
from controller.store import ObjectError, Snapshot, Store

log = logging.getLogger("rackroute.files")
SUFFIXES = (".yaml", ".yml", ".json")
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
        self.revision = 0

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
        for path in manifest_files(self.root) if self.root.is_dir() else []:
            rel = str(path.relative_to(self.root))
            try:
                docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            except (OSError, yaml.YAMLError) as e:
                errors.append(ObjectError(rel, (f"{rel}: {_yaml_error(e)}",)))
                for key in self._by_file.get(path, []):  # keep what this file had
                    if key in self._good and key not in objects:
                        objects[key], origin[key] = self._good[key], rel
                by_file[path] = self._by_file.get(path, [])
                continue
            keys: list[Key] = []
            for i, doc in enumerate(docs):
                res = parse_object(doc, f"{rel}#{i}")
                if res.ignored:
                    continue
                key = res.key
                if res.obj is None:
                    kept = self._good.get(key) if res.kind else None
                    note = " (keeping the last good version)" if kept is not None else ""
                    msgs = tuple(m + note for m in res.errors)
                    errors.append(ObjectError(res.ref, msgs))
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
        self.revision += 1
        return Snapshot.build(self._overlay(list(objects.values())), errors, self.revision)

    def _overlay(self, objects: list[object]) -> list[object]:
        """Apply the operator's status: service ingress and node pod CIDRs."""
        st = read_operator(self.root)
        out: list[object] = []
        nets = dict(st.pod_cidrs)
        for obj in objects:
            if isinstance(obj, Service) and obj.key in st.ingress:
                obj = dataclasses.replace(obj, status_ingress=st.ingress[obj.key])
            if isinstance(obj, NodeNetwork) and obj.meta.name in nets:
                obj = dataclasses.replace(obj, pod_cidrs=nets.pop(obj.meta.name))
            out.append(obj)
        for name, cidrs in sorted(nets.items()):
            out.append(NodeNetwork(Meta("NodeNetwork", name), cidrs))
        return out


def _yaml_error(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e)
    return f"YAML syntax error{where}: {problem}"


class FileSource:
    """Polls a manifest directory and publishes a snapshot to the store on change."""

    def __init__(self, root: Path, store: Store, interval: float = 0.2) -> None:
        self.dir = ManifestDir(root)
        self.store = store
        self.interval = interval
        self._last: tuple[tuple[str, int, int], ...] | None = None

    def poll(self) -> bool:
        """Re-read if anything changed; True when a new snapshot was published."""
        fp = self.dir.fingerprint()
        if fp == self._last:
            return False
        self._last = fp
        self.store.publish(self.dir.load())
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # keep watching whatever happens to one read
                log.exception("event=source_error dir=%s", self.dir.root)
            stop.wait(self.interval)
