"""`rackroute bgp peers` and `bgp routes` read the agents' status files: why a session is
not up, what each node advertises and what it holds back, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from controller.status import write_node

DOC = {
    "node": "n1",
    "instances": [{"name": "tor", "localASN": 65011, "peers": [
        {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 65000, "state": "active",
         "establishedTime": None, "routeCount": {"ipv4-unicast": {"received": 0,
                                                                   "advertised": 0}},
         "lastError": "no TCP connection with 10.0.0.1 port 179: the peer is unreachable"}]}],
    "problems": [],
    "routes": {"10.0.0.1": {"advertised": [
        {"prefix": "10.244.1.0/24", "nextHop": "10.0.0.11", "asPath": [65011],
         "communities": ["65000:100"], "largeCommunities": [], "localPreference": None}],
        "received": []}},
    "notAdvertised": [{"peer": "tor/tor-a", "subject": "Service demo/web LoadBalancerIP "
                       "198.51.100.1", "reason": "node n1 has the label "
                       "node.kubernetes.io/exclude-from-external-load-balancers"}],
}


def test_peers_say_why_a_session_is_not_up(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    write_node(tmp_path, "n1", DOC)
    assert main(["bgp", "peers", "--manifests", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("n1: peer 10.0.0.1 (tor/tor-a) not up: no TCP connection with 10.0.0.1 port 179"
            in out)


def test_advertised_routes_and_what_is_held_back(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    write_node(tmp_path, "n1", DOC)
    assert main(["bgp", "routes", "advertised", "--manifests", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "10.244.1.0/24" in out and "65000:100" in out
    assert ("n1: not advertised to tor/tor-a: Service demo/web LoadBalancerIP 198.51.100.1: "
            "node n1 has the label node.kubernetes.io/exclude-from-external-load-balancers"
            in out)
    assert main(["bgp", "routes", "received", "--manifests", str(tmp_path)]) == 0
    assert "not advertised" not in capsys.readouterr().out
