"""A flow whose backend stops being programmed (for any service), with BPF_PROG_TEST_RUN
on the pod program, IPv4 and IPv6: a UDP flow is balanced anew onto a programmed backend
(as kube-proxy clears the UDP conntrack entries of endpoints it no longer uses), whether
the backend was deleted or is terminating while a ready one exists; a TCP flow keeps its
backend (an established connection finishes where it started); and a UDP flow whose
backend is still programmed keeps it."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from bpf.loader import Datapath
from bpf.sync import Syncer
from bpf.table import Backend, BackendState, Proto, Service, ServiceKey

from .test_checksums import BE4, BE6, VIP4, VIP6, _run, one_node, packet, parse

CLIENT = {4: "10.1.7.7", 6: "fd00:1::77"}
ADDRS = {4: (VIP4, BE4), 6: (VIP6, BE6)}
OTHER = {4: "10.201.7.10", 6: "fd00:201::7a"}  # the backend that takes over
PROTO = {"udp": 17, "tcp": 6}


@pytest.fixture
def dp() -> Iterator[Datapath]:
    with one_node("udprb") as d:
        yield d


def _send(dp: Datapath, family: int, proto: int, sport: int) -> str:
    """A packet of the client's flow (sport) to the service: the backend it went to."""
    vip = ADDRS[family][0]
    flags = 0x02 if proto == 6 else 0
    _, dst, _, dport, _ = parse(_run(dp.fds["rr_pod_ingress"],
                                     packet(CLIENT[family], vip, proto, sport, 80, b"x",
                                            flags=flags)))
    assert dport == 8080
    return dst


def _set_backends(dp: Datapath, family: int, *bes: Backend) -> None:
    """The service address's backends, for TCP and UDP alike (the pod behind both: a
    backend another service still uses stays programmed, and its flows with it)."""
    syncer = Syncer(dp.maps())
    table = dict(syncer.programmed())
    for proto in (Proto.TCP, Proto.UDP):
        table[ServiceKey(ip_address(ADDRS[family][0]), 80, proto)] = Service(bes)
    assert not syncer.sync(table).errors


def _be(addr: str, state: BackendState = BackendState.READY) -> Backend:
    return Backend(ip_address(addr), 8080, state=state)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("how", ["deleted", "terminating"])
def test_a_udp_flow_leaves_a_backend_that_went_away(dp: Datapath, family: int,
                                                    how: str) -> None:
    proto = PROTO["udp"]
    first, other = ADDRS[family][1], OTHER[family]
    assert _send(dp, family, proto, 44001) == first
    if how == "deleted":
        _set_backends(dp, family, _be(other))
    else:  # still serving but terminating, a ready one beside it: no longer used
        _set_backends(dp, family, _be(first, BackendState.TERMINATING),
                      _be(other))
    assert _send(dp, family, proto, 44001) == other  # the same flow, balanced anew
    assert _send(dp, family, proto, 44001) == other  # and kept there


@pytest.mark.parametrize("family", [4, 6])
def test_a_tcp_flow_keeps_its_backend(dp: Datapath, family: int) -> None:
    proto = PROTO["tcp"]
    first, other = ADDRS[family][1], OTHER[family]
    assert _send(dp, family, proto, 44002) == first
    _set_backends(dp, family, _be(other))
    assert _send(dp, family, proto, 44002) == first


@pytest.mark.parametrize("family", [4, 6])
def test_a_udp_flow_keeps_a_backend_still_programmed(dp: Datapath, family: int) -> None:
    proto = PROTO["udp"]
    first, other = ADDRS[family][1], OTHER[family]
    assert _send(dp, family, proto, 44003) == first
    _set_backends(dp, family, _be(first), _be(other))  # a backend added
    assert _send(dp, family, proto, 44003) == first
