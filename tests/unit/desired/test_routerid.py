"""Router IDs from the RackrouteConfig pool: lowest free, stability, freeing, a full pool,
a pool edit, and no pool at all."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.desired.routerid import COND, plan_router_ids

A = ipaddress.IPv4Address
P = ipaddress.IPv4Network
POOL = P("10.255.0.0/24")


def test_new_nodes_take_the_lowest_free_address_in_name_order() -> None:
    r = plan_router_ids(["b", "a", "c"], POOL, {})
    assert r.allocations == {"a": A("10.255.0.1"), "b": A("10.255.0.2"), "c": A("10.255.0.3")}
    cond = r.conditions["a"]
    assert (cond.type, cond.status, cond.reason) == (COND, "True", "Allocated")
    assert cond.message == "10.255.0.1 from 10.255.0.0/24"


def test_recorded_ids_are_kept_and_a_new_node_fills_the_lowest_gap() -> None:
    existing = {"z": A("10.255.0.1"), "a": A("10.255.0.5")}
    r = plan_router_ids(["a", "m", "z"], POOL, existing)
    assert r.allocations == {"a": A("10.255.0.5"), "m": A("10.255.0.2"), "z": A("10.255.0.1")}


def test_a_restart_reads_back_the_same_allocation() -> None:
    first = plan_router_ids(["n1", "n2", "n3"], POOL, {})
    again = plan_router_ids(["n3", "n1", "n2"], POOL, dict(first.allocations))
    assert again == first


def test_a_deleted_node_frees_its_address_and_the_others_keep_theirs() -> None:
    first = plan_router_ids(["a", "b", "c"], POOL, {})
    second = plan_router_ids(["b", "c", "d"], POOL, dict(first.allocations))
    assert "a" not in second.allocations
    assert (second.allocations["b"], second.allocations["c"]) == (
        first.allocations["b"], first.allocations["c"])
    assert second.allocations["d"] == first.allocations["a"] == A("10.255.0.1")


def test_network_and_broadcast_addresses_are_never_given_out() -> None:
    r = plan_router_ids(["a", "b"], P("10.255.0.0/30"), {})
    assert r.allocations == {"a": A("10.255.0.1"), "b": A("10.255.0.2")}
    # recorded on the reserved ends (by hand, or before a pool edit): moved
    r = plan_router_ids(["a", "b"], P("10.255.0.0/30"),
                        {"a": A("10.255.0.0"), "b": A("10.255.0.3")})
    assert r.allocations == {"a": A("10.255.0.1"), "b": A("10.255.0.2")}
    # a /31 has no broadcast address: only its network address is kept back
    r = plan_router_ids(["a", "b"], P("10.255.0.0/31"), {})
    assert r.allocations == {"a": A("10.255.0.1"), "b": None}


def test_a_full_pool_leaves_the_extra_nodes_without_one_and_says_so() -> None:
    pool = P("10.255.0.0/30")
    r = plan_router_ids(["a", "b", "c"], pool, {},
                        "RackrouteConfig default: spec.bgpRouterIDPool")
    assert r.allocations == {"a": A("10.255.0.1"), "b": A("10.255.0.2"), "c": None}
    cond = r.conditions["c"]
    assert (cond.type, cond.status, cond.reason) == (COND, "False", "PoolExhausted")
    assert cond.message == ("Node c: no free router ID left in 10.255.0.0/30 "
                            "(RackrouteConfig default: spec.bgpRouterIDPool)")
    assert r.conditions["b"].status == "True"
    # the waiting node gets the address a departing node frees
    later = plan_router_ids(["b", "c"], pool, dict(r.allocations))
    assert later.allocations == {"b": A("10.255.0.2"), "c": A("10.255.0.1")}
    assert later.conditions["c"].reason == "Allocated"


def test_a_pool_edit_moves_only_the_nodes_whose_address_fell_outside() -> None:
    existing = {"a": A("10.255.0.5"), "b": A("10.255.1.7"), "c": A("10.255.0.1")}
    r = plan_router_ids(["a", "b", "c"], P("10.255.0.0/29"), existing)
    assert r.allocations == {"a": A("10.255.0.5"), "b": A("10.255.0.2"), "c": A("10.255.0.1")}
    # shrunk so that an address becomes the broadcast address: moved too
    r = plan_router_ids(["a"], P("10.255.0.0/30"), {"a": A("10.255.0.3")})
    assert r.allocations == {"a": A("10.255.0.1")}
    # a whole new pool: everyone moves, lowest first, in name order
    r = plan_router_ids(["a", "b", "c"], P("192.0.2.0/24"), existing)
    assert r.allocations == {"a": A("192.0.2.1"), "b": A("192.0.2.2"), "c": A("192.0.2.3")}


def test_an_address_recorded_twice_stays_with_the_first_node_by_name() -> None:
    existing = {"b": A("10.255.0.9"), "a": A("10.255.0.9")}
    r = plan_router_ids(["a", "b"], POOL, existing)
    assert r.allocations == {"a": A("10.255.0.9"), "b": A("10.255.0.1")}


def test_without_a_pool_nothing_is_allocated_nor_released() -> None:
    existing = {"a": A("10.255.0.5"), "gone": A("10.255.0.6")}
    r = plan_router_ids(["a", "b"], None, existing)
    assert r.allocations == {"a": A("10.255.0.5"), "b": None}
    assert r.conditions == {}


def test_a_large_pool_is_not_walked_address_by_address() -> None:
    r = plan_router_ids(["a", "b"], P("10.0.0.0/8"), {"a": A("10.200.0.1")})
    assert r.allocations == {"a": A("10.200.0.1"), "b": A("10.0.0.1")}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([f"n{i}" for i in range(12)]), unique=True, min_size=1),
    st.lists(st.sampled_from([f"n{i}" for i in range(12)]), unique=True),
    st.randoms(use_true_random=False),
)
def test_stable_unique_and_lowest_free_whatever_comes_and_goes(
    names: list[str], later: list[str], rnd: random.Random
) -> None:
    pool = P("10.255.0.0/28")  # 14 addresses for at most 12 nodes
    first = plan_router_ids(names, pool, {})
    got = [a for a in first.allocations.values() if a is not None]
    assert sorted(got) == [A(int(pool.network_address) + i + 1) for i in range(len(names))]
    shuffled = list(later)
    rnd.shuffle(shuffled)
    second = plan_router_ids(shuffled, pool, dict(first.allocations))
    for n in set(names) & set(later):
        assert second.allocations[n] == first.allocations[n]
    ids = [a for a in second.allocations.values() if a is not None]
    assert len(ids) == len(set(ids)) == len(later)
    assert all(a in pool and a not in (pool.network_address, pool.broadcast_address)
               for a in ids)
