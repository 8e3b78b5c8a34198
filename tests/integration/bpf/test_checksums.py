"""Checksums after NAT, checked byte for byte with BPF_PROG_TEST_RUN: the pod program's
DNAT and reverse NAT leave valid IPv4 header and TCP/UDP checksums (IPv4 and IPv6), over
many random flows so that the incremental updates meet every carry, and a UDP packet
sent without a checksum keeps none. The test-run packet carries a complete checksum
(not CHECKSUM_PARTIAL), so the L4 checksum must be exactly right."""

from __future__ import annotations

import os
import random
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from bpf.libbpf import prog_test_run
from bpf.loader import Datapath, DatapathConfig
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey

PIN_ROOT = Path(f"/sys/fs/bpf/rackroute-csum-{os.getpid()}")
VIP4, BE4 = "10.96.7.7", "10.201.7.9"
VIP6, BE6 = "fd00:96::7", "fd00:201::79"
TC_ACT_OK = 0


def _sum16(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s: int = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _csum(b: bytes) -> int:
    return ~_sum16(b) & 0xFFFF


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def _l4(proto: int, sport: int, dport: int, payload: bytes, flags: int) -> bytes:
    if proto == 6:
        return struct.pack("!HHIIBBHHH", sport, dport, 7, 0, 5 << 4, flags, 64240, 0,
                           0) + payload
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def packet(src: str, dst: str, proto: int, sport: int, dport: int, payload: bytes,
           l4_csum: bool = True, flags: int = 0x10) -> bytes:
    """An Ethernet frame with checksums; TCP flags default to a bare ACK."""
    s, d = ip_address(src), ip_address(dst)
    l4 = bytearray(_l4(proto, sport, dport, payload, flags))
    coff = 16 if proto == 6 else 6
    if l4_csum:
        c = _csum(_pseudo(s.packed, d.packed, proto, len(l4)) + bytes(l4))
        if proto == 17 and c == 0:
            c = 0xFFFF
        l4[coff:coff + 2] = struct.pack("!H", c)
    if s.version == 4:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto,
                                   0, s.packed, d.packed))
        ip[10:12] = struct.pack("!H", _csum(bytes(ip)))
        eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    else:
        ip = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s.packed,
                                   d.packed))
        eth = b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd"
    return eth + bytes(ip) + bytes(l4)


def parse(pkt: bytes) -> tuple[str, str, int, int, bytes]:
    """(src, dst, sport, dport, payload) after checking every checksum in pkt."""
    if pkt[12:14] == b"\x08\x00":
        ip = pkt[14:34]
        assert _sum16(ip) == 0xFFFF, "IPv4 header checksum"
        proto, src, dst, l4 = ip[9], ip[12:16], ip[16:20], pkt[34:]
        a4 = (str(IPv4Address(src)), str(IPv4Address(dst)))
        addrs = a4
    else:
        ip = pkt[14:54]
        proto, src, dst, l4 = ip[6], ip[8:24], ip[24:40], pkt[54:]
        addrs = (str(IPv6Address(src)), str(IPv6Address(dst)))
    coff = 16 if proto == 6 else 6
    if proto == 6 or l4[coff:coff + 2] != b"\0\0":
        assert _sum16(_pseudo(src, dst, proto, len(l4)) + l4) == 0xFFFF, "L4 checksum"
    sport, dport = struct.unpack("!HH", l4[:4])
    return addrs[0], addrs[1], sport, dport, l4[20 if proto == 6 else 8:]


@contextmanager
def one_node(instance: str, **cfg: int) -> Iterator[Datapath]:
    """The pod program with a TCP and a UDP service on VIP4 and VIP6, one backend each
    (cfg: more DatapathConfig fields)."""
    d = Datapath(DatapathConfig(instance, pin_root=PIN_ROOT, max_services=64, max_backends=64,
                                max_tables=64, ct_size=4096, **cfg))
    try:
        d.load(("pod",))
        assert d.arm_replies() == 0  # a fresh conntrack: nothing to mark
        table = {}
        for vip, be in ((VIP4, BE4), (VIP6, BE6)):
            for proto in (Proto.TCP, Proto.UDP):
                table[ServiceKey(ip_address(vip), 80, proto)] = \
                    Service((Backend(ip_address(be), 8080),))
        res = Syncer(d.maps()).sync(table)
        assert not res.errors, res.errors
        yield d
    finally:
        d.close()
        shutil.rmtree(PIN_ROOT / instance, ignore_errors=True)
        if PIN_ROOT.is_dir() and not any(PIN_ROOT.iterdir()):
            PIN_ROOT.rmdir()


@pytest.fixture(scope="module")
def dp() -> Iterator[Datapath]:
    with one_node("csum") as d:
        yield d


def _run(fd: int, pkt: bytes) -> bytes:
    ret, _, out = prog_test_run(fd, pkt)
    assert ret == TC_ACT_OK
    return out


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("proto", [6, 17])
def test_dnat_and_reverse_nat_keep_checksums_valid(dp: Datapath, family: int,
                                                   proto: int) -> None:
    rnd = random.Random(family * 100 + proto)
    vip, be = (VIP4, BE4) if family == 4 else (VIP6, BE6)
    fwd, rev = dp.fds["rr_pod_ingress"], dp.fds["rr_pod_egress"]
    for i in range(200):
        if family == 4:
            client = str(IPv4Address(rnd.getrandbits(32) & 0x00FFFFFF | 0x0A000000))
        else:
            client = str(IPv6Address(0xFD00_0201 << 96 | rnd.getrandbits(64)))
        sport = rnd.randrange(1024, 65536)
        payload = rnd.randbytes(rnd.randrange(0, 40))
        out = parse(_run(fwd, packet(client, vip, proto, sport, 80, payload)))
        assert out == (client, be, sport, 8080, payload), i
        back = parse(_run(rev, packet(be, client, proto, 8080, sport, payload[::-1])))
        assert back == (vip, client, 80, sport, payload[::-1]), i


@pytest.mark.parametrize("family", [4, 6])
def test_udp_without_checksum_keeps_none(dp: Datapath, family: int) -> None:
    vip, be, client = (VIP4, BE4, "10.1.2.3") if family == 4 else (VIP6, BE6, "fd00:201::33")
    out = _run(dp.fds["rr_pod_ingress"],
               packet(client, vip, 17, 5353, 80, b"no checksum", l4_csum=False))
    assert parse(out) == (client, be, 5353, 8080, b"no checksum")
    l4 = out[34:] if family == 4 else out[54:]
    assert l4[6:8] == b"\0\0"
