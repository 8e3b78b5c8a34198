"""ctypes mirrors of the map keys and values defined in src/maps.h.

The ABI test compares these sizes and offsets with the compiled program. Addresses
are 16 bytes (IPv4 in the first four), ports are stored in network byte order.
"""

from __future__ import annotations

import ctypes as ct
import socket
import struct
import sys
from collections.abc import Sequence
from functools import cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

AF_INET = 2
AF_INET6 = 10

SVC_LOCAL_ONLY = 0x1
SVC_EXTERNAL = 0x2
SVC_RANDOM = 0x4
SVC_NODEPORT = 0x8
SVC_SRC_RANGES = 0x10  # new flows only from the entry's rr_src_ranges prefixes

BE_LOCAL = 0x1
BE_TERMINATING = 0x2

DIR_FORWARD = 0
DIR_REPLY = 1
CT_SNAT = 0x1
CT_CLOSING = 0x2  # a TCP FIN was seen
CT_SPORT = 0x4  # the client's source port was remapped (a reply key clash); address kept
CT_HAIRPIN = 0x8  # a pod reached itself through a service: source = the service loopback

DEFAULT_MAGLEV_M = 1021

MAP_NAMES = (
    "rr_svc", "rr_backend", "rr_maglev", "rr_ct", "rr_ct6", "rr_affinity", "rr_revnat",
    "rr_config", "rr_vips", "rr_replies", "rr_src_ranges", "rr_pod_ifs",
)

# rr_vips: one bit per IPv4 /24, and per hash bucket of IPv6 /64s, that holds a service
# address (see maps.h)
VIP4_WORDS = 1 << 18
VIP6_BITS = 20
VIP6_BASE = VIP4_WORDS
VIP6_WORDS = 1 << (VIP6_BITS - 6)
VIPS_ARMED = VIP4_WORDS + VIP6_WORDS  # the entry that says the bits are complete


def vip6_hash(w0: int, w1: int) -> int:
    """rr_vip6_hash of the datapath: the bucket of a /64 given as its first two address
    words as the program loads them (native byte order)."""
    h = ((w0 * 0x9E3779B1) ^ (w1 * 0x85EBCA77)) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
    h ^= h >> 12
    return h & ((1 << VIP6_BITS) - 1)


# rr_replies: one bit per hash bucket of the sources of conntrack reply entries (maps.h)
REPLY_BITS = 20
REPLY_WORDS = 1 << (REPLY_BITS - 6)
REPLIES_ARMED = REPLY_WORDS  # the entry that says the bits are complete


def reply_hash(words: Sequence[int], family: int, port: int, proto: int) -> int:
    """rr_reply_hash of the datapath: the bucket of a reply source given as its address
    words and port as the program loads them (native byte order), and its protocol."""
    h = (words[0] * 0x9E3779B1) & 0xFFFFFFFF
    if family != AF_INET:
        h ^= ((words[1] * 0x85EBCA77) ^ (words[2] * 0xC2B2AE3D) ^ (words[3] * 0x27D4EB2F)) \
            & 0xFFFFFFFF
    h ^= (((port << 8) | proto) * 0x165667B1) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
    h ^= h >> 12
    return h & ((1 << REPLY_BITS) - 1)


def vip_bit(version: int, addr: int) -> tuple[int, int]:
    """(word, bit mask) of rr_vips for an address given as its IP version and integer."""
    if version == 4:
        return addr >> 14, 1 << ((addr >> 8) & 63)
    raw = addr.to_bytes(16, "big")
    h = vip6_hash(int.from_bytes(raw[0:4], sys.byteorder),
                  int.from_bytes(raw[4:8], sys.byteorder))
    return VIP6_BASE + (h >> 6), 1 << (h & 63)


class Addr(ct.Structure):
    _fields_ = [("w", ct.c_uint32 * 4)]


class SrcKey(ct.Structure):
    """rr_src_ranges (LPM trie) key: prefixlen counts svc_id's 32 bits plus the prefix's."""

    _fields_ = [("prefixlen", ct.c_uint32), ("svc_id", ct.c_uint32), ("addr", Addr)]


def src_key_bytes(svc_id: int, net: IPv4Network | IPv6Network) -> bytes:
    """The rr_src_ranges key of one source range of service entry svc_id."""
    raw = net.network_address.packed
    return struct.pack("=II", 32 + net.prefixlen, svc_id) + raw + bytes(16 - len(raw))


def src_of_key(raw: bytes, version: int) -> tuple[int, IPv4Network | IPv6Network]:
    """(svc_id, prefix) of an rr_src_ranges key; the key does not hold the family, the
    service entry it belongs to does (version 4 or 6)."""
    bits, svc_id = struct.unpack_from("=II", raw)
    if version == 4:
        return svc_id, IPv4Network((raw[8:12], bits - 32))
    return svc_id, IPv6Network((raw[8:24], bits - 32))


class SvcKey(ct.Structure):
    _fields_ = [("vip", Addr), ("port", ct.c_uint16), ("proto", ct.c_uint8),
                ("family", ct.c_uint8)]


class SvcValue(ct.Structure):
    _fields_ = [("svc_id", ct.c_uint32), ("backend_count", ct.c_uint16),
                ("flags", ct.c_uint16), ("affinity_timeout", ct.c_uint32),
                ("pad", ct.c_uint32)]


class BackendKey(ct.Structure):
    _fields_ = [("id", ct.c_uint32)]


class BackendValue(ct.Structure):
    _fields_ = [("addr", Addr), ("port", ct.c_uint16), ("family", ct.c_uint8),
                ("flags", ct.c_uint8)]


class CtKey(ct.Structure):
    _fields_ = [("saddr", Addr), ("daddr", Addr), ("sport", ct.c_uint16),
                ("dport", ct.c_uint16), ("proto", ct.c_uint8), ("family", ct.c_uint8),
                ("dir", ct.c_uint8), ("pad", ct.c_uint8)]


class Ct6Value(ct.Structure):
    """rr_ct6 value; created and seen are jiffies (low 32 bits)."""

    _fields_ = [("addr", Addr), ("nat_addr", Addr), ("port", ct.c_uint16),
                ("nat_port", ct.c_uint16), ("svc_id", ct.c_uint32),
                ("backend_id", ct.c_uint32), ("flags", ct.c_uint16), ("pad", ct.c_uint16),
                ("created", ct.c_uint32), ("seen", ct.c_uint32)]


class Ct4Key(ct.Structure):
    """rr_ct (IPv4 conntrack) key: 4-byte addresses, no family byte."""

    _fields_ = [("saddr", ct.c_uint32), ("daddr", ct.c_uint32), ("sport", ct.c_uint16),
                ("dport", ct.c_uint16), ("proto", ct.c_uint8), ("dir", ct.c_uint8),
                ("pad", ct.c_uint16)]


class Ct4Value(ct.Structure):
    _fields_ = [("addr", ct.c_uint32), ("nat_addr", ct.c_uint32), ("port", ct.c_uint16),
                ("nat_port", ct.c_uint16), ("svc_id", ct.c_uint32),
                ("backend_id", ct.c_uint32), ("flags", ct.c_uint16), ("pad", ct.c_uint16),
                ("created", ct.c_uint32), ("seen", ct.c_uint32)]


class AffKey(ct.Structure):
    _fields_ = [("client", Addr), ("svc_id", ct.c_uint32), ("family", ct.c_uint8),
                ("pad", ct.c_uint8 * 3)]


class AffValue(ct.Structure):
    _fields_ = [("backend_id", ct.c_uint32), ("pad", ct.c_uint32), ("seen_ns", ct.c_uint64)]


class RevNatKey(ct.Structure):
    _fields_ = [("cookie", ct.c_uint64), ("addr", Addr), ("port", ct.c_uint16),
                ("family", ct.c_uint8), ("proto", ct.c_uint8), ("pad", ct.c_uint32)]


class RevNatValue(ct.Structure):
    _fields_ = [("vip", Addr), ("port", ct.c_uint16), ("family", ct.c_uint8),
                ("pad", ct.c_uint8)]


class Config(ct.Structure):
    _fields_ = [("node_addr", Addr), ("node_addr6", Addr), ("uplink_ifindex", ct.c_uint32),
                ("flags", ct.c_uint32)]


class PodIf(ct.Structure):
    """rr_pod_ifs value: the host veth's MAC address (key: its ifindex, u32)."""
    _fields_ = [("mac", ct.c_uint8 * 6), ("pad", ct.c_uint16)]


class TunKey(ct.Structure):
    """rr_tun_routes key (LPM): prefix length, the IPv4 network as on the wire."""
    _fields_ = [("prefixlen", ct.c_uint32), ("addr", ct.c_uint8 * 4)]


class TunKey6(ct.Structure):
    """rr_tun_routes6 key (LPM): prefix length, the IPv6 network."""
    _fields_ = [("prefixlen", ct.c_uint32), ("addr", ct.c_uint8 * 16)]


class TunVal(ct.Structure):
    """rr_tun_routes(6) value: the remote node's address (IPv4 in its first 4 bytes) and
    its VTEP MAC."""
    _fields_ = [("remote", ct.c_uint8 * 16), ("mac", ct.c_uint8 * 6), ("pad", ct.c_uint16)]


def pod_if_entry(ifindex: int, mac: str) -> tuple[bytes, bytes]:
    """The rr_pod_ifs (key, value) of the veth ifindex whose MAC is mac ("aa:bb:...")."""
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"MAC address {mac!r}: not 6 bytes")
    return ifindex.to_bytes(4, "little"), bytes(PodIf((ct.c_uint8 * 6)(*raw), 0))


@cache
def maglev_type(m: int = DEFAULT_MAGLEV_M) -> type[ct.Structure]:
    """The rr_maglev value for a table of m entries (m is a compile-time constant)."""
    return type(f"Maglev{m}", (ct.Structure,), {"_fields_": [("backend_ids", ct.c_uint32 * m)]})


def family_of(ip: IPAddress) -> int:
    return AF_INET if ip.version == 4 else AF_INET6


class PolEpKey(ct.Structure):
    _fields_ = [("addr", Addr), ("family", ct.c_uint8), ("pad", ct.c_uint8 * 3)]


class PolEp(ct.Structure):
    _fields_ = [("id", ct.c_uint32), ("flags", ct.c_uint32)]


class PolKey(ct.Structure):
    _fields_ = [("prefixlen", ct.c_uint32), ("ep", ct.c_uint32), ("dir", ct.c_uint8),
                ("family", ct.c_uint8), ("pad", ct.c_uint16), ("peer", Addr)]


class PolRange(ct.Structure):
    _fields_ = [("proto", ct.c_uint8), ("pad", ct.c_uint8), ("lo", ct.c_uint16),
                ("hi", ct.c_uint16)]


POL_RANGES = 8  # RR_POL_RANGES


class PolValue(ct.Structure):
    _fields_ = [("count", ct.c_uint8), ("pad", ct.c_uint8), ("r", PolRange * POL_RANGES)]


class PolFragKey(ct.Structure):
    _fields_ = [("saddr", Addr), ("daddr", Addr), ("id", ct.c_uint32), ("proto", ct.c_uint8),
                ("family", ct.c_uint8), ("pad", ct.c_uint16)]


class PolPorts(ct.Structure):
    _fields_ = [("sport", ct.c_uint16), ("dport", ct.c_uint16)]  # network order


def addr_of(ip: IPAddress) -> Addr:
    """Pack an address the way the programs see it on the wire."""
    a = Addr()
    raw = ip.packed
    ct.memmove(ct.addressof(a), raw, len(raw))
    return a


def ip_of(a: Addr, family: int) -> IPAddress:
    raw = bytes(a)
    return IPv4Address(raw[:4]) if family == AF_INET else IPv6Address(raw)


def port_of(host_port: int) -> int:
    """Host-order port to the value stored in a u16 field (network order)."""
    return socket.htons(host_port)


def host_port(net_port: int) -> int:
    return socket.ntohs(net_port)


def svc_key(vip: IPAddress, port: int, proto: int) -> SvcKey:
    return SvcKey(addr_of(vip), port_of(port), proto, family_of(vip))


# Serialised forms built without ctypes objects (the sync packs 10k of each per full
# pass); the unit tests compare them with bytes() of the ctypes structs above. An rr_addr
# followed by a network-order u16 and two u8s: for IPv4 the address word, twelve zero
# bytes and the tail, packed big-endian (the u8s have no order); for IPv6 the same read
# as one big-endian integer: address << 32 | port << 16 | a << 8 | b.
_V4_TAIL = struct.Struct("!I12xHBB")


def svc_key_bytes(vip: IPAddress, port: int, proto: int) -> bytes:
    """bytes(svc_key(vip, port, proto)), faster."""
    return svc_key_bytes_of(vip.version, int(vip), port, proto)


def svc_key_bytes_of(version: int, addr: int, port: int, proto: int) -> bytes:
    """svc_key_bytes with the address given as its IP version and integer value."""
    if version == 4:
        return _V4_TAIL.pack(addr, port, proto, AF_INET)
    return (addr << 32 | port << 16 | proto << 8 | AF_INET6).to_bytes(20, "big")


def backend_value_bytes(ip: IPAddress, port: int, flags: int) -> bytes:
    """bytes(BackendValue(addr_of(ip), port_of(port), family_of(ip), flags)), faster."""
    if ip.version == 4:
        return _V4_TAIL.pack(int(ip), port, AF_INET, flags)
    return (int(ip) << 32 | port << 16 | AF_INET6 << 8 | flags).to_bytes(20, "big")


_SVC_VALUE = struct.Struct("=IHHII")


def svc_value_bytes(svc_id: int, backend_count: int, flags: int, affinity_timeout: int) -> bytes:
    """bytes(SvcValue(svc_id, backend_count, flags, affinity_timeout, 0)), faster."""
    return _SVC_VALUE.pack(svc_id, backend_count, flags, affinity_timeout, 0)


def c_structs(m: int = DEFAULT_MAGLEV_M) -> dict[str, type[ct.Structure]]:
    """C struct name in src/maps.h -> its ctypes mirror (what the ABI test compares)."""
    return {
        "rr_addr": Addr, "rr_svc_key": SvcKey, "rr_svc_value": SvcValue,
        "rr_backend": BackendValue, "rr_ct_key": CtKey, "rr_ct6_value": Ct6Value,
        "rr_ct4_key": Ct4Key, "rr_ct4_value": Ct4Value,
        "rr_aff_key": AffKey, "rr_aff_value": AffValue, "rr_revnat_key": RevNatKey,
        "rr_revnat_value": RevNatValue, "rr_config": Config, "rr_maglev": maglev_type(m),
        "rr_pod_if": PodIf, "rr_pol_ep_key": PolEpKey, "rr_pol_ep": PolEp,
        "rr_pol_key": PolKey, "rr_pol_range": PolRange, "rr_pol_value": PolValue,
        "rr_pol_frag_key": PolFragKey, "rr_pol_ports": PolPorts,
        "rr_tun_key": TunKey, "rr_tun_key6": TunKey6, "rr_tun_val": TunVal,
    }


def map_layout(m: int = DEFAULT_MAGLEV_M) -> dict[str, tuple[int, int]]:
    """Map name -> (key size, value size) expected by Python."""
    return {
        "rr_svc": (ct.sizeof(SvcKey), ct.sizeof(SvcValue)),
        "rr_backend": (4, ct.sizeof(BackendValue)),
        "rr_maglev": (4, ct.sizeof(maglev_type(m))),
        "rr_ct": (ct.sizeof(Ct4Key), ct.sizeof(Ct4Value)),
        "rr_ct6": (ct.sizeof(CtKey), ct.sizeof(Ct6Value)),
        "rr_affinity": (ct.sizeof(AffKey), ct.sizeof(AffValue)),
        "rr_revnat": (ct.sizeof(RevNatKey), ct.sizeof(RevNatValue)),
        "rr_config": (4, ct.sizeof(Config)),
        "rr_vips": (4, 8),
        "rr_replies": (4, 8),
        "rr_src_ranges": (ct.sizeof(SrcKey), 4),
        "rr_pod_ifs": (4, ct.sizeof(PodIf)),
    }
