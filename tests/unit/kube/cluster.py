"""A cluster in a KubeAPI for tests: the lab's manifests created through the port, and a
snapshot read back the way the kube source reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controller.sources.kube import AGENT_KINDS, ParseCache
from controller.sources.kubeapi import RESOURCES, KubeAPI, Obj
from controller.store import Snapshot

LAB = Path(__file__).resolve().parents[3] / "examples" / "frr-lab" / "manifests"


def lab_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for p in sorted(LAB.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(p.read_text()) if d)
    return docs


def create_all(api: KubeAPI, docs: list[dict[str, Any]]) -> None:
    """Create every document whose kind the port knows, in its own namespace."""
    for d in docs:
        res = RESOURCES.get(str(d.get("kind")))
        if res is not None:
            api.create(res, d, str(d["metadata"].get("namespace") or ""))


def raw_objects(api: KubeAPI, kinds: tuple[str, ...] = AGENT_KINDS) -> list[Obj]:
    out: list[Obj] = []
    for k in kinds:
        items, _ = api.list(RESOURCES[k])
        out.extend(items)
    return out


def snapshot(api: KubeAPI, cache: ParseCache | None = None, revision: int = 1) -> Snapshot:
    """What the kube source would publish for the API's objects now."""
    return (cache or ParseCache()).snapshot(raw_objects(api), revision)
