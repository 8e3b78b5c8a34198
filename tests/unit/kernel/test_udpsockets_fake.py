"""The fake UdpSocketPort passes the contract the sock_diag adapter passes."""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.desired.sockets import Peer
from controller.kernel.udpsockets import FakeUdpSockets

from .udpsockets_contract import check_closes_exactly_the_sockets_of_the_peers


@dataclass
class FakeHarness:
    port: FakeUdpSockets = field(default_factory=FakeUdpSockets)

    def connect(self, peer: Peer, dual_stack: bool = False) -> object:
        return self.port.connect(peer)

    def aborted(self, sock: object) -> bool:
        return sock in self.port.aborted


def test_contract() -> None:
    check_closes_exactly_the_sockets_of_the_peers(FakeHarness())
