"""The agent's last complete view of the cluster, kept on the node for a restart while
the API server is out of reach.

An agent reading the API server publishes nothing until every resource has listed once
(controller/sources/kube.py): no half view ever withdraws a route. But an agent that
restarts (a crash, an upgrade) while the API server is down would then wait for it,
and meanwhile its speaker is down: the ToR keeps the node's routes only for the
graceful-restart time, then withdraws them, and the node's pods and LoadBalancer IPs go
dark for as long as the outage lasts. So the agent saves each new complete snapshot here
(at most every `interval` seconds), and at start, when the API server has not answered
within its wait, it starts from the saved one instead (`load`): the same view it was
serving when it stopped, which no one could have changed meanwhile through an API server
that is down. The live view replaces it as soon as every resource has listed.

The file is the agent's own: in its state directory (a tmpfs, /run, by default: it
survives the agent, not a reboot), mode 0600, written atomically (a temporary file
renamed over it). It holds the snapshot pickled, Secrets (BGP passwords) included, so
it is as sensitive as they are: nothing but the agent, as root, reads it. A file of
another format, or of another shape of the model (a fingerprint of every model class's
fields: an agent upgraded across a model change), older than `max_age`, truncated or
unreadable is not used, and the reason is logged.
"""

from __future__ import annotations

import copyreg
import dataclasses
import hashlib
import logging
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from controller.model import crds, k8s, meta, policy
from controller.store import ObjectError, Snapshot

log = logging.getLogger("rackroute.kube")

FORMAT = 1
MAGIC = b"rackroute-snapshot\n"


def fingerprint() -> str:
    """The shape of the model: every dataclass of the model modules and the snapshot,
    with its fields, hashed (an agent of another shape cannot use the file)."""
    h = hashlib.sha256()
    for mod in (meta, k8s, crds, policy):
        for name in sorted(vars(mod)):
            cls = getattr(mod, name)
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) \
                    and cls.__module__ == mod.__name__:
                h.update(f"{mod.__name__}.{name}:{[f.name for f in dataclasses.fields(cls)]}\n"
                         .encode())
    for cls in (Snapshot, ObjectError):
        h.update(f"{cls.__name__}:{[f.name for f in dataclasses.fields(cls)]}\n".encode())
    return h.hexdigest()[:16]


def read_only(d: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    """A read-only view of d (what the file's read-only mappings are rebuilt with)."""
    return MappingProxyType(d)


def _mapping_proxy(m: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return read_only, (dict(m),)


class _Pickler(pickle.Pickler):
    """Pickles the snapshot's read-only mappings as what they wrap (for this file only:
    the process's own pickling is left alone)."""

    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[MappingProxyType] = _mapping_proxy


def write(f: BinaryIO, snap: Snapshot, saved_at: float) -> None:
    """The file: the magic line, a header line, the pickled snapshot."""
    f.write(MAGIC)
    f.write(f"{FORMAT} {fingerprint()} {saved_at:.3f}\n".encode())
    _Pickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(snap)


class SnapshotCache:
    """One file; see the module docstring."""

    def __init__(self, path: Path, max_age: float = 86400.0, interval: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path, self.max_age, self.interval, self.clock = path, max_age, interval, clock
        self.saved: Snapshot | None = None  # the last snapshot written (or loaded)
        self._last = float("-inf")  # monotonic time of the last write

    def save(self, snap: Snapshot) -> None:
        """Write snap atomically, readable by the owner alone.

        A forked child pickles and writes it, and exits: pickling 10k services builds a
        memo of every object (20 MB and more) whose pages the agent would keep; the child
        takes them with it, and the agent's memory stays what it was (copy-on-write). The
        child touches nothing but the snapshot and the file (no lock another thread may
        hold: no logging), and reports a failure through a pipe; the rename is the
        parent's, once the child has succeeded."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        saved_at = self.clock()
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(rfd)
            code = 1
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    write(f, snap, saved_at)
                    f.flush()
                    os.fsync(f.fileno())
                code = 0
            except BaseException as e:
                os.write(wfd, f"{type(e).__name__}: {e}".encode()[:4096])
            finally:
                os._exit(code)
        os.close(wfd)
        try:
            with os.fdopen(rfd, "rb") as r:
                err = r.read().decode(errors="replace")
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise OSError(f"writing {self.path}: {err or f'child status {status}'}")
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.saved = snap
        self._last = time.monotonic()

    def maybe_save(self, snap: Snapshot) -> bool:
        """save(snap) if it is not the one saved last and `interval` has passed since the
        last write; True if written. A failure is logged, never raised."""
        if snap is self.saved or time.monotonic() - self._last < self.interval:
            return False
        try:
            self.save(snap)
        except Exception as e:
            log.warning("event=kube_cache_save_failed path=%s error=%r", self.path, str(e))
            self._last = time.monotonic()  # not again before the interval
            return False
        return True

    def load(self) -> tuple[Snapshot, float] | None:
        """(the saved snapshot, its age in seconds), or None (why: logged)."""
        def refuse(why: str) -> tuple[Snapshot, float] | None:
            log.warning("event=kube_cache_unused path=%s reason=%r", self.path, why)
            return None

        try:
            with open(self.path, "rb") as f:
                if f.readline() != MAGIC:
                    return refuse("not a snapshot file")
                head = f.readline().decode(errors="replace").split()
                if len(head) != 3 or head[0] != str(FORMAT):
                    return refuse(f"format {head[:1]}, this agent reads {FORMAT}")
                if head[1] != fingerprint():
                    return refuse("written by an agent with another model")
                age = self.clock() - float(head[2])
                if age > self.max_age:
                    return refuse(f"{age:.0f} s old, more than {self.max_age:.0f} s")
                snap = pickle.load(f)  # noqa: S301 (the agent's own file, mode 0600)
        except FileNotFoundError:
            log.info("event=kube_cache_unused path=%s reason='no file'", self.path)
            return None
        except Exception as e:
            return refuse(f"unreadable: {e}")
        if not isinstance(snap, Snapshot):
            return refuse(f"holds a {type(snap).__name__}, not a snapshot")
        self.saved = snap
        return snap, max(0.0, age)
