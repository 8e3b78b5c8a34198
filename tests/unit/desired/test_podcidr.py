"""Pod CIDR IPAM: both modes, stability, freeing, exhaustion."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.desired.podcidr import plan_pod_cidrs
from controller.model.crds import ClusterNetworkConfig
from controller.model.k8s import Node
from controller.model.meta import Meta

N = ipaddress.ip_network


def nodes(*names: str, cidrs: dict[str, list[str]] | None = None) -> dict[str, Node]:
    c = cidrs or {}
    return {n: Node(Meta("Node", n), pod_cidrs=tuple(N(x) for x in c.get(n, []))) for n in names}


def pool(v4: str = "10.244.0.0/16", mask: int = 24, v6: str | None = None) -> ClusterNetworkConfig:
    return ClusterNetworkConfig(
        Meta("RackrouteConfig", "default"),
        cluster_pool_v4=(N(v4),),
        cluster_pool_v4_mask=mask,
        cluster_pool_v6=(N(v6),) if v6 else (),
        cluster_pool_v6_mask=112,
    )


def test_cluster_pool_gives_lowest_free_in_name_order() -> None:
    r = plan_pod_cidrs(nodes("b", "a", "c"), pool(), {})
    assert r.allocations == {
        "a": (N("10.244.0.0/24"),),
        "b": (N("10.244.1.0/24"),),
        "c": (N("10.244.2.0/24"),),
    }
    assert r.conditions["a"].reason == "Allocated"


def test_existing_allocations_are_kept_and_new_nodes_fill_gaps() -> None:
    existing = {"z": (N("10.244.0.0/24"),), "a": (N("10.244.5.0/24"),)}
    r = plan_pod_cidrs(nodes("a", "m", "z"), pool(), existing)
    assert r.allocations["z"] == (N("10.244.0.0/24"),)
    assert r.allocations["a"] == (N("10.244.5.0/24"),)
    assert r.allocations["m"] == (N("10.244.1.0/24"),)


def test_invalid_existing_allocation_is_replaced() -> None:
    existing = {"a": (N("192.168.0.0/24"),), "b": (N("10.244.0.0/23"),)}
    r = plan_pod_cidrs(nodes("a", "b"), pool(), existing)
    assert r.allocations == {"a": (N("10.244.0.0/24"),), "b": (N("10.244.1.0/24"),)}


def test_duplicate_existing_allocation_goes_to_first_node_only() -> None:
    existing = {"a": (N("10.244.7.0/24"),), "b": (N("10.244.7.0/24"),)}
    r = plan_pod_cidrs(nodes("a", "b"), pool(), existing)
    assert r.allocations["a"] == (N("10.244.7.0/24"),)
    assert r.allocations["b"] == (N("10.244.0.0/24"),)


def test_removed_node_frees_its_cidr() -> None:
    first = plan_pod_cidrs(nodes("a", "b"), pool(), {})
    second = plan_pod_cidrs(nodes("b", "c"), pool(), dict(first.allocations))
    assert "a" not in second.allocations
    assert second.allocations["b"] == first.allocations["b"]
    assert second.allocations["c"] == first.allocations["a"]


def test_exhaustion_is_a_condition_not_a_crash() -> None:
    r = plan_pod_cidrs(nodes("a", "b", "c"), pool("10.244.0.0/23", 24), {})
    assert r.allocations["c"] == ()
    cond = r.conditions["c"]
    assert (cond.status, cond.reason) == ("False", "PoolExhausted")
    assert "no free /24 left in 10.244.0.0/23" in cond.message


def test_dual_stack_pools() -> None:
    r = plan_pod_cidrs(nodes("a"), pool(v6="fd00:10:244::/96"), {})
    assert r.allocations["a"] == (N("10.244.0.0/24"), N("fd00:10:244::/112"))


def test_kubernetes_mode_reads_node_spec() -> None:
    cfg = ClusterNetworkConfig(Meta("RackrouteConfig", "default"), ipam_mode="kubernetes")
    r = plan_pod_cidrs(nodes("a", "b", cidrs={"a": ["10.1.0.0/24"]}), cfg, {})
    assert r.allocations["a"] == (N("10.1.0.0/24"),)
    assert r.allocations["b"] == ()
    assert r.conditions["b"].reason == "NoPodCIDR"


def test_no_pool_configured() -> None:
    r = plan_pod_cidrs(nodes("a"), None, {})
    assert r.allocations["a"] == ()
    assert r.conditions["a"].reason == "NoClusterPool"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([f"n{i}" for i in range(12)]), unique=True, min_size=1),
    st.randoms(use_true_random=False),
)
def test_stable_whatever_the_order(names: list[str], rnd: random.Random) -> None:
    first = plan_pod_cidrs(nodes(*names), pool("10.244.0.0/20", 24), {})
    shuffled = list(names)
    rnd.shuffle(shuffled)
    again = plan_pod_cidrs(nodes(*shuffled), pool("10.244.0.0/20", 24), dict(first.allocations))
    assert dict(again.allocations) == dict(first.allocations)
    flat = [c for v in first.allocations.values() for c in v]
    assert len(flat) == len(set(flat))
