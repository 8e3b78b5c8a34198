"""Bulk announces: 10k /32s in a fresh session, then several 500-path changes.

Every set_paths must have each command acknowledged (ExaBGP's adapter used to wait out
its acknowledgement timeout, then fail, when the ToR's echo of our own UPDATEs reached it
while it waited for `done`), and after each change the ToR's kernel must hold exactly the
desired set. No timing is asserted: a lost acknowledgement fails the call itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest

from bgp.types import Path
from controller.lab.netns import wait_for
from tests.integration.bgp.conftest import Topo, global_config, peer_spec, topology
from tests.integration.bgp.test_tor import established, kernel_bgp

pytestmark = pytest.mark.timeout(300)

BASE = 0x0A640000  # 10.100.0.0/16
N = 10_000
CHANGE = 500
CHANGES = 5
ACK_TIMEOUT = 60.0  # the bug waited this out, then raised SpeakerError


def paths(lo: int, hi: int) -> set[Path]:
    return {Path(prefix=IPv4Network((BASE + i, 32))) for i in range(lo, hi)}


@pytest.fixture
def bulk_topo(kind: str) -> Iterator[Topo]:
    with topology(kind, 1, tag="rrg") as t:
        yield t


def converged(topo: Topo, want: set[Path]) -> None:
    expect = {str(p.prefix) for p in want}
    wait_for(lambda: set(kernel_bgp(topo)) == expect, 60, 0.2,
             what=f"{len(expect)} paths in the ToR kernel")


def test_10k_then_500_path_changes_are_acknowledged_and_converge(bulk_topo: Topo) -> None:
    topo = bulk_topo
    node = topo.nodes[0]
    topo.tor_neighbor(node)
    s = topo.make_speaker(node, ack_timeout=ACK_TIMEOUT)
    s.start(global_config(node))
    s.set_peers([peer_spec()])
    established(topo, node.addr4, timeout=30)

    want = paths(0, N)
    assert len(s.set_paths(want).announce) == N
    converged(topo, want)

    for k in range(CHANGES):
        # withdraw 500 old paths, announce 500 new ones
        want = (want - paths(k * CHANGE, (k + 1) * CHANGE)) | paths(
            N + k * CHANGE, N + (k + 1) * CHANGE)
        diff = s.set_paths(want)
        assert len(diff.announce) == CHANGE and len(diff.withdraw) == CHANGE
        converged(topo, want)
    assert s.advertised() == want
