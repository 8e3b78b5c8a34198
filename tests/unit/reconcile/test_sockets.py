"""The UDP socket reconciler against the fake port: sockets connected to a backend that
left every UDP entry are closed after the datapath's finalize; the rest stay."""

from __future__ import annotations

from ipaddress import IPv4Address as A

from bpf.table import Backend, Proto, Service, ServiceKey
from controller.kernel.udpsockets import FakeUdpSockets
from controller.reconcile.loop import PassContext
from controller.reconcile.sockets import UdpSocketReconciler
from controller.store import Snapshot

K1 = ServiceKey(A("10.96.0.1"), 53, Proto.UDP)
K2 = ServiceKey(A("10.96.0.2"), 53, Proto.UDP)
KT = ServiceKey(A("10.96.0.3"), 80, Proto.TCP)
B1, B2, B3 = (Backend(A(f"10.1.0.{i}"), 53) for i in (1, 2, 3))


class Maps:
    """Stands for the syncer: what is programmed now."""

    def __init__(self, table: dict[ServiceKey, Service]) -> None:
        self.table = table

    def programmed(self) -> dict[ServiceKey, Service]:
        return dict(self.table)


def finalize(r: UdpSocketReconciler) -> PassContext:
    ctx = PassContext(Snapshot.build(()), "n1")
    r.reconcile(ctx)
    r.finalize(ctx)
    return ctx


def test_a_removed_backend_closes_its_sockets_only() -> None:
    maps = Maps({K1: Service((B1, B2)), KT: Service((Backend(A("10.1.0.1"), 80),))})
    port = FakeUdpSockets()
    to_b1, to_b2 = port.connect((B1.ip, 53)), port.connect((B2.ip, 53))
    r = UdpSocketReconciler(port, maps.programmed)
    assert not finalize(r).errors and not port.aborted  # nothing changed
    maps.table[K1] = Service((B2,))
    finalize(r)
    assert port.aborted == {to_b1} and to_b2 in port.sockets and r.closed == 1
    finalize(r)  # once
    assert port.aborted == {to_b1}


def test_a_backend_another_service_still_uses_keeps_its_sockets() -> None:
    maps = Maps({K1: Service((B1,)), K2: Service((B1, B3))})
    port = FakeUdpSockets()
    s = port.connect((B1.ip, 53))
    r = UdpSocketReconciler(port, maps.programmed)
    del maps.table[K1]
    finalize(r)
    assert s in port.sockets
    del maps.table[K2]  # the whole service, as the datapath's finalize deletes it
    finalize(r)
    assert port.aborted == {s}


def test_starts_from_what_is_programmed_so_a_first_pass_removal_counts() -> None:
    maps = Maps({K1: Service((B1, B2))})  # adopted after a restart
    port = FakeUdpSockets()
    s = port.connect((B2.ip, 53))
    r = UdpSocketReconciler(port, maps.programmed)
    maps.table[K1] = Service((B1,))
    finalize(r)
    assert port.aborted == {s}


class Failing(FakeUdpSockets):
    def close_connected(self, peers: frozenset[tuple[A, int]]) -> int:  # type: ignore[override]
        raise PermissionError(1, "Operation not permitted")


def test_a_failure_is_the_reconcilers_error_and_nothing_else_breaks() -> None:
    maps = Maps({K1: Service((B1, B2))})
    r = UdpSocketReconciler(Failing(), maps.programmed)
    maps.table[K1] = Service((B2,))
    ctx = finalize(r)
    assert list(ctx.errors) == ["udp-sockets"]
    assert "10.1.0.1:53" in ctx.errors["udp-sockets"]
    assert "Operation not permitted" in ctx.errors["udp-sockets"]
