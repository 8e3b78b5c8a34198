"""PolicyReconciler on fake maps: a pass writes the compiled plan (endpoint and entries),
a pass with nothing changed writes nothing, a policy past the range limit is reported
naming it and the pod, and a policy deleted empties the maps."""

from __future__ import annotations

import ipaddress

from bpf import maps as m
from bpf.mapstore import FakeMap
from bpf.policy import PolicyMaps
from controller.model.policy import PolicyPeer, PolicyPort, PolicyRule
from controller.reconcile.loop import PassContext
from controller.reconcile.policy import PolicyReconciler
from controller.store import Snapshot
from tests.unit.policy.test_compile import NAMESPACES, PODS, policy, sel


def maps() -> PolicyMaps:
    return PolicyMaps(FakeMap(20, 8, 64), FakeMap(28, 50, 1024), FakeMap(20, 4, 16))


def addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return {ipaddress.ip_address("10.0.1.1"), ipaddress.ip_address("fd00::1")}


def run(r: PolicyReconciler, *objects: object) -> PassContext:
    snap = Snapshot.build([*PODS, *NAMESPACES.values(), *objects])
    ctx = PassContext(snap, "n1")
    r.reconcile(ctx)
    return ctx


ALLOW = policy("api", "web", sel(app="api"), ingress=[PolicyRule(
    (PolicyPeer(pod_selector=sel(app="front")),), (PolicyPort("TCP", 8080),))])


def test_a_pass_writes_the_plan_and_an_unchanged_one_writes_nothing() -> None:
    pm = maps()
    r = PolicyReconciler(pm, addresses)
    assert run(r, ALLOW).errors == {}
    assert pm.node is not None
    assert {m.ip_of(m.PolEpKey.from_buffer_copy(k).addr, m.PolEpKey.from_buffer_copy(k).family)
            for k, _ in pm.node.items()} == addresses()  # the node's own addresses
    (ep,) = [m.PolEp.from_buffer_copy(v) for _, v in pm.eps.items()]
    assert (ep.id, ep.flags) == (1, 0x1)  # api, isolated for ingress
    (value,) = [m.PolValue.from_buffer_copy(v) for _, v in pm.rules.items()]
    assert value.count == 1 and (value.r[0].proto, value.r[0].lo, value.r[0].hi) == (6, 8080,
                                                                                   8080)
    calls = pm.rules.batch_calls, pm.eps.batch_calls  # type: ignore[attr-defined]
    assert run(r, ALLOW).errors == {}
    assert (pm.rules.batch_calls, pm.eps.batch_calls) == calls  # type: ignore[attr-defined]
    # drift (an entry gone behind the agent's back) is left to the resync, which mends it
    (key, _), = pm.eps.items()
    pm.eps.delete_batch([key])
    assert run(r, ALLOW).errors == {} and list(pm.eps.items()) == []
    ctx = PassContext(Snapshot.build([*PODS, *NAMESPACES.values(), ALLOW]), "n1", resync=True)
    r.reconcile(ctx)
    assert ctx.errors == {} and len(list(pm.eps.items())) == 1
    assert r.endpoints == 1
    assert run(r).errors == {}  # the policy deleted
    assert list(pm.eps.items()) == [] and list(pm.rules.items()) == []


def test_a_policy_past_the_range_limit_is_an_error_naming_it() -> None:
    ports = tuple(PolicyPort("TCP", p) for p in range(100, 120, 2))  # 10 ranges
    many = policy("many", "web", sel(app="api"), ingress=[
        PolicyRule((PolicyPeer(pod_selector=sel(app="front")),), ports)])
    ctx = run(PolicyReconciler(maps(), addresses), many)
    assert "NetworkPolicy web/many: pod web/api: ingress" in ctx.errors["policy"]
    assert "more than 8 port ranges" in ctx.errors["policy"]


def test_a_policy_that_does_not_parse_is_a_problem_of_the_node() -> None:
    from controller.store import ObjectError

    pm = maps()
    snap = Snapshot.build([*PODS, ALLOW], [ObjectError(
        "NetworkPolicy web/typo", ("spec.ingress[0].form: unknown field",))])
    ctx = PassContext(snap, "n1")
    PolicyReconciler(pm, addresses).reconcile(ctx)
    assert ctx.errors["policy"] == ("NetworkPolicy web/typo: spec.ingress[0].form: "
                                    "unknown field")
    assert len(list(pm.eps.items())) == 1  # the good policy is enforced all the same
