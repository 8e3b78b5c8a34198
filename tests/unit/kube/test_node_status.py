"""An agent's status as its BGPNodeConfig: the CRD's shape, the round trip `bgp peers`
prints from, and the writes (created once, then patched)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bgp.bfd_port import FakeBfd
from controller.cli_bgp import peer_rows
from controller.kubenodestatus import RES, KubeNodeStatus, node_config, node_doc
from controller.sources.kubeapi import ApiError
from controller.sources.kubefake import FakeKubeAPI

NOW = "2026-11-27T00:00:00Z"


def doc(state: str = "established", problems: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "node": "n1", "updated": NOW, "problems": list(problems), "routes": {"x": {}},
        "notAdvertised": [],
        "instances": [{
            "name": "tor", "localASN": 65011, "routerID": "10.55.0.11", "localPort": 179,
            "heldPaths": [],
            "peers": [{
                "name": "tor", "peerAddress": "10.55.0.1", "peerASN": 65000, "state": state,
                "establishedTime": "2026-11-27T00:00:00+00:00" if state == "established"
                else None,
                "appliedTimers": {"holdTimeSeconds": 9, "keepAliveTimeSeconds": 3},
                "routeCount": {"ipv4-unicast": {"received": 2, "advertised": 3},
                               "ipv6-unicast": {"received": 0, "advertised": 1}},
                "plannedPaths": ["10.244.0.0/24"], "lastError": None,
                "bfd": {"state": "up", "diag": "none"},
            }],
        }],
    }


def test_the_object_has_the_crd_shape() -> None:
    obj = node_config(doc(), NOW)
    assert obj["metadata"]["name"] == "n1"
    [inst] = obj["spec"]["bgpInstances"]
    assert (inst["localASN"], inst["routerID"], inst["localPort"]) == (65011, "10.55.0.11", 179)
    st = obj["status"]
    assert (st["peers"], st["establishedPeers"]) == (1, 1)
    [peer] = st["bgpInstances"][0]["peers"]
    assert peer["peeringState"] == "established"
    assert peer["routeCount"] == [
        {"afi": "ipv4", "safi": "unicast", "received": 2, "advertised": 3},
        {"afi": "ipv6", "safi": "unicast", "received": 0, "advertised": 1}]
    assert "lastError" not in peer  # null is not a string: left out
    assert peer["bfd"] == {"state": "up", "diagnostic": "none"}
    assert node_doc(obj)["instances"][0]["peers"][0]["bfd"] == {"state": "up", "diag": "none"}
    assert st["conditions"][0]["status"] == "True"


@pytest.mark.parametrize("port", [179, -1])
def test_the_written_object_validates_against_the_crd(port: int) -> None:
    """What the agent writes, not a fixture: an instance that does not listen (localPort
    unset: -1 in the status document) leaves localPort out (the CRD wants 1..65535)."""
    from tests.unit.helm.test_chart import schema, validate

    d = doc()
    d["instances"][0]["localPort"] = port
    obj = node_config(d, NOW)
    assert validate(obj, schema("BGPNodeConfig")) == []
    assert obj["spec"]["bgpInstances"][0].get("localPort") == (port if port > 0 else None)


def test_problems_make_config_valid_false_and_come_back() -> None:
    obj = node_config(doc("active", ("peer tor: secret kube-system/x missing",
                                     "instance b: no router id")), NOW)
    cond = obj["status"]["conditions"][0]
    assert (cond["type"], cond["status"]) == ("ConfigValid", "False")
    assert obj["status"]["establishedPeers"] == 0
    back = node_doc(obj)
    assert back["problems"] == ["peer tor: secret kube-system/x missing",
                                "instance b: no router id"]


def test_bgp_peers_prints_the_same_rows_from_the_object() -> None:
    now = datetime(2026, 11, 27, 0, 5, tzinfo=UTC)
    d = doc()
    assert peer_rows({"n1": node_doc(node_config(d, NOW))}, now) == peer_rows({"n1": d}, now)


def test_written_once_then_patched() -> None:
    api = FakeKubeAPI()
    w = KubeNodeStatus(api)
    w.write(doc("active"), NOW)
    obj = api.get(RES, "n1")
    assert obj["status"]["bgpInstances"][0]["peers"][0]["peeringState"] == "active"
    assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rackroute-agent"
    before = len(api.calls)
    w.write(doc("established"), NOW)
    # the spec unchanged: only the status is patched
    assert [v for v, _ in api.calls[before:]] == ["patch"]
    assert api.get(RES, "n1")["status"]["establishedPeers"] == 1
    # deleted behind the agent's back: the next write fails, the one after creates it
    api.delete(RES, "n1")
    with pytest.raises(ApiError):
        w.write(doc("established"), NOW)
    w.write(doc("established"), NOW)
    assert api.get(RES, "n1")["status"]["establishedPeers"] == 1


def test_the_nodes_part_of_its_node_network_is_written_when_it_changes() -> None:
    from controller.kubenodestatus import NODE_NETWORK, network_status

    api = FakeKubeAPI()
    w = KubeNodeStatus(api)
    assert not w.write_network("n1", network_status(True, None, NOW))  # not created yet
    api.create(NODE_NETWORK, {"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.0.0.0/24"]}})
    api.merge_patch(NODE_NETWORK, "n1", {"status": {"conditions": [{"type": "Allocated"}]}},
                    sub="status")
    assert w.write_network("n1", network_status(True, None, NOW))
    st = api.get(NODE_NETWORK, "n1")["status"]
    assert (st["healthy"], st["routing"], st["lastHeartbeatTime"]) == (True, "native", NOW)
    assert "tunnelEndpoint" not in st
    assert st["conditions"] == [{"type": "Allocated"}]  # the operator's part stays
    assert not w.write_network("n1", network_status(True, None, "2026-11-27T00:01:00Z"))
    assert w.write_network("n1", network_status(False, "10.55.0.11", "2026-11-27T00:02:00Z"))
    st = api.get(NODE_NETWORK, "n1")["status"]
    assert (st["healthy"], st["routing"], st["tunnelEndpoint"]) == (False, "tunnel",
                                                                     "10.55.0.11")
    assert w.write_network("n1", network_status(True, None, NOW))
    assert "tunnelEndpoint" not in api.get(NODE_NETWORK, "n1")["status"]
    # why it is not healthy, as the agent logs it
    why = ["routing: node n3 has no IPv4 InternalIP: no tunnel to its pods"]
    assert w.write_network("n1", network_status(False, None, NOW, why))
    st = api.get(NODE_NETWORK, "n1")["status"]
    assert (st["healthy"], st["problems"]) == (False, why)
    assert w.write_network("n1", network_status(True, None, NOW))
    assert api.get(NODE_NETWORK, "n1")["status"]["problems"] == []


def test_node_network_problems_are_bounded() -> None:
    from controller.kubenodestatus import MAX_PROBLEM_LEN, MAX_PROBLEMS, network_status

    many = [f"datapath:demo/svc-{i}: no ports" for i in range(40)]
    shown = network_status(False, None, NOW, many)["problems"]
    assert len(shown) == MAX_PROBLEMS and shown[:-1] == many[:MAX_PROBLEMS - 1]
    assert shown[-1] == "… and 25 more (the agent's log)"
    (long,) = network_status(False, None, NOW, ["x" * 5000])["problems"]
    assert len(long) == MAX_PROBLEM_LEN and long.endswith("…")


def test_the_agents_pass_problems_are_its_node_networks(tmp_path: Path) -> None:
    from bgp.fake import FakeSpeaker
    from controller.agent import Agent, AgentConfig
    from controller.reconcile.loop import PassContext

    class Failing:
        name = "routing"

        def reconcile(self, ctx: PassContext) -> None:
            ctx.errors[self.name] = "node n3 has no IPv4 InternalIP: no tunnel to its pods"

        def close(self) -> None:
            """Nothing held."""

    (tmp_path / "m").mkdir()
    agent = Agent(AgentConfig(node="n1", manifests=tmp_path / "m", state_dir=tmp_path / "s",
                              extra=(Failing(),)), factory=lambda i: FakeSpeaker(),
                  bfd_port=FakeBfd())
    agent.source.poll()
    agent.loop.run_once()
    st = agent.network_status()
    assert st["healthy"] is False
    assert st["problems"] == ["routing: node n3 has no IPv4 InternalIP: no tunnel to its pods"]
