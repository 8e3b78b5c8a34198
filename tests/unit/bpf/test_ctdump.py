"""bpf.ctdump against in-memory conntrack maps holding entries built from the ctypes
structs the datapath shares: forward and reply entries paired into flows (SNAT, closing,
IPv6), entries alone shown as orphans, ages and idle times from 32-bit jiffies that wrap,
expiry by lifetime as the datapath counts it, and the service filter."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from bpf import ctdump as cd
from bpf import maps as m
from bpf.ctdump import Endpoint as E
from bpf.mapstore import FakeMap
from controller.cli_service import render_ct_table

HZ = 250
LIFE = cd.Lifetimes(hz=HZ, tcp=3600, close=10, udp=60)
TCP, UDP = 6, 17
CLIENT, VIP, BE, NODE = "10.1.0.5", "10.96.0.10", "10.2.0.7", "192.0.2.1"
CLIENT6, VIP6, BE6 = "fd00:1::5", "fd00:96::10", "fd00:2::7"
VIP2 = "10.96.0.11"


def ep(addr: str, port: int) -> E:
    return E(ip_address(addr), port)


def w4(addr: str) -> int:
    """An IPv4 address as the u32 field holds it (network order bytes)."""
    return int.from_bytes(IPv4Address(addr).packed, sys.byteorder)


def maps() -> tuple[FakeMap, FakeMap]:
    import ctypes as ct

    return (FakeMap(ct.sizeof(m.Ct4Key), ct.sizeof(m.Ct4Value), 64),
            FakeMap(ct.sizeof(m.CtKey), ct.sizeof(m.Ct6Value), 64))


def put(fm: FakeMap, key: bytes, value: bytes) -> None:
    fm.update_batch([(key, value)])


def put4(fm: FakeMap, d: int, proto: int, src: E, dst: E, addr: E, nat: E, flags: int = 0,
         created: int = 1000, seen: int | None = None, svc_id: int = 3,
         backend_id: int = 9) -> None:
    k = m.Ct4Key(w4(str(src.ip)), w4(str(dst.ip)), m.port_of(src.port), m.port_of(dst.port),
                 proto, d, 0)
    v = m.Ct4Value(w4(str(addr.ip)), w4(str(nat.ip)), m.port_of(addr.port),
                   m.port_of(nat.port), svc_id, backend_id, flags, 0, created & cd.U32,
                   (created if seen is None else seen) & cd.U32)
    put(fm, bytes(k), bytes(v))


def put6(fm: FakeMap, d: int, proto: int, src: E, dst: E, addr: E, nat: E, flags: int = 0,
         created: int = 1000, seen: int | None = None) -> None:
    a = m.addr_of
    k = m.CtKey(a(src.ip), a(dst.ip), m.port_of(src.port), m.port_of(dst.port), proto,
                m.AF_INET6, d, 0)
    v = m.Ct6Value(a(addr.ip), a(nat.ip), m.port_of(addr.port), m.port_of(nat.port), 4, 11,
                   flags, 0, created & cd.U32, (created if seen is None else seen) & cd.U32)
    put(fm, bytes(k), bytes(v))


def flow4(fm: FakeMap, client: E, svc: E, be: E, proto: int = TCP, flags: int = 0,
          snat: E | None = None, created: int = 1000, seen_f: int | None = None,
          seen_r: int | None = None, forward: bool = True, reply: bool = True) -> None:
    """The two entries rr_ct_create makes for one IPv4 flow."""
    src = snat or client  # the source the backend sees
    if snat:
        flags |= m.CT_SNAT
    if forward:
        put4(fm, m.DIR_FORWARD, proto, client, svc, be, src, flags, created, seen_f)
    if reply:
        put4(fm, m.DIR_REPLY, proto, be, src, client, svc, flags, created, seen_r)


def dump(c4: FakeMap, c6: FakeMap | None = None, now: int = 1000) -> list[cd.Flow]:
    return cd.pair(cd.read_entries(c4, c6 or maps()[1]), now, LIFE)


def test_forward_and_reply_make_one_flow() -> None:
    c4, _ = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), created=1000, seen_f=1000 + 5 * HZ,
          seen_r=1000 + 4 * HZ)
    [f] = dump(c4, now=1000 + 6 * HZ)
    assert (f.client, f.service, f.backend, f.snat) == (
        ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), None)
    assert f.orphan is None and f.state == "open" and not f.expired
    assert f.age == 6.0 and f.idle == 1.0  # idle since the latest of the two
    assert (f.svc_id, f.backend_id) == (3, 9)
    doc = f.to_json()
    assert doc["client"] == {"ip": CLIENT, "port": 40000}
    assert doc["service"] == {"ip": VIP, "port": 80}
    assert doc["backend"] == {"ip": BE, "port": 8080}
    assert doc["proto"] == "tcp" and doc["family"] == 4 and doc["snat"] is None
    assert doc["forward"]["idle"] == 1.0 and doc["reply"]["idle"] == 2.0
    assert doc["forward"]["lifetime"] == 3600


def test_snat_shows_the_source_the_backend_sees() -> None:
    c4, _ = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), snat=ep(NODE, 33333))
    [f] = dump(c4)
    assert f.orphan is None
    assert (f.client, f.backend, f.snat) == (ep(CLIENT, 40000), ep(BE, 8080), ep(NODE, 33333))
    assert f.to_json()["snat"] == {"ip": NODE, "port": 33333}


def test_a_remapped_client_port_shows_as_the_source_the_backend_sees() -> None:
    """A reply-key clash moved the client's port (CT_SPORT): the backend sees the client's
    address with the new port, and the flow pairs through it."""
    c4, _ = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080))
    seen = ep(CLIENT, 45555)
    put4(c4, m.DIR_FORWARD, TCP, ep(CLIENT, 40000), ep(VIP2, 80), ep(BE, 8080), seen,
         m.CT_SPORT)
    put4(c4, m.DIR_REPLY, TCP, ep(BE, 8080), seen, ep(CLIENT, 40000), ep(VIP2, 80),
         m.CT_SPORT)
    flows = {f.service: f for f in dump(c4)}
    assert flows[ep(VIP, 80)].snat is None and flows[ep(VIP, 80)].orphan is None
    assert flows[ep(VIP2, 80)].snat == seen and flows[ep(VIP2, 80)].orphan is None
    assert flows[ep(VIP2, 80)].client == ep(CLIENT, 40000)


def test_a_udp_reply_entry_lives_on_while_its_forward_entry_does() -> None:
    c4, _ = maps()
    late = 1000 + 100 * HZ  # both made at 1000; UDP lifetime 60 s
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 53), ep(BE, 53), proto=UDP, seen_f=late - HZ)
    [f] = dump(c4, now=late)
    assert f.reply is not None and f.reply.expired  # the entry alone has outlived it
    assert not f.expired and f.to_json()["reply"]["expired"] is False  # but translates
    c4b, _ = maps()
    flow4(c4b, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), seen_f=late - HZ)  # TCP
    [t] = dump(c4b, now=late + 7200 * HZ)
    assert t.expired_dirs == ["forward", "reply"]
    c4c, _ = maps()
    flow4(c4c, ep(CLIENT, 40000), ep(VIP, 53), ep(BE, 53), proto=UDP)  # both idle
    [u] = dump(c4c, now=late)
    assert u.expired_dirs == ["forward", "reply"]


def test_two_clients_and_a_snat_flow_do_not_mix() -> None:
    """Each forward entry pairs with its own twin, also when tuples share parts."""
    c4, _ = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080))
    flow4(c4, ep(CLIENT, 40001), ep(VIP, 80), ep(BE, 8080))
    flow4(c4, ep("10.1.0.4", 40000), ep(VIP, 80), ep(BE, 8080), snat=ep(NODE, 40000))
    flows = dump(c4)
    assert [(str(f.client), f.orphan, f.snat) for f in flows] == [
        ("10.1.0.4:40000", None, ep(NODE, 40000)), ("10.1.0.5:40000", None, None),
        ("10.1.0.5:40001", None, None)]


def test_a_fin_marks_the_flow_closing_with_the_close_lifetime() -> None:
    c4, _ = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), flags=m.CT_CLOSING)
    [f] = dump(c4, now=1000 + 10 * HZ)
    assert f.state == "closing" and not f.expired  # idle == lifetime: still a hit
    [f] = dump(c4, now=1000 + 10 * HZ + 1)
    assert f.expired and f.expired_dirs == ["forward", "reply"]
    assert f.to_json()["forward"]["lifetime"] == 10


def test_orphans_of_either_direction_are_shown() -> None:
    c4, _ = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), reply=False)
    flow4(c4, ep(CLIENT, 40001), ep(VIP, 80), ep(BE, 8080), forward=False,
          snat=ep(NODE, 35000))
    fwd, rep = dump(c4)
    assert fwd.orphan == "forward" and fwd.reply is None
    assert (fwd.client, fwd.service, fwd.backend) == (ep(CLIENT, 40000), ep(VIP, 80),
                                                      ep(BE, 8080))
    # a reply entry alone still names the client, the service, the backend and the SNAT
    assert rep.orphan == "reply" and rep.forward is None
    assert (rep.client, rep.service, rep.backend, rep.snat) == (
        ep(CLIENT, 40001), ep(VIP, 80), ep(BE, 8080), ep(NODE, 35000))
    assert fwd.to_json()["orphan"] == "forward" and fwd.to_json()["reply"] is None
    assert rep.to_json()["orphan"] == "reply" and rep.to_json()["forward"] is None


def test_a_reply_entry_taken_over_by_another_flow_leaves_the_first_an_orphan() -> None:
    """One client port to two services with the same backend: the second flow's reply
    entry replaced the first's (same key); the first flow's replies now go to the second
    service's address, and the dump shows the first flow without its reply."""
    c4, _ = maps()
    other = ep("10.96.0.11", 80)
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080))
    flow4(c4, ep(CLIENT, 40000), other, ep(BE, 8080))
    flows = dump(c4)
    assert [(f.service, f.orphan) for f in flows] == [(ep(VIP, 80), "forward"), (other, None)]


def test_ipv6_flows() -> None:
    c4, c6 = maps()
    client, svc, be = ep(CLIENT6, 50000), ep(VIP6, 443), ep(BE6, 8443)
    put6(c6, m.DIR_FORWARD, TCP, client, svc, be, client)
    put6(c6, m.DIR_REPLY, TCP, be, client, client, svc)
    node6 = ep("fd00:ff::1", 40123)
    c2 = ep("fd00:1::6", 50001)
    put6(c6, m.DIR_FORWARD, UDP, c2, ep(VIP6, 53), ep(BE6, 53), node6, flags=m.CT_SNAT)
    put6(c6, m.DIR_REPLY, UDP, ep(BE6, 53), node6, c2, ep(VIP6, 53), flags=m.CT_SNAT)
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080))
    flows = dump(c4, c6)
    assert [(f.proto_name, f.client.ip.version, f.orphan) for f in flows] == [
        ("tcp", 4, None), ("udp", 6, None), ("tcp", 6, None)]  # by service: v4, ::10:53, :443
    f6 = flows[2]
    assert isinstance(f6.client.ip, IPv6Address)
    assert (f6.client, f6.service, f6.backend, f6.snat) == (client, svc, be, None)
    assert str(f6.service) == "[fd00:96::10]:443"
    assert flows[1].snat == node6 and flows[1].backend == ep(BE6, 53)
    assert flows[1].to_json()["family"] == 6


def test_elapsed_wraps_like_the_datapaths_u32_arithmetic() -> None:
    assert cd.elapsed(1500, 1000) == 500
    assert cd.elapsed(2**32 + 100, 2**32 - 100) == 200  # 64-bit now, 32-bit then
    assert cd.elapsed(100, 2**32 - 100) == 200  # the counter's low half wrapped
    assert cd.elapsed(5 * 2**32 + 7, 7) == 0


def test_age_idle_and_expiry_across_a_jiffies_wrap() -> None:
    """jiffies starts 5 minutes short of wrapping its low 32 bits; an entry made before
    the wrap, read after it."""
    c4, _ = maps()
    created = 2**32 - 10 * HZ  # stored as u32
    now = 2**32 + 50 * HZ  # read as the 64-bit counter
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), proto=UDP, created=created,
          seen_f=2**32 - 2 * HZ, seen_r=created)
    [f] = dump(c4, now=now)
    assert f.age == 60.0
    assert f.idle == 52.0
    assert f.forward is not None and f.reply is not None
    assert (f.forward.age, f.forward.idle, f.reply.idle) == (60 * HZ, 52 * HZ, 60 * HZ)
    assert not f.expired  # idle for exactly the UDP lifetime (60 s): still a hit
    [f] = dump(c4, now=now + 1)
    assert f.forward is not None and f.reply is not None
    assert not f.forward.expired
    assert f.reply.expired  # a tick more: the reply entry alone has outlived its lifetime,
    assert not f.expired  # but the forward entry lives, so the datapath refreshes it
    [f] = dump(c4, now=now + 8 * HZ + 1)  # the forward entry idle 60 s and a tick too
    assert f.expired and f.expired_dirs == ["forward", "reply"]
    assert f.to_json()["expired"] is True and f.to_json()["reply"]["expired"] is True


def test_lifetimes_follow_protocol_and_flags() -> None:
    assert LIFE.jiffies(TCP, 0) == 3600 * HZ
    assert LIFE.jiffies(TCP, m.CT_SNAT) == 3600 * HZ
    assert LIFE.jiffies(TCP, m.CT_CLOSING | m.CT_SNAT) == 10 * HZ
    assert LIFE.jiffies(UDP, m.CT_CLOSING) == 60 * HZ


def test_a_tcp_flow_stays_live_past_the_udp_lifetime() -> None:
    c4, _ = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), created=0)
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), proto=UDP, created=0)
    tcp, udp = dump(c4, now=61 * HZ)
    assert (tcp.proto_name, tcp.expired) == ("tcp", False)
    assert (udp.proto_name, udp.expired) == ("udp", True)


def test_parse_jiffies_from_timer_list(tmp_path: Path) -> None:
    text = ("Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1 nsecs\n\n"
            "cpu: 0\n  .idle_jiffies   : 4301383608\n  .last_jiffies   : 4301383619\n"
            "jiffies: 4301384286\n\ncpu: 1\n  .idle_jiffies   : 4301383630\n"
            "jiffies: 4301384287\n")
    assert cd.parse_jiffies(text) == 4301384287  # not the .idle_jiffies lines; the latest
    with pytest.raises(ValueError):
        cd.parse_jiffies("  .last_jiffies   : 12\n")
    p = tmp_path / "timer_list"
    p.write_text(text)
    assert cd.read_jiffies(p) == 4301384287
    p.write_text("nothing\n")
    with pytest.raises(ValueError, match="jiffies"):
        cd.read_jiffies(p)
    with pytest.raises(OSError):
        cd.read_jiffies(tmp_path / "missing")


@pytest.mark.parametrize(("spec", "want"), [
    ("10.96.0.10", (VIP, None, None)),
    ("10.96.0.10:80", (VIP, 80, None)),
    ("10.96.0.10:80/tcp", (VIP, 80, TCP)),
    ("10.96.0.10/udp", (VIP, None, UDP)),
    ("fd00:96::10", (VIP6, None, None)),
    ("[fd00:96::10]:443", (VIP6, 443, None)),
    ("[fd00:96::10]:443/TCP", (VIP6, 443, TCP)),
    ("[fd00:96::10]", (VIP6, None, None)),
])
def test_service_filter_parses(spec: str, want: tuple[str, int | None, int | None]) -> None:
    f = cd.ServiceFilter.parse(spec)
    assert (str(f.ip), f.port, f.proto) == want


@pytest.mark.parametrize("spec", ["", "web", "10.96.0.10:http", "10.96.0.10:0",
                                  "10.96.0.10:80/icmp", "[fd00::1", "[fd00::1]80",
                                  "10.96.0.10:70000"])
def test_service_filter_refuses(spec: str) -> None:
    with pytest.raises(ValueError):
        cd.ServiceFilter.parse(spec)


def test_service_filter_selects_flows() -> None:
    c4, c6 = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080))
    flow4(c4, ep(CLIENT, 40001), ep(VIP, 53), ep(BE, 53), proto=UDP)
    flow4(c4, ep(CLIENT, 40002), ep("10.96.0.11", 80), ep(BE, 8080))
    put6(c6, m.DIR_FORWARD, TCP, ep(CLIENT6, 1), ep(VIP6, 80), ep(BE6, 80), ep(CLIENT6, 1))
    flows = dump(c4, c6)

    def sel(spec: str) -> list[int]:
        f = cd.ServiceFilter.parse(spec)
        return [x.client.port for x in flows if f.matches(x)]

    assert sel("10.96.0.10") == [40001, 40000]  # port 53 sorts first
    assert sel("10.96.0.10:80") == [40000]
    assert sel("10.96.0.10/udp") == [40001]
    assert sel("10.96.0.10:80/udp") == []
    assert sel("[fd00:96::10]:80") == [1]


def test_a_map_of_another_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 16/32"):
        cd.decode4(b"\0" * 16, b"\0" * 56)
    with pytest.raises(ValueError, match="rr_ct6"):
        cd.decode6(b"\0" * 16, b"\0" * 32)


def test_table_rendering() -> None:
    c4, c6 = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), created=0, seen_f=2 * HZ,
          seen_r=HZ)
    flow4(c4, ep(CLIENT, 40001), ep(VIP, 80), ep(BE, 8080), snat=ep(NODE, 33000),
          flags=m.CT_CLOSING, created=0, reply=False)
    put6(c6, m.DIR_REPLY, UDP, ep(BE6, 53), ep(CLIENT6, 5), ep(CLIENT6, 5), ep(VIP6, 53),
         created=0)
    lines = render_ct_table(dump(c4, c6, now=61 * HZ)).splitlines()
    assert lines[0].split() == ["PROTO", "CLIENT", "SERVICE", "BACKEND", "SNAT", "STATE",
                                "AGE", "IDLE", "EXPIRED", "ENTRIES"]
    assert lines[1].split() == ["tcp", "10.1.0.5:40000", "10.96.0.10:80", "10.2.0.7:8080",
                                "-", "open", "61.0", "59.0", "-", "both"]
    assert lines[2].split() == ["tcp", "10.1.0.5:40001", "10.96.0.10:80", "10.2.0.7:8080",
                                "192.0.2.1:33000", "closing", "61.0", "61.0", "yes",
                                "fwd-only"]
    assert lines[3].split() == ["udp", "[fd00:1::5]:5", "[fd00:96::10]:53",
                                "[fd00:2::7]:53", "-", "open", "61.0", "61.0", "yes",
                                "reply-only"]
    assert lines[-1] == "3 flows (2 with one entry only, 2 expired)"


def test_a_key_met_twice_in_a_walk_is_one_entry() -> None:
    """A walk over a map the datapath changes may start over: a key seen again counts
    once, with the value read last."""
    c4, c6 = maps()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), created=0, seen_f=0)
    first = list(c4.items())
    c4.data.clear()
    flow4(c4, ep(CLIENT, 40000), ep(VIP, 80), ep(BE, 8080), created=0, seen_f=HZ)

    class Restarted:
        def items(self) -> Iterator[tuple[bytes, bytes]]:
            return iter(first + list(c4.items()))

    [f] = cd.pair(cd.read_entries(Restarted(), c6), 2 * HZ, LIFE)
    assert f.orphan is None and f.idle == 1.0
