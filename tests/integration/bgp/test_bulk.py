"""Bulk announces: 10k /32s in a fresh session, then several 500-path changes.

Every set_paths must return well before the speaker's acknowledgement timeout (ExaBGP used
to wait one out when the ToR's echo of our own UPDATEs reached the adapter while it waited
for `done`), and after each change the ToR's kernel must hold exactly the desired set.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest

from bgp.types import Path
from controller.lab.netns import wait_for
from tests.integration.bgp.conftest import Topo, build_topo, global_config, peer_spec
from tests.integration.bgp.test_tor import established, kernel_bgp

pytestmark = pytest.mark.timeout(300)

BASE = 0x0A640000  # 10.100.0.0/16
N = 10_000
CHANGE = 500
CHANGES = 5
ACK_TIMEOUT = 60.0  # the bug waited this out; a prompt call returns far below it
PROMPT = 20.0  # generous bound on one set_paths (10k took ~3 s with ExaBGP here)


def paths(lo: int, hi: int) -> set[Path]:
    return {Path(prefix=IPv4Network((BASE + i, 32))) for i in range(lo, hi)}


@pytest.fixture
def bulk_topo(kind: str) -> Iterator[Topo]:
    t = build_topo(kind, 1, tag="rrg")
    try:
        yield t
    finally:
        t.lab.close()


def converged(topo: Topo, want: set[Path]) -> None:
    expect = {str(p.prefix) for p in want}
    wait_for(lambda: set(kernel_bgp(topo)) == expect, 60, 0.2,
             what=f"{len(expect)} paths in the ToR kernel")


def test_10k_then_500_path_changes_return_promptly(bulk_topo: Topo) -> None:
    topo = bulk_topo
    node = topo.nodes[0]
    topo.tor_neighbor(node)
    s = topo.make_speaker(node, ack_timeout=ACK_TIMEOUT)
    s.start(global_config(node))
    s.set_peers([peer_spec()])
    established(topo, node.addr4, timeout=30)

    want = paths(0, N)
    t0 = time.monotonic()
    s.set_paths(want)
    took = time.monotonic() - t0
    assert took < PROMPT, f"set_paths of {N} paths took {took:.1f} s"
    converged(topo, want)

    for k in range(CHANGES):
        # withdraw 500 old paths, announce 500 new ones
        want = (want - paths(k * CHANGE, (k + 1) * CHANGE)) | paths(
            N + k * CHANGE, N + (k + 1) * CHANGE)
        t0 = time.monotonic()
        diff = s.set_paths(want)
        took = time.monotonic() - t0
        assert len(diff.announce) == CHANGE and len(diff.withdraw) == CHANGE
        assert took < PROMPT, f"change {k} took {took:.1f} s"
        converged(topo, want)
    assert s.advertised() == want
