"""Status kept beside a manifest directory, so processes on one machine share one view.

The operator (the single writer of allocations) writes `.status/operator.yaml`; each
agent writes `.status/node-<name>.yaml`. Writes are atomic (temp file + rename), so a
reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bgp.types import IPAddress, IPNetwork

STATUS_DIR = ".status"


@dataclass(frozen=True)
class OperatorStatus:
    """What the operator has allocated and reported."""

    ingress: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    pod_cidrs: Mapping[str, tuple[IPNetwork, ...]] = field(default_factory=dict)
    router_ids: Mapping[str, ipaddress.IPv4Address] = field(default_factory=dict)  # bgpRouterID
    raw: Mapping[str, Any] = field(default_factory=dict)


def status_dir(manifests: Path) -> Path:
    return manifests / STATUS_DIR


def write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write YAML to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(dict(data), f, sort_keys=True, default_flow_style=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`; {} when missing or unreadable."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_operator(manifests: Path) -> OperatorStatus:
    """Parse the operator's status file (tolerating hand edits: bad entries are skipped)."""
    raw = read_yaml(status_dir(manifests) / "operator.yaml")
    ingress: dict[str, tuple[IPAddress, ...]] = {}
    for key, entry in (raw.get("services") or {}).items():
        ips: list[IPAddress] = []
        for x in (entry or {}).get("ingress") or []:
            try:
                ips.append(ipaddress.ip_address(str(x)))
            except ValueError:
                continue
        ingress[str(key)] = tuple(ips)
    cidrs: dict[str, tuple[IPNetwork, ...]] = {}
    router_ids: dict[str, ipaddress.IPv4Address] = {}
    for node, entry in (raw.get("nodeNetworks") or {}).items():
        nets: list[IPNetwork] = []
        for x in (entry or {}).get("podCIDRs") or []:
            try:
                nets.append(ipaddress.ip_network(str(x)))
            except ValueError:
                continue
        cidrs[str(node)] = tuple(nets)
        rid = (entry or {}).get("bgpRouterID")
        if rid is not None:
            with contextlib.suppress(ValueError):
                router_ids[str(node)] = ipaddress.IPv4Address(str(rid))
    return OperatorStatus(ingress, cidrs, router_ids, raw)


def write_operator(manifests: Path, data: Mapping[str, Any]) -> None:
    write_atomic(status_dir(manifests) / "operator.yaml", data)


def write_node(manifests: Path, node: str, data: Mapping[str, Any]) -> None:
    write_atomic(status_dir(manifests) / f"node-{node}.yaml", data)


def read_nodes(manifests: Path) -> dict[str, dict[str, Any]]:
    """Every agent's status file, keyed by node name."""
    out: dict[str, dict[str, Any]] = {}
    d = status_dir(manifests)
    if d.is_dir():
        for p in sorted(d.glob("node-*.yaml")):
            out[p.stem[len("node-") :]] = read_yaml(p)
    return out
