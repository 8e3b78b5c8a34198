"""The Speaker protocol every BGP adapter implements, plus the pure diff helpers they share.

A speaker is driven level-triggered by the agent's BGP reconciler:

    speaker.start(GlobalConfig(...))
    speaker.set_peers([PeerSpec(...), ...])   # add / update / remove to match
    speaker.set_paths({Path(...), ...})       # announce / withdraw only the difference
    speaker.resync()                          # repair what the daemon lost behind our back
    speaker.peers(); speaker.advertised(); speaker.received()
    speaker.best_changes(timeout=1.0)         # learned best-path changes, polled
    speaker.stop()

All methods are synchronous and thread-safe; an adapter may run threads or an event loop
inside, but never exposes them. One path per prefix: a Path whose prefix is already
announced with other attributes replaces it (implicit withdraw).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bgp.types import (
    BestPathEvent,
    Feature,
    GlobalConfig,
    IPAddress,
    IPNetwork,
    Path,
    PeerSpec,
    PeerStatus,
    Route,
)


class SpeakerError(RuntimeError):
    """The speaker refused a request or is not running."""


@dataclass(frozen=True)
class PathDiff:
    """What `set_paths` sent: new or changed paths, and withdrawn ones (old attributes)."""

    announce: tuple[Path, ...] = ()
    withdraw: tuple[Path, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.announce or self.withdraw)


@dataclass(frozen=True)
class PeerDiff:
    """What `set_peers` changed, by peer address."""

    added: tuple[IPAddress, ...] = ()
    updated: tuple[IPAddress, ...] = ()
    removed: tuple[IPAddress, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)


@runtime_checkable
class Speaker(Protocol):
    """An embedded BGP speaker kept equal to the desired peers and paths."""

    features: frozenset[Feature]

    def start(self, config: GlobalConfig) -> None:
        """Start the speaker with its identity; idempotent for an equal config."""
        ...

    def set_peers(self, peers: Iterable[PeerSpec]) -> PeerDiff:
        """Make the neighbor set equal to `peers` (keyed by address)."""
        ...

    def set_paths(self, paths: Iterable[Path],
                  exports: Mapping[IPAddress, Iterable[Path]] | None = None) -> PathDiff:
        """Make the announced paths equal to `paths`; sends only the difference, batched.

        `exports` (Feature.PER_PEER_EXPORT): what each neighbor named gets instead, its
        own subset of the prefixes of `paths`, each with its own attributes (a neighbor
        not named gets nothing); None: every neighbor gets `paths`. The diff returned is
        of `paths`."""
        ...

    def resync(self) -> PathDiff:
        """Repair drift: read what the daemon actually announces and re-send only the
        paths that are missing or different there (and withdraw ones it announces that
        are not desired). `set_paths` diffs against the adapter's memory; this diffs
        against the daemon. Returns what was re-sent; empty when nothing drifted.
        """
        ...

    def peers(self) -> list[PeerStatus]:
        """The state of every configured neighbor, sorted by address."""
        ...

    def advertised(self, peer: IPAddress | None = None) -> set[Path]:
        """Paths this speaker originates (peer None) or has sent to one neighbor."""
        ...

    def received(self, peer: IPAddress | None = None) -> set[Route]:
        """Routes learned from every neighbor (peer None) or from one."""
        ...

    def best_changes(self, timeout: float = 0.0) -> list[BestPathEvent]:
        """Best-path changes of learned routes since the last call.

        Waits up to `timeout` seconds for the first one; returns [] if none came.
        """
        ...

    def stop(self) -> None:
        """Stop the speaker and release everything it started; idempotent."""
        ...


def index_paths(paths: Iterable[Path]) -> dict[IPNetwork, Path]:
    """Key paths by prefix; two different paths for one prefix are a caller error."""
    out: dict[IPNetwork, Path] = {}
    for p in paths:
        old = out.get(p.prefix)
        if old is not None and old != p:
            raise ValueError(f"two different paths for prefix {p.prefix}: {old} and {p}")
        out[p.prefix] = p
    return out


def index_exports(paths: Mapping[IPNetwork, Path],
                  exports: Mapping[IPAddress, Iterable[Path]] | None
                  ) -> dict[IPAddress, dict[IPNetwork, Path]] | None:
    """`exports` by neighbor and prefix; ValueError for a prefix `paths` does not hold or
    given twice to one neighbor."""
    if exports is None:
        return None
    out: dict[IPAddress, dict[IPNetwork, Path]] = {}
    for peer, ps in exports.items():
        got = index_paths(ps)
        missing = sorted(str(k) for k in got if k not in paths)
        if missing:
            raise ValueError(f"exports to {peer}: {', '.join(missing)} not among the paths")
        out[peer] = got
    return out


def prefix_key(prefix: IPNetwork) -> tuple[int, int, int]:
    """Total order over IPv4 and IPv6 prefixes (IPv4 first)."""
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def sort_paths(paths: Iterable[Path]) -> tuple[Path, ...]:
    """Paths in prefix order (IPv4 first)."""
    return tuple(sorted(paths, key=lambda p: prefix_key(p.prefix)))


def diff_paths(current: Mapping[IPNetwork, Path], desired: Mapping[IPNetwork, Path]) -> PathDiff:
    """Announce what is new or changed, withdraw prefixes no longer desired (sorted)."""
    announce = sort_paths(p for k, p in desired.items() if current.get(k) != p)
    withdraw = sort_paths(p for k, p in current.items() if k not in desired)
    return PathDiff(announce, withdraw)


def index_peers(peers: Iterable[PeerSpec]) -> dict[IPAddress, PeerSpec]:
    """Key peer specs by address; two different specs for one address are a caller error."""
    out: dict[IPAddress, PeerSpec] = {}
    for p in peers:
        old = out.get(p.address)
        if old is not None and old != p:
            raise ValueError(f"two different peers for address {p.address}: {old.name}, {p.name}")
        out[p.address] = p
    return out


def diff_peers(
    current: Mapping[IPAddress, PeerSpec], desired: Mapping[IPAddress, PeerSpec]
) -> PeerDiff:
    """Peers to add, update (any field differs) and remove, each sorted by address."""

    def key(a: IPAddress) -> tuple[int, int]:
        return (a.version, int(a))

    added = sorted((a for a in desired if a not in current), key=key)
    updated = sorted((a for a in desired if a in current and current[a] != desired[a]), key=key)
    removed = sorted((a for a in current if a not in desired), key=key)
    return PeerDiff(tuple(added), tuple(updated), tuple(removed))


def batches(items: Iterable[Path], size: int) -> Iterable[list[Path]]:
    """Split paths into lists of at most `size` (for bulk RPCs and API lines)."""
    batch: list[Path] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def logfmt(event: str, **fields: object) -> str:
    """One structured log line: `event=NAME k=v ...` (values with spaces are quoted)."""
    parts = [f"event={event}"]
    for k, v in fields.items():
        s = str(v)
        if not s or any(c in s for c in ' ="'):
            s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{k}={s}")
    return " ".join(parts)
