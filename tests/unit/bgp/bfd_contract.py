"""The BfdPort contract, run against the fake (unit) and the responder process in a
namespace of its own (integration)."""

from __future__ import annotations

from ipaddress import ip_address

from bgp.bfd import Settings
from bgp.bfd_port import BfdPort

A = ip_address("10.55.0.1")
B = ip_address("fd55::1")
STATES = {"pending", "down", "init", "up"}


def check_sessions_follow_the_wanted_set(port: BfdPort) -> None:
    port.set_sessions({})
    assert port.sessions() == {}
    port.set_sessions({A: Settings()})
    assert set(port.sessions()) == {A}
    assert port.sessions()[A].state in STATES
    port.set_sessions({A: Settings(), B: Settings(100, 100, 3)})
    assert set(port.sessions()) == {A, B}
    port.set_sessions({B: Settings(200, 200, 5)})  # one gone, one retimed
    assert set(port.sessions()) == {B} and port.sessions()[B].peer == B
    port.set_sessions({})
    assert port.sessions() == {}
