"""The fast serialisers in bpf/maps.py equal bytes() of the ctypes structs."""

from __future__ import annotations

from ipaddress import ip_address

from bpf import maps as m

ADDRS = ("0.0.0.0", "10.1.2.3", "255.255.255.255", "::", "fd00::1:2",
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


def test_svc_key_bytes() -> None:
    for a in ADDRS:
        for port in (1, 80, 0x1234, 65535):
            for proto in (6, 17):
                ip = ip_address(a)
                assert m.svc_key_bytes(ip, port, proto) == bytes(m.svc_key(ip, port, proto))


def test_backend_value_bytes() -> None:
    for a in ADDRS:
        ip = ip_address(a)
        for port in (1, 8080, 65535):
            for flags in (0, m.BE_LOCAL, m.BE_TERMINATING, m.BE_LOCAL | m.BE_TERMINATING):
                want = m.BackendValue(m.addr_of(ip), m.port_of(port), m.family_of(ip), flags)
                assert m.backend_value_bytes(ip, port, flags) == bytes(want)


def test_svc_value_bytes() -> None:
    for args in ((1, 0, 0, 0), (7, 2, m.SVC_RANDOM | m.SVC_EXTERNAL, 10800),
                 (2**32 - 1, 0xFFFF, 0xF, 2**32 - 1)):
        assert m.svc_value_bytes(*args) == bytes(m.SvcValue(*args, 0))
