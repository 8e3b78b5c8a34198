"""The desired service table, neutral of any Kubernetes type or map layout.

A ServiceKey (vip, port, proto) maps to a Service: its backends, traffic policy flags,
session affinity, algorithm and, for a LoadBalancer IP, the client source ranges allowed
(loadBalancerSourceRanges). The controller's pure planner builds this table; the
sync programs it; read-back from the maps returns the same types (normalised).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from socket import inet_ntoa
from typing import TYPE_CHECKING, Any, Generic, TypeVar

T = TypeVar("T")

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class Proto(enum.IntEnum):
    TCP = 6
    UDP = 17


class Algorithm(str, enum.Enum):
    MAGLEV = "maglev"
    RANDOM = "random"


class BackendState(str, enum.Enum):
    READY = "ready"
    TERMINATING = "terminating"  # serving and terminating
    NOT_SERVING = "not-serving"


class _once(Generic[T]):  # noqa: N801 - used as a decorator
    """functools.cached_property without its per-instance lock (Python 3.11 takes one on
    every first access, which tripled the cost of naming 20k fresh backends): the first
    read stores the value in the instance's __dict__, later reads never reach here."""

    def __init__(self, fn: Callable[[Any], T]) -> None:
        self.fn = fn
        self.attr = fn.__name__

    def __get__(self, obj: object, owner: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]
        value = self.fn(obj)
        obj.__dict__[self.attr] = value
        return value


_READY, _TERMINATING = BackendState.READY, BackendState.TERMINATING  # (class lookups are slow)


class ServiceKey(tuple[int, int, int, int]):
    """(vip, port, proto). Underneath it is the tuple (IP version, address as an integer,
    port, proto), so hashing and equality run at C speed: a sync or a planning pass
    hashes its keys some twenty times each, and a Python-level __hash__ (or an address's
    own hash) made that a fifth of a 10k-service pass. Ordering is sort_key's."""

    def __new__(cls, vip: IPAddress, port: int, proto: Proto) -> ServiceKey:
        self = super().__new__(cls, (vip.version, int(vip), port, int(proto)))
        self.__dict__.update(vip=vip, port=port, proto=Proto(proto))
        return self

    if TYPE_CHECKING:  # set in __new__ (instance attributes, read at dict speed)
        vip: IPAddress
        port: int
        proto: Proto

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ServiceKey is immutable (cannot set {name})")

    def __getnewargs__(self) -> tuple[IPAddress, int, Proto]:
        return (self.vip, self.port, self.proto)

    def __repr__(self) -> str:
        return f"ServiceKey(vip={self.vip!r}, port={self.port}, proto={self.proto!r})"

    def sort_key(self) -> tuple[int, int, int, int]:
        """Total order across families (addresses of two families do not compare)."""
        return (self[0], self[1], self[2], self[3])

    def __str__(self) -> str:
        host = f"[{self.vip}]" if self.vip.version == 6 else str(self.vip)
        return f"{host}:{self.port}/{self.proto.name.lower()}"


@dataclass(frozen=True)
class Backend:
    ip: IPAddress
    port: int
    local: bool = False
    state: BackendState = BackendState.READY

    def sort_key(self) -> tuple[int, int, int, bool, str]:
        """Identifies a backend (equal keys: equal backends); cached."""
        k: tuple[int, int, int, bool, str] | None = self.__dict__.get("_sort_key")
        if k is None:
            k = (self.ip.version, int(self.ip), self.port, self.local, self.state._value_)
            object.__setattr__(self, "_sort_key", k)
        return k

    @_once
    def name(self) -> str:
        """Identity used for Maglev and backend ids: address and port (computed once; then
        an instance attribute, read at dict speed)."""
        if self.ip.version == 4:  # str(IPv4Address) spelled out: twice as fast
            return f"{inet_ntoa(int(self.ip).to_bytes(4, 'big'))}:{self.port}"
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class Service:
    backends: tuple[Backend, ...] = ()
    local_only: bool = False      # externalTrafficPolicy / internalTrafficPolicy Local
    external: bool = False        # a NodePort / LoadBalancer / external IP entry
    nodeport: bool = False        # the vip is a node address
    affinity_timeout: int = 0     # seconds; 0 = no sessionAffinity
    algorithm: Algorithm = Algorithm.MAGLEV
    name: str = field(default="", compare=False)  # namespace/name, for messages
    # new flows only from these client prefixes (of the key's family; sorted, distinct);
    # None: from anywhere; (): from nowhere (ranges given, none usable: fail closed)
    source_ranges: tuple[IPNetwork, ...] | None = None

    def eligible(self) -> tuple[Backend, ...]:
        """kube-proxy semantics: ready ones; if none, serving-and-terminating ones.
        Cached (validation and programming both ask, and sorting is not free)."""
        got: tuple[Backend, ...] | None = self.__dict__.get("_eligible")
        if got is not None:
            return got
        pool = [b for b in self.backends if b.local] if self.local_only else self.backends
        ready = [b for b in pool if b.state is _READY]
        if not ready:
            ready = [b for b in pool if b.state is _TERMINATING]
        # distinct and sorted; sort_key identifies a backend (equal keys: equal backends)
        keys = [b.sort_key() for b in ready]
        if all(a < b for a, b in zip(keys, keys[1:], strict=False)):  # planner order
            # all of them, in order: the very tuple (so a caller can tell nothing changed)
            got = self.backends if len(ready) == len(self.backends) else tuple(ready)
        else:
            uniq: dict[tuple[int, int, int, bool, str], Backend] = {}
            for k, b in zip(keys, ready, strict=True):
                uniq.setdefault(k, b)
            got = tuple(uniq[k] for k in sorted(uniq))
        object.__setattr__(self, "_eligible", got)
        return got

    def programmed(self) -> Service:
        """The form read back from the maps: eligible backends only, sorted, no name.
        (Built without the frozen dataclass's __init__, which sets each field through
        object.__setattr__: a fifth of a cold 10k-service sync's first loop.)"""
        out: Service = object.__new__(Service)
        out.__dict__.update(backends=self.eligible(), local_only=self.local_only,
                            external=self.external, nodeport=self.nodeport,
                            affinity_timeout=self.affinity_timeout, algorithm=self.algorithm,
                            name="", source_ranges=self.source_ranges)
        return out


ServiceTable = Mapping[ServiceKey, Service]


def validate(key: ServiceKey, svc: Service) -> str | None:
    """Why this entry cannot be programmed, or None."""
    if not 0 < key.port < 65536:
        return f"{key}: port {key.port} out of range"
    version = key[0]
    for b in svc.backends:
        if b.ip.version != version:
            return f"{key}: backend {b.name} is IPv{b.ip.version}, service is IPv{key.vip.version}"
        if not 0 < b.port < 65536:
            return f"{key}: backend {b.name} port out of range"
    if not 0 <= svc.affinity_timeout < 2**32:
        return f"{key}: affinity timeout {svc.affinity_timeout} out of range"
    if len(svc.eligible()) > 0xFFFF:
        return f"{key}: too many backends"
    for net in svc.source_ranges or ():
        if net.version != version:
            return f"{key}: source range {net} is IPv{net.version}, service is IPv{version}"
    return None


def table_to_json(table: ServiceTable) -> list[dict[str, object]]:
    """A JSON-ready list (used by the standalone datapath runner and `service list`)."""
    out: list[dict[str, object]] = []
    for k in sorted(table, key=ServiceKey.sort_key):
        s = table[k]
        out.append({
            "vip": str(k.vip), "port": k.port, "proto": k.proto.name.lower(),
            "local_only": s.local_only, "external": s.external, "nodeport": s.nodeport,
            "affinity_timeout": s.affinity_timeout, "algorithm": s.algorithm.value,
            "name": s.name,
            "source_ranges": (None if s.source_ranges is None
                              else [str(n) for n in s.source_ranges]),
            "backends": [{"ip": str(b.ip), "port": b.port, "local": b.local,
                          "state": b.state.value} for b in s.backends],
        })
    return out


def table_from_json(doc: list[dict[str, object]]) -> dict[ServiceKey, Service]:
    from ipaddress import ip_address

    out: dict[ServiceKey, Service] = {}
    for e in doc:
        key = ServiceKey(ip_address(str(e["vip"])), int(str(e["port"])),
                         Proto[str(e["proto"]).upper()])
        raw = e.get("backends", [])
        assert isinstance(raw, list)
        bes = tuple(Backend(ip_address(str(b["ip"])), int(b["port"]), bool(b.get("local")),
                            BackendState(b.get("state", "ready"))) for b in raw)
        ranges = e.get("source_ranges")
        assert ranges is None or isinstance(ranges, list)
        out[key] = Service(bes, bool(e.get("local_only")), bool(e.get("external")),
                           bool(e.get("nodeport")), int(str(e.get("affinity_timeout", 0))),
                           Algorithm(str(e.get("algorithm", "maglev"))), str(e.get("name", "")),
                           None if ranges is None else tuple(ip_network(str(n)) for n in ranges))
    return out
