"""Resolving each node's BGP instances and peers, and the conditions on bad config."""

from __future__ import annotations

import ipaddress
from typing import Any

from controller.desired.bgpconfig import cluster_conditions, resolve_node
from controller.desired.cluster import apply_allocations, plan_allocations
from tests.unit.manifests import node, snapshot

BASE = """
apiVersion: rackroute.io/v1alpha1
kind: BGPClusterConfig
metadata: {name: tor, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  nodeSelector: {matchLabels: {bgp: "on"}}
  bgpInstances:
  - name: tor
    localASN: 65010
    localPort: 179
    peers:
    - {name: tor-a, peerAddress: 10.0.0.1, peerASN: 65000, peerConfigRef: {name: default}}
    - {name: tor-b, peerAddress: 10.0.0.2, peerASN: 65000}
---
apiVersion: rackroute.io/v1alpha1
kind: BGPPeerConfig
metadata: {name: default}
spec:
  transport: {peerPort: 1179}
  timers: {holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 5}
  gracefulRestart: {enabled: true, restartTimeSeconds: 60}
  ebgpMultihop: 4
  families: [{afi: ipv4, safi: unicast}]
"""

IP = ipaddress.ip_address


def test_peers_get_their_peer_config_and_defaults() -> None:
    snap = snapshot(BASE, node("n1", "10.0.0.11"))
    nb = resolve_node(snap, snap.nodes["n1"])
    assert nb.problems == ()
    (inst,) = nb.instances
    assert (inst.global_config.asn, str(inst.global_config.router_id)) == (65010, "10.0.0.11")
    assert inst.global_config.listen_port == 179
    a, b = inst.peers
    assert (a.spec.peer_port, a.spec.hold_time, a.spec.keepalive) == (1179, 9, 3)
    assert (a.spec.graceful_restart, a.spec.restart_time, a.spec.ebgp_multihop) == (True, 60, 4)
    assert [str(f) for f in a.spec.families] == ["ipv4-unicast"]
    assert (b.spec.peer_port, b.spec.hold_time, b.spec.graceful_restart) == (179, 90, False)


def test_node_override_sets_asn_router_id_port_and_local_address() -> None:
    ov = {
        "apiVersion": "rackroute.io/v1alpha1",
        "kind": "BGPNodeConfigOverride",
        "metadata": {"name": "n1"},
        "spec": {
            "bgpInstances": [
                {
                    "name": "tor",
                    "localASN": 65011,
                    "routerID": "1.1.1.1",
                    "localPort": 1790,
                    "peers": [{"name": "tor-a", "localAddress": "10.0.0.99"}],
                }
            ]
        },
    }
    snap = snapshot(BASE, node("n1", "10.0.0.11"), ov)
    (inst,) = resolve_node(snap, snap.nodes["n1"]).instances
    assert inst.global_config.asn == 65011
    assert inst.global_config.router_id == IP("1.1.1.1")
    assert inst.global_config.listen_port == 1790
    assert inst.peers[0].spec.local_address == IP("10.0.0.99")
    assert inst.peers[1].spec.local_address is None


def test_unselected_node_has_no_instances() -> None:
    snap = snapshot(BASE, node("n1", "10.0.0.11", {"bgp": "off"}))
    assert resolve_node(snap, snap.nodes["n1"]).instances == ()
    conds = {c.type: c for c in cluster_conditions(snap)["BGPClusterConfig tor"]}
    assert conds["NoMatchingNode"].status == "True"


def test_missing_peer_config_skips_only_that_peer() -> None:
    text = BASE.replace("peerConfigRef: {name: default}", "peerConfigRef: {name: nope}")
    snap = snapshot(text, node("n1", "10.0.0.11"))
    nb = resolve_node(snap, snap.nodes["n1"])
    assert [p.name for p in nb.instances[0].peers] == ["tor-b"]
    (prob,) = nb.problems
    assert prob.condition == "MissingPeerConfigs"
    assert "peers[tor-a].peerConfigRef: BGPPeerConfig 'nope' not found" in prob.message
    conds = {c.type: c for c in cluster_conditions(snap)["BGPClusterConfig tor"]}
    assert (conds["MissingPeerConfigs"].status, conds["MissingPeerConfigs"].message) == (
        "True",
        "spec.bgpInstances[tor].peers[tor-a].peerConfigRef: BGPPeerConfig 'nope' not found",
    )


def test_auth_secret_found_missing_and_without_key() -> None:
    text = BASE.replace("  ebgpMultihop: 4\n", "  ebgpMultihop: 4\n  authSecretRef: bgp-auth\n")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bgp-auth", "namespace": "kube-system"},
        "stringData": {"password": "s3cret"},
    }
    snap = snapshot(text, node("n1", "10.0.0.11"), secret)
    peers = resolve_node(snap, snap.nodes["n1"]).instances[0].peers
    assert peers[0].spec.password == "s3cret"
    assert "s3cret" not in repr(peers[0].spec)
    # found: the condition says so (False), and clears what a missing one set
    [c] = cluster_conditions(snap)["BGPPeerConfig default"]
    assert (c.type, c.status, c.reason) == ("MissingAuthSecret", "False", "SecretFound")

    snap = snapshot(text, node("n1", "10.0.0.11"))
    nb = resolve_node(snap, snap.nodes["n1"])
    assert [p.name for p in nb.instances[0].peers] == ["tor-b"]
    assert nb.problems[0].condition == "MissingAuthSecret"
    assert "Secret 'bgp-auth' not found" in nb.problems[0].message
    conds = cluster_conditions(snap)["BGPPeerConfig default"]
    assert any(c.type == "MissingAuthSecret" and c.status == "True" for c in conds)

    secret["stringData"] = {"other": "x"}
    snap = snapshot(text, node("n1", "10.0.0.11"), secret)
    assert "has no key password" in resolve_node(snap, snap.nodes["n1"]).problems[0].message


def test_conflicting_cluster_configs_older_wins() -> None:
    newer = BASE.replace(
        'name: tor, creationTimestamp: "2026-01-01T00:00:00Z"',
        'name: tor2, creationTimestamp: "2026-02-01T00:00:00Z"',
    )
    newer = newer.replace("localASN: 65010", "localASN: 65099").split("---")[0]
    snap = snapshot(BASE + "---\n" + newer, node("n1", "10.0.0.11"))
    nb = resolve_node(snap, snap.nodes["n1"])
    assert [i.global_config.asn for i in nb.instances] == [65010]
    assert nb.problems[0].condition == "ConflictingClusterConfig"
    assert nb.problems[0].ref == "BGPClusterConfig tor2"
    conds = cluster_conditions(snap)
    new = {c.type: c for c in conds["BGPClusterConfig tor2"]}
    old = {c.type: c for c in conds["BGPClusterConfig tor"]}
    assert new["ConflictingClusterConfig"].status == "True"
    assert new["ConflictingClusterConfig"].message == nb.problems[0].message
    assert (old["ConflictingClusterConfig"].status,
            old["ConflictingClusterConfig"].reason) == ("False", "NoConflict")


def test_every_condition_is_reported_healthy_too_at_the_objects_generation() -> None:
    text = BASE.replace("metadata: {name: default}", "metadata: {name: default, generation: 3}")
    text = text.replace('metadata: {name: tor, creationTimestamp: "2026-01-01T00:00:00Z"}',
                        'metadata: {name: tor, creationTimestamp: "2026-01-01T00:00:00Z", '
                        "generation: 7}")
    snap = snapshot(text, node("n1", "10.0.0.11"))
    conds = cluster_conditions(snap)
    assert {(c.type, c.status, c.observed_generation)
            for c in conds["BGPClusterConfig tor"]} == {
        ("NoMatchingNode", "False", 7), ("MissingPeerConfigs", "False", 7),
        ("ConflictingClusterConfig", "False", 7)}
    assert [(c.type, c.status, c.reason, c.observed_generation)
            for c in conds["BGPPeerConfig default"]] == [
        ("MissingAuthSecret", "False", "NoAuthSecret", 3)]


def test_two_instances_on_one_port() -> None:
    text = BASE.replace(
        "    - {name: tor-b, peerAddress: 10.0.0.2, peerASN: 65000}\n",
        "    - {name: tor-b, peerAddress: 10.0.0.2, peerASN: 65000}\n"
        "  - name: second\n    localASN: 65020\n    localPort: 179\n"
        "    peers: [{name: x, peerAddress: 10.0.0.3, peerASN: 65001}]\n",
    )
    snap = snapshot(text, node("n1", "10.0.0.11"))
    nb = resolve_node(snap, snap.nodes["n1"])
    assert [i.name for i in nb.instances] == ["tor"]
    assert (
        "localPort: port 179 on node n1 is already used by instance 'tor'" in nb.problems[0].message
    )


def test_missing_asn_and_router_id() -> None:
    text = BASE.replace("    localASN: 65010\n", "")
    snap = snapshot(text, node("n1", "10.0.0.11"))
    nb = resolve_node(snap, snap.nodes["n1"])
    assert nb.instances == ()
    assert nb.problems[0].condition == "MissingLocalASN"
    snap = snapshot(BASE, node("n1", "fd00::11"))
    nb = resolve_node(snap, snap.nodes["n1"])
    assert nb.problems[0].condition == "MissingRouterID"


# ---------------------------------------------------------------- router IDs


def rr_config(pool: str | None = "10.255.0.0/24") -> dict[str, Any]:
    spec: dict[str, Any] = {"routingMode": "native"}
    if pool is not None:
        spec["bgpRouterIDPool"] = pool
    return {"apiVersion": "rackroute.io/v1alpha1", "kind": "RackrouteConfig",
            "metadata": {"name": "default"}, "spec": spec}


def node_network(name: str, router_id: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podCIDRs": ["10.244.0.0/24"]}
    if router_id is not None:
        spec["bgpRouterID"] = router_id
    return {"apiVersion": "rackroute.io/v1alpha1", "kind": "NodeNetwork",
            "metadata": {"name": name}, "spec": spec}


def override(name: str, router_id: str) -> dict[str, Any]:
    return {"apiVersion": "rackroute.io/v1alpha1", "kind": "BGPNodeConfigOverride",
            "metadata": {"name": name},
            "spec": {"bgpInstances": [{"name": "tor", "routerID": router_id}]}}


def router_id(*objs: dict[str, Any], name: str = "n1") -> str:
    snap = snapshot(BASE, *objs)
    nb = resolve_node(snap, snap.nodes[name])
    assert nb.problems == (), nb.problems
    return str(nb.instances[0].global_config.router_id)


def test_the_override_router_id_wins_over_the_pool() -> None:
    assert router_id(node("n1", "fd00::11"), rr_config(), node_network("n1", "10.255.0.7"),
                     override("n1", "1.1.1.1")) == "1.1.1.1"


def test_with_a_pool_the_allocated_router_id_is_used_even_beside_an_ipv4_address() -> None:
    assert router_id(node("n1", "10.0.0.11"), rr_config(),
                     node_network("n1", "10.255.0.7")) == "10.255.0.7"
    assert router_id(node("n1", "fd00::11"), rr_config(),
                     node_network("n1", "10.255.0.8")) == "10.255.0.8"


def test_with_a_pool_a_node_waits_for_the_operators_allocation() -> None:
    for nn in ([], [node_network("n1", None)]):
        snap = snapshot(BASE, node("n1", "10.0.0.11"), rr_config(), *nn)
        nb = resolve_node(snap, snap.nodes["n1"])
        assert nb.instances == ()
        (prob,) = nb.problems
        assert (prob.ref, prob.condition) == ("BGPClusterConfig tor", "MissingRouterID")
        assert prob.message == (
            "BGPClusterConfig tor: spec.bgpInstances[tor]: node n1 waits for the operator to "
            "allocate its router ID from RackrouteConfig default spec.bgpRouterIDPool "
            "10.255.0.0/24 (or set routerID in BGPNodeConfigOverride n1)"
        )


def test_without_a_pool_the_first_ipv4_address_and_no_recorded_id() -> None:
    assert router_id(node("n1", "10.0.0.11"), rr_config(None),
                     node_network("n1", "10.255.0.7")) == "10.0.0.11"
    assert router_id(node("n1", "10.0.0.11"), node_network("n1", "10.255.0.7")) == "10.0.0.11"


def test_an_ipv6_only_node_without_either_is_told_both_remedies() -> None:
    snap = snapshot(BASE, node("n1", "fd00::11"), rr_config(None))
    nb = resolve_node(snap, snap.nodes["n1"])
    assert nb.instances == ()
    (prob,) = nb.problems
    assert prob.condition == "MissingRouterID"
    assert prob.message == (
        "BGPClusterConfig tor: spec.bgpInstances[tor]: node n1 has no IPv4 address; set "
        "routerID in BGPNodeConfigOverride n1, or RackrouteConfig spec.bgpRouterIDPool for "
        "the operator to allocate one"
    )


def test_the_operators_allocation_gives_ipv6_only_nodes_their_router_ids() -> None:
    snap = snapshot(BASE, node("n1", "fd00::11"), node("n2", "fd00::12"),
                    node("n3", "10.0.0.13"), rr_config("10.255.0.0/30"))
    planned = apply_allocations(snap, plan_allocations(snap))
    got = {n: resolve_node(planned, planned.nodes[n]) for n in ("n1", "n2", "n3")}
    assert {n: [str(i.global_config.router_id) for i in nb.instances]
            for n, nb in got.items()} == {"n1": ["10.255.0.1"], "n2": ["10.255.0.2"], "n3": []}
    # the pool is full for n3: it waits (its NodeNetwork's condition says why)
    assert "waits for the operator" in got["n3"].problems[0].message


def test_multihop_ignored_for_ibgp() -> None:
    text = BASE.replace("localASN: 65010", "localASN: 65000")
    snap = snapshot(text, node("n1", "10.0.0.11"))
    peer = resolve_node(snap, snap.nodes["n1"]).instances[0].peers[0]
    assert peer.ibgp and peer.spec.ebgp_multihop == 1


def test_an_override_naming_what_nothing_has_is_told() -> None:
    """A BGPNodeConfigOverride for an instance the node does not run, a peer its instance
    does not have, or a peer localPort (not applied): each a problem naming the field; the
    rest of the override still applies."""
    ov = override("n1", "10.0.0.99")
    ov["spec"]["bgpInstances"][0]["peers"] = [
        {"name": "tor-a", "localPort": 1790}, {"name": "nobody"}]
    ov["spec"]["bgpInstances"].append({"name": "ghost", "localASN": 1})
    snap = snapshot(BASE, node("n1", "10.0.0.11"), ov)
    nb = resolve_node(snap, snap.nodes["n1"])
    assert str(nb.instances[0].global_config.router_id) == "10.0.0.99"  # still applied
    msgs = sorted(p.message for p in nb.problems)
    assert msgs == [
        "BGPNodeConfigOverride n1: spec.bgpInstances[ghost]: no BGPClusterConfig selecting "
        "node n1 has an instance of that name; ignored",
        "BGPNodeConfigOverride n1: spec.bgpInstances[tor].peers[nobody]: instance tor has "
        "no peer of that name; ignored",
        "BGPNodeConfigOverride n1: spec.bgpInstances[tor].peers[tor-a].localPort: not "
        "applied (the session's source port is the kernel's choice); the instance's "
        "localPort is where it listens",
    ]
