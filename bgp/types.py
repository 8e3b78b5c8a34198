"""Speaker-neutral BGP types: families, paths with attributes, peers and their state.

These are shared by the advertisement planner (controller/desired) and by every speaker
adapter. They are frozen and hashable so that desired vs actual is set arithmetic.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class Afi(str, enum.Enum):
    """Address family identifier."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"


class Safi(str, enum.Enum):
    """Subsequent address family identifier."""

    UNICAST = "unicast"


@dataclass(frozen=True, order=True)
class Family:
    """An AFI/SAFI pair."""

    afi: Afi
    safi: Safi = Safi.UNICAST

    def __str__(self) -> str:
        return f"{self.afi.value}-{self.safi.value}"

    @staticmethod
    def of(prefix: IPNetwork) -> Family:
        """The unicast family of a prefix."""
        return IPV4_UNICAST if prefix.version == 4 else IPV6_UNICAST


IPV4_UNICAST = Family(Afi.IPV4)
IPV6_UNICAST = Family(Afi.IPV6)

WELL_KNOWN_COMMUNITIES: dict[str, int] = {
    "internet": 0x00000000,
    "planned-shut": 0xFFFF0000,
    "accept-own": 0xFFFF0001,
    "route-filter-translated-v4": 0xFFFF0002,
    "route-filter-v4": 0xFFFF0003,
    "route-filter-translated-v6": 0xFFFF0004,
    "route-filter-v6": 0xFFFF0005,
    "llgr-stale": 0xFFFF0006,
    "no-llgr": 0xFFFF0007,
    "accept-own-nexthop": 0xFFFF0008,
    "blackhole": 0xFFFF029A,
    "no-export": 0xFFFFFF01,
    "no-advertise": 0xFFFFFF02,
    "no-export-subconfed": 0xFFFFFF03,
    "no-peer": 0xFFFFFF04,
}


def community_value(text: str) -> int:
    """The 32-bit value of a standard community: "65000:100", a well-known name, or an int."""
    t = text.strip().lower()
    if t in WELL_KNOWN_COMMUNITIES:
        return WELL_KNOWN_COMMUNITIES[t]
    if ":" in t:
        hi, lo = t.split(":", 1)
        a, b = int(hi), int(lo)
        if not (0 <= a <= 0xFFFF and 0 <= b <= 0xFFFF):
            raise ValueError(f"community {text!r}: each half must be 0..65535")
        return (a << 16) | b
    v = int(t)
    if not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"community {text!r}: must be 0..4294967295")
    return v


def community_text(value: int) -> str:
    """Canonical "A:B" text of a standard community value."""
    return f"{value >> 16}:{value & 0xFFFF}"


def large_community_parts(text: str) -> tuple[int, int, int]:
    """The three 32-bit parts of a large community "A:B:C"."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ValueError(f"large community {text!r}: must be A:B:C")
    vals = tuple(int(p) for p in parts)
    if not all(0 <= v <= 0xFFFFFFFF for v in vals):
        raise ValueError(f"large community {text!r}: each part must be 0..4294967295")
    return vals[0], vals[1], vals[2]


@dataclass(frozen=True, order=True)
class Path:
    """One path a speaker announces: a prefix with its attributes.

    `next_hop` None means "self" (the speaker picks its session address).
    Communities are canonical "A:B" strings, large communities "A:B:C".
    """

    prefix: IPNetwork
    next_hop: IPAddress | None = None
    communities: frozenset[str] = frozenset()
    large_communities: frozenset[str] = frozenset()
    local_pref: int | None = None

    @property
    def family(self) -> Family:
        return Family.of(self.prefix)


@dataclass(frozen=True)
class GlobalConfig:
    """The speaker's own identity and listening socket."""

    asn: int
    router_id: IPv4Address
    listen_port: int = -1  # -1 or 0: do not listen (active only)
    listen_addresses: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class PeerSpec:
    """One desired BGP neighbor, fully resolved (secrets included, never logged)."""

    name: str
    address: IPAddress
    peer_asn: int  # 0: accept what the OPEN says (where the speaker supports it)
    peer_port: int = 179
    local_address: IPAddress | None = None
    hold_time: int = 90
    keepalive: int = 30
    connect_retry: int = 120
    password: str | None = field(default=None, repr=False)
    graceful_restart: bool = True
    restart_time: int = 120
    ebgp_multihop: int = 1
    families: tuple[Family, ...] = (IPV4_UNICAST, IPV6_UNICAST)
    passive: bool = False


class SessionState(str, enum.Enum):
    """BGP FSM states as the speakers report them."""

    UNKNOWN = "unknown"
    IDLE = "idle"
    CONNECT = "connect"
    ACTIVE = "active"
    OPENSENT = "opensent"
    OPENCONFIRM = "openconfirm"
    ESTABLISHED = "established"


@dataclass(frozen=True)
class PeerStatus:
    """What a speaker says about one neighbor."""

    address: IPAddress
    state: SessionState
    peer_asn: int = 0
    established_at: datetime | None = None
    hold_time: int | None = None  # negotiated / applied
    keepalive: int | None = None
    received: dict[Family, int] = field(default_factory=dict, hash=False, compare=False)
    advertised: dict[Family, int] = field(default_factory=dict, hash=False, compare=False)
    last_error: str | None = None


@dataclass(frozen=True, order=True)
class Route:
    """A route learned from a peer (or, for `advertised`, one sent to it).

    `peer` is the neighbor it came from; `as_path` is flattened to a tuple of ASNs.
    """

    prefix: IPNetwork
    next_hop: IPAddress | None = None
    peer: IPAddress | None = None
    as_path: tuple[int, ...] = ()
    communities: frozenset[str] = frozenset()
    large_communities: frozenset[str] = frozenset()
    local_pref: int | None = None

    @property
    def family(self) -> Family:
        return Family.of(self.prefix)


@dataclass(frozen=True)
class BestPathEvent:
    """The best learned path for `prefix` changed; `route` None means there is none now."""

    prefix: IPNetwork
    route: Route | None


class Feature(str, enum.Enum):
    """Optional capabilities; a speaker lists the ones it implements in `features`."""

    IPV6 = "ipv6"
    MD5 = "md5"
    MULTIHOP = "multihop"
    GRACEFUL_RESTART = "graceful-restart"
    GR_NOTIFICATION = "graceful-restart-notification"
    LISTEN = "listen"
    DYNAMIC_PEER_ASN = "dynamic-peer-asn"
    COMMUNITIES = "communities"
    LARGE_COMMUNITIES = "large-communities"
    LOCAL_PREF = "local-pref"
    PER_PEER_ADJ_RIB_OUT = "per-peer-adj-rib-out"
    PER_PEER_EXPORT = "per-peer-export"  # set_paths(exports=...): paths chosen per neighbor
    KEEPALIVE = "keepalive"  # a keepalive interval of its own (not always hold time / 3)
    RECEIVED_ROUTES = "received-routes"
    CONNECT_RETRY = "connect-retry"  # PeerSpec.connect_retry applied
    BFD = "bfd"


def path_from_texts(
    prefix: str,
    next_hop: str | None = None,
    communities: tuple[str, ...] | list[str] = (),
    large_communities: tuple[str, ...] | list[str] = (),
    local_pref: int | None = None,
) -> Path:
    """Build a Path from user-facing text, canonicalizing the community spellings."""
    from ipaddress import ip_address, ip_network

    return Path(
        prefix=ip_network(prefix),
        next_hop=ip_address(next_hop) if next_hop else None,
        communities=frozenset(community_text(community_value(c)) for c in communities),
        large_communities=frozenset(
            ":".join(str(p) for p in large_community_parts(c)) for c in large_communities
        ),
        local_pref=local_pref,
    )
