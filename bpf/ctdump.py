"""The datapath's conntrack as flows: what `rackroute service conntrack` prints.

The TC programs (src/lib/nat.h) keep two entries per translated flow, in rr_ct (IPv4)
or rr_ct6 (IPv6). The FORWARD entry is keyed by the client's tuple (client -> service)
and its value names the backend and the source the backend sees: the client itself, or
the node's SNAT address and port (RR_CT_SNAT). The REPLY entry is keyed by the backend's
tuple (backend -> that source) and its value names the client and the service address.

decode4/decode6 turn raw map items into Entry; read_entries reads both maps through any
port with items() (PinnedMap, or FakeMap in tests); pair joins each forward entry with
its reply (the twin the datapath would look up, naming the same client and service) and
keeps an entry without its twin as an orphan. Times are the low 32 bits of the kernel's
jiffies, compared with the datapath's own wrapping arithmetic: read the current jiffies
(read_jiffies) after the maps, so that no entry is newer than "now". A flow busy for
longer than 2^32 jiffies shows its age modulo that; its idle time stays right.
"""

from __future__ import annotations

import ctypes as ct
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from bpf import maps as m

IPAddress = IPv4Address | IPv6Address
TIMER_LIST = Path("/proc/timer_list")
U32 = 0xFFFFFFFF
PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}
PROTO_NUMBERS = {v: k for k, v in PROTO_NAMES.items()}


class ItemsPort(Protocol):
    """What reading a conntrack map needs: its raw (key, value) items."""

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...


class Endpoint(NamedTuple):
    ip: IPAddress
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"

    def sort_key(self) -> tuple[int, int, int]:
        """Total order across families (addresses of two families do not compare)."""
        return (self.ip.version, int(self.ip), self.port)

    def to_json(self) -> dict[str, Any]:
        return {"ip": str(self.ip), "port": self.port}


@dataclass(frozen=True)
class Entry:
    """One conntrack entry: its key's tuple (src -> dst) and its value's two endpoints
    (addr: backend or client; nat: SNAT source or client, or service), as in maps.h."""

    dir: int
    proto: int
    src: Endpoint
    dst: Endpoint
    addr: Endpoint
    nat: Endpoint
    svc_id: int
    backend_id: int
    flags: int
    created: int
    seen: int


def _ip4(word: int) -> IPv4Address:
    """An address word as the program stores it (network order bytes, read natively)."""
    return IPv4Address(word.to_bytes(4, sys.byteorder))


def _ep4(word: int, port: int) -> Endpoint:
    return Endpoint(_ip4(word), m.host_port(port))


def _ep6(a: m.Addr, port: int) -> Endpoint:
    return Endpoint(m.ip_of(a, m.AF_INET6), m.host_port(port))


def _check(what: str, key: bytes, value: bytes, ktype: type[ct.Structure],
           vtype: type[ct.Structure]) -> None:
    if len(key) != ct.sizeof(ktype) or len(value) != ct.sizeof(vtype):
        raise ValueError(f"{what} entry of {len(key)}/{len(value)} bytes, expected "
                         f"{ct.sizeof(ktype)}/{ct.sizeof(vtype)} (another datapath version?)")


def _decode(what: str, key: bytes, value: bytes, ktype: type[ct.Structure],
            vtype: type[ct.Structure], ep: Callable[[Any, int], Endpoint]) -> Entry:
    _check(what, key, value, ktype, vtype)
    k: Any = ktype.from_buffer_copy(key)
    v: Any = vtype.from_buffer_copy(value)
    return Entry(k.dir, k.proto, ep(k.saddr, k.sport), ep(k.daddr, k.dport),
                 ep(v.addr, v.port), ep(v.nat_addr, v.nat_port), v.svc_id, v.backend_id,
                 v.flags, v.created, v.seen)


def decode4(key: bytes, value: bytes) -> Entry:
    """An rr_ct (IPv4) item."""
    return _decode("rr_ct", key, value, m.Ct4Key, m.Ct4Value, _ep4)


def decode6(key: bytes, value: bytes) -> Entry:
    """An rr_ct6 (IPv6) item."""
    return _decode("rr_ct6", key, value, m.CtKey, m.Ct6Value, _ep6)


def read_entries(ct4: ItemsPort, ct6: ItemsPort) -> list[Entry]:
    """Every entry of both conntrack maps, each once (a walk of a map that the datapath
    changes meanwhile may start over and meet a key again: the last value read wins)."""
    return ([decode4(k, v) for k, v in dict(ct4.items()).items()]
            + [decode6(k, v) for k, v in dict(ct6.items()).items()])


def parse_jiffies(text: str) -> int:
    """The kernel's jiffies from the text of /proc/timer_list (a `jiffies:` line per
    CPU, each read a little later than the one before: the largest)."""
    found = [int(j) for j in re.findall(r"^jiffies:\s*(\d+)\s*$", text, re.M)]
    if not found:
        raise ValueError("no jiffies line")
    return max(found)


def read_jiffies(path: Path = TIMER_LIST) -> int:
    """The current jiffies (the counter the datapath reads with bpf_jiffies64). The file
    is readable by root only, as the pinned maps are; OSError or ValueError if not."""
    try:
        return parse_jiffies(path.read_text(errors="replace"))
    except ValueError:
        raise ValueError(f"{path}: no `jiffies:` line") from None


def elapsed(now: int, then: int) -> int:
    """Jiffies from then to now, both taken as 32-bit counters that wrap (the datapath's
    `(__u32)jiffies - seen`)."""
    return (now - then) & U32


@dataclass(frozen=True)
class Lifetimes:
    """How long an entry may stay idle (rr_ct_lifetime): seconds as the datapath was
    compiled with (DatapathConfig), and the kernel's HZ (bpf.loader.kernel_hz)."""

    hz: int
    tcp: int
    close: int
    udp: int

    def jiffies(self, proto: int, flags: int) -> int:
        if proto != 6:
            return self.udp * self.hz
        if flags & m.CT_CLOSING:
            return self.close * self.hz
        return self.tcp * self.hz


@dataclass(frozen=True)
class Timing:
    """One entry against the current jiffies; expired: idle for longer than its lifetime,
    so the datapath's lookup treats it as a miss."""

    age: int  # jiffies since created
    idle: int  # jiffies since seen (rewritten at most every RR_CT_SEEN_JIFFIES)
    lifetime: int
    expired: bool
    closing: bool

    @classmethod
    def of(cls, e: Entry, now: int, life: Lifetimes) -> Timing:
        lifetime = life.jiffies(e.proto, e.flags)
        idle = elapsed(now, e.seen)
        return cls(elapsed(now, e.created), idle, lifetime, idle > lifetime,
                   bool(e.flags & m.CT_CLOSING))


@dataclass(frozen=True)
class Flow:
    """One flow through a service: its forward and reply entries, either possibly absent
    (an orphan: the other was evicted, dropped, or overwritten by another flow)."""

    proto: int
    client: Endpoint
    service: Endpoint
    backend: Endpoint
    snat: Endpoint | None  # the source the backend sees, when SNAT
    svc_id: int
    backend_id: int
    forward: Timing | None
    reply: Timing | None
    hz: int

    @property
    def timings(self) -> list[Timing]:
        return [t for t in (self.forward, self.reply) if t is not None]

    @property
    def orphan(self) -> str | None:
        """None for a pair; else the direction of the entry that is alone."""
        if self.forward is None:
            return "reply"
        return "forward" if self.reply is None else None

    @property
    def closing(self) -> bool:
        return any(t.closing for t in self.timings)

    @property
    def state(self) -> str:
        return "closing" if self.closing else "open"

    @property
    def age(self) -> float:
        """Seconds since the flow was made (its entries are made together)."""
        return max(t.age for t in self.timings) / self.hz

    @property
    def idle(self) -> float:
        """Seconds since either entry was last used."""
        return min(t.idle for t in self.timings) / self.hz

    @property
    def expired(self) -> bool:
        """Has any entry outlived its lifetime (a direction the datapath no longer
        translates)? expired_dirs says which."""
        return bool(self.expired_dirs)

    @property
    def expired_dirs(self) -> list[str]:
        return [d for d, t in (("forward", self.forward), ("reply", self.reply))
                if t is not None and self._expired(t)]

    def _expired(self, t: Timing) -> bool:
        """A UDP reply entry past its lifetime still translates while the forward entry
        lives (the datapath refreshes it then: one flow, as in the kernel's conntrack)."""
        if t is self.reply and self.proto == 17 and self.forward is not None:
            return t.expired and self.forward.expired
        return t.expired

    @property
    def proto_name(self) -> str:
        return PROTO_NAMES.get(self.proto, str(self.proto))

    def sort_key(self) -> tuple[Any, ...]:
        """By service, then client (then backend and orphan side, for a stable order)."""
        return (self.service.sort_key(), self.proto, self.client.sort_key(),
                self.backend.sort_key(), self.orphan or "")

    def to_json(self) -> dict[str, Any]:
        def timing(t: Timing | None) -> dict[str, Any] | None:
            if t is None:
                return None
            return {"age": round(t.age / self.hz, 3), "idle": round(t.idle / self.hz, 3),
                    "lifetime": round(t.lifetime / self.hz, 3), "expired": self._expired(t),
                    "closing": t.closing}

        return {
            "proto": self.proto_name, "family": self.client.ip.version,
            "client": self.client.to_json(), "service": self.service.to_json(),
            "backend": self.backend.to_json(),
            "snat": self.snat.to_json() if self.snat else None,
            "state": self.state, "age": round(self.age, 3), "idle": round(self.idle, 3),
            "expired": self.expired, "orphan": self.orphan,
            "svc_id": self.svc_id, "backend_id": self.backend_id,
            "forward": timing(self.forward), "reply": timing(self.reply),
        }


def _from_forward(f: Entry, r: Entry | None, now: int, life: Lifetimes) -> Flow:
    snat = f.nat if f.flags & (m.CT_SNAT | m.CT_SPORT) else None  # what the backend sees
    return Flow(f.proto, f.src, f.dst, f.addr, snat, f.svc_id, f.backend_id,
                Timing.of(f, now, life), Timing.of(r, now, life) if r else None, life.hz)


def _from_reply(r: Entry, now: int, life: Lifetimes) -> Flow:
    snat = r.dst if r.flags & (m.CT_SNAT | m.CT_SPORT) else None
    return Flow(r.proto, r.addr, r.nat, r.src, snat, r.svc_id, r.backend_id, None,
                Timing.of(r, now, life), life.hz)


def pair(entries: Iterable[Entry], now: int, life: Lifetimes) -> list[Flow]:
    """The flows of entries, sorted by service then client. A forward entry's reply is the
    entry under its twin key (backend -> the source the backend sees, the key the reverse
    path looks up) whose value names the same client and service: one that names others
    belongs to another flow that reuses the tuple, and both are then shown."""
    forward: list[Entry] = []
    replies: dict[tuple[int, Endpoint, Endpoint], Entry] = {}
    for e in entries:
        if e.dir == m.DIR_FORWARD:
            forward.append(e)
        else:
            replies[(e.proto, e.src, e.dst)] = e
    flows = []
    for f in forward:
        r = replies.get((f.proto, f.addr, f.nat))
        if r is not None and (r.addr, r.nat) == (f.src, f.dst):
            del replies[(f.proto, f.addr, f.nat)]
        else:
            r = None
        flows.append(_from_forward(f, r, now, life))
    flows.extend(_from_reply(r, now, life) for r in replies.values())
    return sorted(flows, key=Flow.sort_key)


@dataclass(frozen=True)
class ServiceFilter:
    """`ADDR`, `ADDR:PORT`, `[V6ADDR]:PORT`, each optionally with `/tcp` or `/udp` (the
    form `rackroute service list` prints)."""

    ip: IPAddress
    port: int | None = None
    proto: int | None = None

    @classmethod
    def parse(cls, text: str) -> ServiceFilter:
        spec, proto = text.strip(), None
        if "/" in spec:
            spec, name = spec.rsplit("/", 1)
            if name.lower() not in PROTO_NUMBERS:
                raise ValueError(f"unknown protocol {name!r}")
            proto = PROTO_NUMBERS[name.lower()]
        host, port = spec, None
        if spec.startswith("["):
            host, sep, rest = spec[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"bad service {text!r}")
            port = rest[1:] or None
        elif spec.count(":") == 1:
            host, port = spec.split(":")
        try:
            ip = ip_address(host)
            p = int(port) if port is not None else None
        except ValueError:
            raise ValueError(f"bad service {text!r}: want ADDR[:PORT][/PROTO]") from None
        if p is not None and not 0 < p < 65536:
            raise ValueError(f"bad port in {text!r}")
        return cls(ip, p, proto)

    def matches(self, flow: Flow) -> bool:
        return (flow.service.ip == self.ip
                and (self.port is None or flow.service.port == self.port)
                and (self.proto is None or flow.proto == self.proto))


def entry_key(proto: int, src: Endpoint, dst: Endpoint, direction: int) -> tuple[int, bytes]:
    """(IP version, conntrack key bytes) of the entry keyed by src -> dst in direction."""
    if src.ip.version == 4:
        return 4, bytes(m.Ct4Key(int.from_bytes(src.ip.packed, sys.byteorder),
                                 int.from_bytes(dst.ip.packed, sys.byteorder),
                                 m.port_of(src.port), m.port_of(dst.port), proto,
                                 direction, 0))
    return 6, bytes(m.CtKey(m.addr_of(src.ip), m.addr_of(dst.ip), m.port_of(src.port),
                            m.port_of(dst.port), proto, m.AF_INET6, direction, 0))


def flow_keys(f: Flow) -> list[tuple[int, bytes]]:
    """The keys of the entries a flow has: its forward entry (client -> service) and its
    reply entry (backend -> the source the backend sees)."""
    out = []
    if f.forward is not None:
        out.append(entry_key(f.proto, f.client, f.service, m.DIR_FORWARD))
    if f.reply is not None:
        out.append(entry_key(f.proto, f.backend, f.snat or f.client, m.DIR_REPLY))
    return out
