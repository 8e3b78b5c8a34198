"""Objects rackroute reads but does not own carry no condition of ours; why one that does
not parse is ignored is still said where a user looks: a Node's in one Warning event per
distinct problem (the operator reads Nodes), an EndpointSlice's in the problems of each
node's NodeNetwork (the agents alone read them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bgp.bfd_port import FakeBfd
from controller.operator import KubeOperator
from controller.sources.kube import ParseCache
from controller.sources.kubeapi import RESOURCES, ApiError, Obj, Resource
from controller.sources.kubefake import FakeKubeAPI
from tests.unit.kube.cluster import create_all, lab_docs
from tests.unit.kube.test_kube_operator import settle

NODE = RESOURCES["Node"]
EVENT = RESOURCES["Event"]
NOW = "2026-11-27T00:00:00Z"
HOST_BITS = ("Node node-2: spec.podCIDRs[0]: host bits set in '10.244.9.1/24', did you "
             "mean 10.244.9.0/24? (keeping the last good version)")


def node_events(api: FakeKubeAPI) -> list[dict[str, Any]]:
    items, _ = api.list(EVENT)
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [e for e in items if e["regarding"]["kind"] == "Node"]


def test_a_node_that_does_not_parse_is_told_once_per_problem() -> None:
    api = FakeKubeAPI()
    create_all(api, lab_docs())
    cache = ParseCache()
    op = KubeOperator(api, lambda: NOW)
    settle(api, op, cache)
    assert node_events(api) == []  # healthy nodes: nothing to tell
    api.merge_patch(NODE, "node-2", {"spec": {"podCIDRs": ["10.244.9.1/24"]}})
    assert settle(api, op, cache) == 1
    (ev,) = node_events(api)
    assert (ev["type"], ev["reason"], ev["note"]) == ("Warning", "InvalidManifest", HOST_BITS)
    # kubectl describe node finds it: regarding the Node, its name for a uid
    assert ev["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": "node-2",
                               "uid": "node-2"}
    assert ev["metadata"]["namespace"] == "default"
    assert "conditions" not in (api.get(NODE, "node-2").get("status") or {})
    # not again on later passes, nor for a change elsewhere
    api.merge_patch(NODE, "node-1", {"metadata": {"labels": {"x": "y"}}})
    settle(api, op, cache)
    assert len(node_events(api)) == 1
    # another problem is told; fixed, nothing; broken again, told again
    api.merge_patch(NODE, "node-2", {"spec": {"podCIDRs": ["10.244.9.2/24"]}})
    settle(api, op, cache)
    assert [e["note"] for e in node_events(api)][1:] == [HOST_BITS.replace("9.1/", "9.2/")]
    api.merge_patch(NODE, "node-2", {"spec": {"podCIDRs": None}})
    settle(api, op, cache)
    assert len(node_events(api)) == 2
    api.merge_patch(NODE, "node-2", {"spec": {"podCIDRs": ["10.244.9.1/24"]}})
    settle(api, op, cache)
    assert [e["note"] for e in node_events(api)][2:] == [HOST_BITS]


class EventsRefused(FakeKubeAPI):
    """Creating an Event fails while `refuse` is set."""

    refuse = False

    def create(self, res: Resource, obj: Obj, namespace: str = "") -> Obj:
        if res.kind == "Event" and self.refuse:
            raise ApiError(500, "InternalError", "etcdserver: request timed out")
        return super().create(res, obj, namespace)


def test_a_lost_event_is_told_on_the_next_pass() -> None:
    api = EventsRefused()
    create_all(api, lab_docs())
    api.create(NODE, {"metadata": {"name": "node-9"}, "spec": {"podCIDRs": ["bad"]}})
    cache = ParseCache()
    op = KubeOperator(api, lambda: NOW)
    api.refuse = True
    settle(api, op, cache)
    assert node_events(api) == [] and op.writer.told == set()
    api.refuse = False
    assert settle(api, op, cache) == 1
    (ev,) = node_events(api)
    assert ev["note"].startswith("Node node-9: spec.podCIDRs[0]: ")
    assert ev["regarding"]["uid"] == "node-9"  # never parsed: its name still finds it


BAD_SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.0.0.300]
"""


def test_an_endpoint_slice_that_does_not_parse_is_in_the_nodes_problems(
        tmp_path: Path) -> None:
    """After the pass's own errors, and without spoiling the node's health."""
    from bgp.fake import FakeSpeaker
    from controller.agent import Agent, AgentConfig

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "slice.yaml").write_text(BAD_SLICE)
    agent = Agent(AgentConfig(node="n1", manifests=tmp_path / "m", state_dir=tmp_path / "s"),
                  factory=lambda i: FakeSpeaker(), bfd_port=FakeBfd())
    agent.source.poll()
    agent.loop.run_once()
    st = agent.network_status()
    assert st["healthy"] is True
    assert st["problems"] == [
        "EndpointSlice demo/web-abc: endpoints[0].addresses[0]: not an IP address: "
        "'10.0.0.300'"]
    (tmp_path / "m" / "slice.yaml").write_text(BAD_SLICE.replace("10.0.0.300", "10.0.0.30"))
    agent.source.poll()
    agent.loop.run_once()
    assert agent.network_status()["problems"] == []
