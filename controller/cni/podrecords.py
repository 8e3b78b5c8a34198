"""Local pod records: the addresses the CNI plugin gave each pod of this node, handed to
the agent so that a new pod is under its network policy before it runs.

The API server learns a pod's addresses (status.podIPs) from the kubelet only after the
sandbox is up; a policy keyed on them would leave a new pod open for that time. So ADD,
when the network policy programs are pinned, writes a record naming the pod
(K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID from CNI_ARGS) and its addresses, and waits
until the agent acknowledges it: the agent's policy pass uses the record for a pod whose
status has no address yet, programs its maps, and only then marks the record ready. The
containers start after ADD returns, so they never run unguarded.

Layout of `<dataDir>/pods/`:

    <containerID>-<ifname>.json    {"namespace","name","uid","ips":[...]}   ADD
    <containerID>-<ifname>.ready   written by the agent once the pod's policy is in place

Both are written atomically (a temporary name renamed over the final one) and removed by
DEL. A sandbox that never got its DEL (the node or the runtime crashed) leaves its record
behind; the agent removes a record once the pod's host veth is gone (DEL removes the
record before the veth, ADD makes the veth before the record), so a stale record never
lends its address to a pod that reuses the name, or the pod's next sandbox. Imported by
the plugin: standard library only.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("rackroute.policy")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SUBDIR = "pods"
RECORD, READY = ".json", ".ready"


@dataclass(frozen=True)
class PodRecord:
    """One pod interface's record: key is its file name without the suffix."""

    key: str
    namespace: str
    name: str
    uid: str
    ips: tuple[IPAddress, ...]
    container_id: str = ""  # CNI_CONTAINERID and CNI_IFNAME of the ADD that wrote it
    ifname: str = ""


def record_dir(data_dir: Path) -> Path:
    return data_dir / SUBDIR


def record_key(container_id: str, ifname: str) -> str:
    return f"{container_id}-{ifname}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_record(data_dir: Path, container_id: str, ifname: str, namespace: str, name: str,
                 uid: str, ips: Iterable[IPAddress]) -> str:
    """Record a pod's addresses (any earlier acknowledgement of the key removed first);
    returns the key to wait on."""
    d = record_dir(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    key = record_key(container_id, ifname)
    (d / f"{key}{READY}").unlink(missing_ok=True)
    _write_atomic(d / f"{key}{RECORD}", json.dumps(
        {"namespace": namespace, "name": name, "uid": uid, "ips": [str(a) for a in ips],
         "containerID": container_id, "ifname": ifname}))
    return key


def remove_record(data_dir: Path, container_id: str, ifname: str) -> None:
    d, key = record_dir(data_dir), record_key(container_id, ifname)
    for suffix in (RECORD, READY):
        (d / f"{key}{suffix}").unlink(missing_ok=True)


def wait_ready(data_dir: Path, key: str, timeout: float, interval: float = 0.02) -> bool:
    """True once the agent acknowledged key, False after timeout seconds."""
    ready = record_dir(data_dir) / f"{key}{READY}"
    deadline = time.monotonic() + timeout
    while True:
        if ready.exists():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def parse_record(key: str, text: str) -> PodRecord:
    """A record's content; ValueError (naming the field) when it is not one."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    for fld in ("namespace", "name", "uid"):
        if not isinstance(raw.get(fld), str):
            raise ValueError(f'"{fld}" must be a string')
    if not raw["namespace"] or not raw["name"]:
        raise ValueError('"namespace" and "name" must not be empty')
    ips = raw.get("ips")
    if not isinstance(ips, list) or not ips:
        raise ValueError('"ips" must be a non-empty list of addresses')
    try:
        addrs = tuple(ipaddress.ip_address(str(a)) for a in ips)
    except ValueError as e:
        raise ValueError(f'"ips": {e}') from None
    # records written before they named the attachment: the key is "<containerID>-<ifname>"
    cid, _, ifname = key.rpartition("-")
    cid, ifname = str(raw.get("containerID") or cid), str(raw.get("ifname") or ifname)
    return PodRecord(key, raw["namespace"], raw["name"], raw["uid"], addrs, cid, ifname)


class PodRecordDir:
    """The agent's side of the records (the real adapter of the LocalPods port).

    `present`: whether a record's sandbox still has its network (the agent: its host veth
    exists); a record without one is removed, and named in the log."""

    def __init__(self, data_dir: Path,
                 present: Callable[[PodRecord], bool] | None = None) -> None:
        self.path = record_dir(data_dir)
        self.present = present
        # the last reading and the directory version it was made at: every pass asks,
        # and the files are read again only when one was written or removed
        self._read: tuple[int, tuple[list[PodRecord], list[str]]] | None = None

    def records(self) -> tuple[list[PodRecord], list[str]]:
        """The readable records, and a message for each unreadable one."""
        version = self.version()
        if self._read is None or self._read[0] != version or not version:
            self._read = (version, self._read_all())
        recs, errors = self._read[1]
        if self.present is None:
            return recs, errors
        # asked every time: a sandbox's network can go while the directory stays the same
        gone = [r for r in recs if not self.present(r)]
        for r in gone:
            remove_record(self.path.parent, r.container_id, r.ifname)
            log.info("event=pod_record_pruned pod=%s/%s key=%s reason='its sandbox network "
                     "is gone without a CNI DEL'", r.namespace, r.name, r.key)
        return ([r for r in recs if r not in gone] if gone else recs), errors

    def _read_all(self) -> tuple[list[PodRecord], list[str]]:
        out: list[PodRecord] = []
        errors: list[str] = []
        try:
            names = sorted(p for p in os.listdir(self.path) if p.endswith(RECORD)
                           and not p.startswith("."))
        except FileNotFoundError:
            return [], []
        for fname in names:
            key = fname[:-len(RECORD)]
            try:
                text = (self.path / fname).read_text()
            except FileNotFoundError:  # removed by a DEL meanwhile
                continue
            except OSError as e:
                errors.append(f"pod record {self.path / fname}: {e.strerror or e}")
                continue
            try:
                out.append(parse_record(key, text))
            except ValueError as e:
                errors.append(f"pod record {self.path / fname}: {e}")
        return out, errors

    def acknowledge(self, keys: Iterable[str]) -> None:
        """Mark keys ready (those whose record is still there and not yet marked)."""
        for key in keys:
            ready = self.path / f"{key}{READY}"
            if not ready.exists() and (self.path / f"{key}{RECORD}").exists():
                _write_atomic(ready, "")

    def acknowledged(self, key: str) -> bool:
        return (self.path / f"{key}{READY}").exists()

    def version(self) -> int:
        """Changes whenever a record or an acknowledgement is written or removed: a hash of
        the directory's (name, inode) entries, as one readdir gives them (a file is written
        by renaming a new one over it: a new inode). Not the directory's mtime: two changes
        within one clock tick would leave it unchanged."""
        try:
            with os.scandir(self.path) as it:
                return hash(frozenset((e.name, e.inode()) for e in it
                                      if not e.name.startswith("."))) or 1
        except FileNotFoundError:
            return 0


def watch(version: Callable[[], int], poke: Callable[[], None], stop: threading.Event,
          interval: float = 0.05) -> None:
    """Call poke whenever version() changes, until stop (a thread's target)."""
    last = version()
    while not stop.wait(interval):
        now = version()
        if now != last:
            last = now
            poke()
