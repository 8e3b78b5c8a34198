"""The UdpSocketPort contract, run against the fake (unit) and sock_diag in a namespace
of a cgroup made for the test (integration). A harness opens connected UDP sockets its
port can see and tells whether one was closed under its owner."""

from __future__ import annotations

from ipaddress import IPv4Address as A
from ipaddress import IPv6Address as A6
from typing import Protocol

from controller.desired.sockets import Peer
from controller.kernel.udpsockets import UdpSocketPort

# the real harness routes these: 10.77.0.0/24 and fd77::/64
P1, P2, P1_OTHER_PORT = (A("10.77.0.2"), 53), (A("10.77.0.3"), 53), (A("10.77.0.2"), 54)
P6 = (A6("fd77::2"), 53)


class Harness(Protocol):
    port: UdpSocketPort

    def connect(self, peer: Peer, dual_stack: bool = False) -> object:
        """A connected UDP socket (dual_stack: AF_INET6, an IPv4 peer as mapped)."""
        ...

    def aborted(self, sock: object) -> bool:
        """Was sock closed under its owner?"""
        ...


def check_closes_exactly_the_sockets_of_the_peers(h: Harness) -> None:
    a, b, c, d = h.connect(P1), h.connect(P2), h.connect(P1_OTHER_PORT), h.connect(P6)
    mapped = h.connect(P1, dual_stack=True)
    assert h.port.close_connected(frozenset({P1, P6})) == 3
    assert [h.aborted(s) for s in (a, b, c, d, mapped)] == [True, False, False, True, True]
    assert h.port.close_connected(frozenset({P1})) == 0  # closed once
    assert h.port.close_connected(frozenset()) == 0
    assert not h.aborted(b) and not h.aborted(c)
