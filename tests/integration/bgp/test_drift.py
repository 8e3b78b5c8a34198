"""Drift repair against a real ToR: a path deleted inside gobgpd (with the `gobgp` CLI on
the adapter's API socket) leaves the ToR's kernel, and one resync brings it back."""

from __future__ import annotations

import pytest

from bgp.gobgp.adapter import GobgpSpeaker
from bgp.types import path_from_texts
from controller.lab.netns import wait_for
from tests.integration.bgp.conftest import Topo, build_topo, global_config, peer_spec
from tests.integration.bgp.test_contract import gobgp_rib_del
from tests.integration.bgp.test_tor import established, kernel_bgp

pytestmark = pytest.mark.timeout(90)

POD = path_from_texts("10.244.1.0/24", communities=["65000:100"])
LB = path_from_texts("198.51.100.10/32", communities=["65000:200"],
                     large_communities=["65000:2:10"])


def test_path_deleted_inside_gobgpd_comes_back_after_resync() -> None:
    topo: Topo = build_topo("gobgp", 1)
    try:
        node = topo.nodes[0]
        topo.tor_neighbor(node)
        s = topo.make_speaker(node)
        assert isinstance(s, GobgpSpeaker)
        s.start(global_config(node))
        s.set_peers([peer_spec()])
        s.set_paths({POD, LB})
        established(topo, node.addr4)
        want = {"10.244.1.0/24", "198.51.100.10/32"}
        wait_for(lambda: want <= set(kernel_bgp(topo)), 15, what="paths in the ToR kernel")

        gobgp_rib_del(s, LB)
        wait_for(lambda: "198.51.100.10/32" not in kernel_bgp(topo), 10,
                 what="the deleted path withdrawn at the ToR")
        assert not s.set_paths({POD, LB})  # the adapter's memory did not notice

        diff = s.resync()
        assert diff.announce == (LB,) and diff.withdraw == ()
        wait_for(lambda: want <= set(kernel_bgp(topo)), 10, what="the path back at the ToR")
        lb = topo.tor.bgp_route_detail("198.51.100.10/32")["paths"][0]
        assert lb["community"]["string"] == "65000:200"
        assert lb["largeCommunity"]["string"] == "65000:2:10"
        assert not s.resync()
    finally:
        topo.lab.close()
