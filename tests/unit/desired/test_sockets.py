"""The UDP peers connected sockets may hold, and which of them went away."""

from __future__ import annotations

from ipaddress import IPv4Address as A
from ipaddress import IPv6Address as A6

from bpf.table import Backend, BackendState, Proto, Service, ServiceKey
from controller.desired.sockets import gone_peers, udp_peers

U = Proto.UDP


def test_udp_entries_only_and_eligible_backends_only() -> None:
    table = {
        ServiceKey(A("10.96.0.1"), 53, U): Service((
            Backend(A("10.1.0.1"), 53),
            Backend(A("10.1.0.2"), 53, state=BackendState.TERMINATING),  # ready ones exist
            Backend(A("10.1.0.3"), 53, state=BackendState.NOT_SERVING))),
        ServiceKey(A("10.96.0.2"), 80, Proto.TCP): Service((Backend(A("10.1.0.9"), 80),)),
        ServiceKey(A6("fd00::1"), 53, U): Service((Backend(A6("fd01::1"), 5353),)),
    }
    assert udp_peers(table) == {(A("10.1.0.1"), 53), (A6("fd01::1"), 5353)}


def test_terminating_backends_count_when_no_ready_one_is_left() -> None:
    table = {ServiceKey(A("10.96.0.1"), 53, U): Service((
        Backend(A("10.1.0.2"), 53, state=BackendState.TERMINATING),))}
    assert udp_peers(table) == {(A("10.1.0.2"), 53)}


def test_a_peer_still_used_by_another_service_is_not_gone() -> None:
    b = Backend(A("10.1.0.1"), 53)
    before = udp_peers({ServiceKey(A("10.96.0.1"), 53, U): Service((b,)),
                        ServiceKey(A("10.96.0.2"), 53, U): Service((b,))})
    after = udp_peers({ServiceKey(A("10.96.0.2"), 53, U): Service((b,))})
    assert gone_peers(before, after) == frozenset()
    assert gone_peers(before, frozenset()) == {(A("10.1.0.1"), 53)}
