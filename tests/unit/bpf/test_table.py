"""Table types: endpoint eligibility, validation, JSON round trip, map packing."""

from __future__ import annotations

from ipaddress import IPv4Address as A4
from ipaddress import IPv6Address as A6

from bpf import maps as m
from bpf.table import (
    Algorithm,
    Backend,
    BackendState,
    Proto,
    Service,
    ServiceKey,
    table_from_json,
    table_to_json,
    validate,
)

R, T, N = BackendState.READY, BackendState.TERMINATING, BackendState.NOT_SERVING


def be(last: int, local: bool = False, state: BackendState = R) -> Backend:
    return Backend(A4(f"10.0.0.{last}"), 80, local, state)


def test_ready_backends_win_over_terminating() -> None:
    s = Service((be(1), be(2, state=T), be(3, state=N)))
    assert s.eligible() == (be(1),)


def test_terminating_used_when_none_ready() -> None:
    s = Service((be(2, state=T), be(3, state=N)))
    assert s.eligible() == (be(2, state=T),)


def test_local_only_filters_before_fallback() -> None:
    s = Service((be(1), be(2, local=True, state=T)), local_only=True)
    assert s.eligible() == (be(2, local=True, state=T),)
    assert Service((be(1),), local_only=True).eligible() == ()


def test_programmed_form_is_sorted_and_nameless() -> None:
    s = Service((be(3), be(1), be(1)), name="ns/a")
    p = s.programmed()
    assert p.backends == (be(1), be(3)) and p.name == ""


def test_validate_wrong_family_and_ports() -> None:
    k = ServiceKey(A4("10.96.0.1"), 80, Proto.TCP)
    assert validate(k, Service((be(1),))) is None
    msg = validate(k, Service((Backend(A6("fd00::1"), 80),)))
    assert msg and "IPv6" in msg and "10.96.0.1:80/tcp" in msg
    assert validate(ServiceKey(A4("10.96.0.1"), 0, Proto.TCP), Service()) is not None
    assert validate(k, Service((Backend(A4("10.0.0.1"), 70000),))) is not None


def test_json_round_trip() -> None:
    t = {
        ServiceKey(A4("10.96.0.1"), 80, Proto.TCP): Service(
            (be(1, True), be(2, state=T)), local_only=True, external=True, nodeport=True,
            affinity_timeout=10, algorithm=Algorithm.RANDOM, name="ns/x"),
        ServiceKey(A6("fd00::10"), 53, Proto.UDP): Service((Backend(A6("fd00::2"), 53),)),
    }
    assert table_from_json(table_to_json(t)) == t


def test_address_and_port_packing() -> None:
    a = m.addr_of(A4("10.1.2.3"))
    assert bytes(a)[:4] == bytes([10, 1, 2, 3]) and bytes(a)[4:] == bytes(12)
    assert m.ip_of(a, m.AF_INET) == A4("10.1.2.3")
    assert m.ip_of(m.addr_of(A6("fd00::7")), m.AF_INET6) == A6("fd00::7")
    k = m.svc_key(A4("10.96.0.1"), 8080, 6)
    assert bytes(k)[16:18] == (8080).to_bytes(2, "big") and k.family == m.AF_INET
    assert m.host_port(m.port_of(443)) == 443


def test_programmed_keeps_every_field_but_name() -> None:
    from dataclasses import fields, replace
    from ipaddress import ip_network

    s = Service((be(2), be(1), be(1)), local_only=False, external=True, nodeport=True,
                affinity_timeout=30, algorithm=Algorithm.RANDOM, name="ns/x",
                source_ranges=(ip_network("192.0.2.0/24"),))
    assert [f.name for f in fields(Service)] == [
        "backends", "local_only", "external", "nodeport", "affinity_timeout", "algorithm",
        "name", "source_ranges"]  # programmed() lists them: update it with a new field
    assert s.programmed() == replace(s, backends=(be(1), be(2)), name="")
    assert s.programmed().name == "" and s.eligible() is s.eligible()


def test_backend_name_matches_the_address_text() -> None:
    from ipaddress import ip_address

    for a in ("0.0.0.0", "10.1.2.3", "255.255.255.255", "fd00::1", "::ffff:1.2.3.4"):
        assert Backend(ip_address(a), 80).name == f"{ip_address(a)}:80"
