"""Advertisement planning: selection, attributes, aggregation and traffic policies."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.desired.advertise import NodePlan, PlanContext, plan_node
from controller.desired.bgpconfig import resolve_node
from controller.store import Snapshot
from tests.unit.manifests import (
    NOT_READY,
    READY,
    TERMINATING,
    lb_service,
    node,
    slice_,
    snapshot,
)

N = ipaddress.ip_network

BGP = """
apiVersion: rackroute.io/v1alpha1
kind: BGPClusterConfig
metadata: {name: tor}
spec:
  bgpInstances:
  - name: tor
    localASN: 65010
    peers:
    - {name: ebgp, peerAddress: 10.0.0.1, peerASN: 65000, peerConfigRef: {name: default}}
    - {name: ibgp, peerAddress: 10.0.0.2, peerASN: 65010, peerConfigRef: {name: default}}
---
apiVersion: rackroute.io/v1alpha1
kind: BGPPeerConfig
metadata: {name: default}
spec:
  families:
  - {afi: ipv4, safi: unicast, advertisements: {matchLabels: {adv: "yes"}}}
  - {afi: ipv6, safi: unicast, advertisements: {matchLabels: {adv: "yes"}}}
---
apiVersion: rackroute.io/v1alpha1
kind: BGPAdvertisement
metadata: {name: pods, labels: {adv: "yes"}}
spec:
  advertisements:
  - advertisementType: PodCIDR
    attributes: {communities: {standard: ["65000:100"], wellKnown: [no-export]}}
---
apiVersion: rackroute.io/v1alpha1
kind: BGPAdvertisement
metadata: {name: lb, labels: {adv: "yes"}}
spec:
  advertisements:
  - advertisementType: Service
    service: {addresses: [LoadBalancerIP, ExternalIP, ClusterIP]}
    selector: {matchExpressions: [{key: skip, operator: DoesNotExist}]}
    attributes:
      communities: {standard: ["65000:200"], large: ["65000:1:2"]}
      localPreference: 150
---
apiVersion: rackroute.io/v1alpha1
kind: BGPAdvertisement
metadata: {name: unused, labels: {adv: "no"}}
spec:
  advertisements:
  - advertisementType: Service
    service: {addresses: [LoadBalancerIP]}
    selector: {matchLabels: {}}
    attributes: {communities: {standard: ["1:1"]}}
"""

NETWORK = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "x"},
}


def plan(snap: Snapshot, name: str = "n1", pod_cidrs: tuple[str, ...] = ()) -> NodePlan:
    nb = resolve_node(snap, snap.nodes[name])
    return plan_node(PlanContext.of(snap), nb, tuple(N(c) for c in pod_cidrs))


def prefixes(p: NodePlan, peer: str = "ebgp") -> set[str]:
    (pp,) = [x for x in p.peers if x.peer == peer]
    return {str(x.prefix) for x in pp.paths}


def nodes() -> list[dict[str, Any]]:
    return [node("n1", "10.0.0.11"), node("n2", "10.0.0.12")]


def test_pod_cidr_with_communities_and_no_local_pref_on_ebgp() -> None:
    snap = snapshot(BGP, *nodes())
    p = plan(snap, pod_cidrs=("10.244.0.0/24",))
    (path,) = [x for x in p.peers[0].paths if str(x.prefix) == "10.244.0.0/24"]
    assert path.communities == frozenset({"65000:100", "65535:65281"})
    assert path.local_pref is None
    assert p.peers[0].reasons[path.prefix] == ("PodCIDR of node n1 (BGPAdvertisement pods)",)
    # no IPv6 pod CIDR: a reason, not a path
    assert any(s.subject == "PodCIDR ipv6-unicast" for s in p.not_advertised)


def test_lb_ip_cluster_policy_with_endpoints_elsewhere_is_advertised_by_every_node() -> None:
    snap = snapshot(
        BGP,
        *nodes(),
        lb_service("web", ingress=["10.96.0.5"]),
        slice_("web", [("10.244.1.5", "n2", READY)]),
    )
    for n in ("n1", "n2"):
        assert "10.96.0.5/32" in prefixes(plan(snap, n))


def test_attributes_united_and_local_pref_on_ibgp_only() -> None:
    snap = snapshot(
        BGP,
        *nodes(),
        lb_service("web", ingress=["10.96.0.5"]),
        slice_("web", [("10.244.1.5", "n2", READY)]),
    )
    p = plan(snap)
    (ib,) = [x for x in p.peers if x.peer == "ibgp"]
    (path,) = ib.paths
    assert path.local_pref == 150
    assert path.communities == frozenset({"65000:200"})
    assert path.large_communities == frozenset({"65000:1:2"})
    (eb,) = [x for x in p.peers if x.peer == "ebgp"]
    assert next(iter(eb.paths)).local_pref is None


def test_two_advertisements_for_one_prefix_merge() -> None:
    extra = (
        BGP
        + """
---
apiVersion: rackroute.io/v1alpha1
kind: BGPAdvertisement
metadata: {name: lb2, labels: {adv: "yes"}}
spec:
  advertisements:
  - advertisementType: Service
    service: {addresses: [LoadBalancerIP]}
    selector: {matchLabels: {io.kubernetes.service.name: web}}
    attributes:
      communities: {standard: ["65000:300"]}
      localPreference: 400
"""
    )
    snap = snapshot(
        extra,
        *nodes(),
        lb_service("web", ingress=["10.96.0.5"]),
        slice_("web", [("10.244.1.5", "n2", READY)]),
    )
    (ib,) = [x for x in plan(snap).peers if x.peer == "ibgp"]
    (path,) = ib.paths
    assert path.communities == frozenset({"65000:200", "65000:300"})
    assert path.local_pref == 400
    assert len(ib.reasons[path.prefix]) == 1  # same service, one reason line


def test_local_policy_only_nodes_with_ready_local_endpoint() -> None:
    snap = snapshot(
        BGP,
        *nodes(),
        node("n3", "10.0.0.13"),
        lb_service("web", etp="Local", ingress=["10.96.0.5"]),
        slice_(
            "web",
            [("10.244.1.5", "n2", READY), ("10.244.0.5", "n1", NOT_READY)],
        ),
    )
    assert "10.96.0.5/32" not in prefixes(plan(snap, "n1"))
    assert "10.96.0.5/32" in prefixes(plan(snap, "n2"))
    p3 = plan(snap, "n3")
    assert "10.96.0.5/32" not in prefixes(p3)
    (why,) = [s for s in p3.not_advertised if s.peer == "tor/ebgp" and "10.96.0.5" in s.subject]
    assert why.reason == (
        "externalTrafficPolicy=Local and node n3 has no ready or serving-terminating local endpoint"
    )


def test_local_policy_falls_back_to_serving_terminating() -> None:
    snap = snapshot(
        BGP,
        *nodes(),
        lb_service("web", etp="Local", ingress=["10.96.0.5"]),
        slice_("web", [("10.244.0.5", "n1", TERMINATING)]),
    )
    p = plan(snap, "n1")
    assert "10.96.0.5/32" in prefixes(p)
    reasons = next(iter(p.peers[0].reasons.values()))
    assert "serving-terminating local endpoint" in reasons[0]


def test_cluster_policy_zero_endpoints_withdrawn_everywhere() -> None:
    snap = snapshot(
        BGP,
        *nodes(),
        lb_service("web", ingress=["10.96.0.5"]),
        slice_("web", [("10.244.1.5", "n2", NOT_READY)]),
    )
    for n in ("n1", "n2"):
        p = plan(snap, n)
        assert prefixes(p) == set()
        assert any(
            "has no ready or serving-terminating endpoint anywhere" in s.reason
            for s in p.not_advertised
        )


def test_cluster_ip_follows_internal_policy_and_external_ip_external_policy() -> None:
    snap = snapshot(
        BGP,
        *nodes(),
        lb_service(
            "api",
            svc_type="ClusterIP",
            cluster_ip="10.96.1.1",
            itp="Local",
            etp="Cluster",
            external_ips=["192.0.2.7"],
        ),
        slice_("api", [("10.244.1.5", "n2", READY)]),
    )
    assert prefixes(plan(snap, "n1")) == {"192.0.2.7/32"}
    assert prefixes(plan(snap, "n2")) == {"192.0.2.7/32", "10.96.1.1/32"}


def test_aggregation_for_cluster_policy_not_for_local() -> None:
    text = BGP.replace(
        "    service: {addresses: [LoadBalancerIP, ExternalIP, ClusterIP]}",
        "    service: {addresses: [LoadBalancerIP], aggregationLengthIPv4: 24}",
    )
    snap = snapshot(
        text,
        *nodes(),
        lb_service("a", ingress=["10.96.0.5"]),
        lb_service("b", ingress=["10.96.0.9"]),
        lb_service("c", etp="Local", ingress=["10.96.0.7"]),
        slice_("a", [("10.244.1.5", "n1", READY)]),
        slice_("b", [("10.244.1.6", "n1", READY)]),
        slice_("c", [("10.244.1.7", "n1", READY)]),
    )
    p = plan(snap)
    assert prefixes(p) == {"10.96.0.0/24", "10.96.0.7/32"}
    (eb,) = [x for x in p.peers if x.peer == "ebgp"]
    assert len(eb.reasons[N("10.96.0.0/24")]) == 2


def test_selector_pseudo_labels_and_nil_selector() -> None:
    text = BGP.replace(
        "    selector: {matchExpressions: [{key: skip, operator: DoesNotExist}]}",
        "    selector: {matchLabels: {io.kubernetes.service.namespace: prod}}",
    )
    snap = snapshot(
        text,
        *nodes(),
        lb_service("web", ns="prod", ingress=["10.96.0.5"]),
        lb_service("web", ns="dev", ingress=["10.96.0.6"]),
        slice_("web", [("10.244.1.5", "n2", READY)], ns="prod"),
        slice_("web", [("10.244.1.6", "n2", READY)], ns="dev"),
    )
    p = plan(snap)
    assert prefixes(p) == {"10.96.0.5/32"}
    (why,) = [s for s in p.not_advertised if "dev/web" in s.subject]
    assert "no BGPAdvertisement" in why.reason
    # an advertisement with no selector selects no services
    text2 = BGP.replace(
        "    selector: {matchExpressions: [{key: skip, operator: DoesNotExist}]}\n", ""
    )
    snap2 = snapshot(
        text2,
        *nodes(),
        lb_service("web", ingress=["10.96.0.5"]),
        slice_("web", [("10.244.1.5", "n2", READY)]),
    )
    assert prefixes(plan(snap2)) == set()


def test_foreign_class_and_unallocated_services() -> None:
    snap = snapshot(
        BGP,
        *nodes(),
        lb_service("other", lb_class="example.com/lb", ingress=["10.96.0.8"]),
        lb_service("pending"),
        slice_("other", [("10.244.1.5", "n2", READY)]),
        slice_("pending", [("10.244.1.6", "n2", READY)]),
    )
    p = plan(snap)
    assert "10.96.0.8/32" not in prefixes(p)
    assert any(
        s.subject == "Service demo/pending LoadBalancerIP"
        and "no LoadBalancer IP allocated" in s.reason
        for s in p.not_advertised
    )


def test_ipv6_service_goes_to_ipv6_family_only() -> None:
    snap = snapshot(
        BGP,
        *nodes(),
        lb_service("web6", ingress=["fd00:96::5"]),
        slice_("web6", [("fd00:244::5", "n2", READY)], fam="IPv6"),
    )
    assert prefixes(plan(snap)) == {"fd00:96::5/128"}


# ---------------------------------------------------------------- draining a node

EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"
GSHUT = "bgp.rackroute.io/graceful-shutdown"


def drained(labels: dict[str, str] | None = None,
            annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """nodes() with n1 carrying extra labels and annotations."""
    n1, n2 = nodes()
    n1["metadata"]["labels"] = {**n1["metadata"]["labels"], **(labels or {})}
    n1["metadata"]["annotations"] = annotations or {}
    return [n1, n2]


def drain_services() -> list[dict[str, Any]]:
    """web: LoadBalancer, Cluster, endpoint on n2; local: LoadBalancer, Local, endpoint on
    n1; api: ClusterIP 10.96.1.1 with externalIP 192.0.2.7, endpoint on n1."""
    return [
        lb_service("web", ingress=["10.96.0.5"]),
        slice_("web", [("10.244.1.5", "n2", READY)]),
        lb_service("local", etp="Local", ingress=["10.96.0.6"]),
        slice_("local", [("10.244.0.6", "n1", READY)]),
        lb_service("api", svc_type="ClusterIP", cluster_ip="10.96.1.1",
                   external_ips=["192.0.2.7"]),
        slice_("api", [("10.244.0.7", "n1", READY)]),
    ]


def test_exclude_label_withdraws_the_service_addresses_and_keeps_the_rest() -> None:
    before = snapshot(BGP, *nodes(), *drain_services())
    all_n1 = {"10.244.0.0/24", "10.96.0.5/32", "10.96.0.6/32", "10.96.1.1/32", "192.0.2.7/32"}
    assert prefixes(plan(before, pod_cidrs=("10.244.0.0/24",))) == all_n1
    for value in ("", "true"):  # any value
        snap = snapshot(BGP, *drained({EXCLUDE: value}), *drain_services())
        p = plan(snap, pod_cidrs=("10.244.0.0/24",))
        assert p.drain.exclude_lb and not p.drain.graceful_shutdown
        for peer in ("ebgp", "ibgp"):  # pod CIDR and ClusterIP stay
            assert prefixes(p, peer) == {"10.244.0.0/24", "10.96.1.1/32"}
        why = {(s.peer, s.subject): s.reason for s in p.not_advertised}
        for peer in ("tor/ebgp", "tor/ibgp"):
            for subject in ("Service demo/web LoadBalancerIP 10.96.0.5",
                            "Service demo/local LoadBalancerIP 10.96.0.6",
                            "Service demo/api ExternalIP 192.0.2.7"):
                assert why[(peer, subject)] == (
                    f"node n1 has the label {EXCLUDE} (it takes no load-balancer traffic)")
        assert not any("no BGPAdvertisement" in s.reason for s in p.not_advertised)
        # the other node is not drained: it still advertises the Cluster service
        assert prefixes(plan(snap, "n2")) == {"10.96.0.5/32", "192.0.2.7/32", "10.96.1.1/32"}
    # another label changes nothing
    other = snapshot(BGP, *drained({"node.kubernetes.io/exclude-from-x": ""}), *drain_services())
    assert prefixes(plan(other, pod_cidrs=("10.244.0.0/24",))) == all_n1


def test_graceful_shutdown_annotation_tags_every_path() -> None:
    normal = plan(snapshot(BGP, *nodes(), *drain_services()), pod_cidrs=("10.244.0.0/24",))
    snap = snapshot(BGP, *drained(annotations={GSHUT: "true"}), *drain_services())
    p = plan(snap, pod_cidrs=("10.244.0.0/24",))
    assert p.drain.graceful_shutdown and not p.drain.exclude_lb
    for pp, was in zip(p.peers, normal.peers, strict=True):
        old = {x.prefix: x for x in was.paths}
        assert {x.prefix for x in pp.paths} == set(old)  # nothing withdrawn
        for x in pp.paths:
            assert x.communities == old[x.prefix].communities | {"65535:0"}
            assert x.large_communities == old[x.prefix].large_communities
            # RFC 8326: LOCAL_PREF 0 to iBGP peers (over the advertisement's 150)
            assert x.local_pref == (0 if pp.peer == "ibgp" else None)
    # only n1 is in graceful shutdown; "false" or another value is no shutdown
    assert all("65535:0" not in x.communities for x in plan(snap, "n2").all_paths())
    for value in ("false", "yes", ""):
        off = snapshot(BGP, *drained(annotations={GSHUT: value}), *drain_services())
        assert plan(off, pod_cidrs=("10.244.0.0/24",)).all_paths() == normal.all_paths()


def test_exclude_label_and_graceful_shutdown_together() -> None:
    snap = snapshot(BGP, *drained({EXCLUDE: ""}, {GSHUT: "True"}), *drain_services())
    p = plan(snap, pod_cidrs=("10.244.0.0/24",))
    assert prefixes(p) == {"10.244.0.0/24", "10.96.1.1/32"}
    assert all("65535:0" in x.communities for x in p.all_paths())
    assert "service addresses withdrawn" in p.drain.describe()
    assert "65535:0" in p.drain.describe()


# ---------------------------------------------------------------- property

ep_state = st.sampled_from([READY, TERMINATING, NOT_READY])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Local", "Cluster"]),
            st.lists(st.tuples(st.sampled_from(["n1", "n2", "n3"]), ep_state), max_size=4),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_local_never_advertised_without_ready_or_serving_local_endpoint(
    services: list[tuple[str, list[tuple[str, dict[str, bool]]]]],
) -> None:
    objs: list[dict[str, Any]] = [*nodes(), node("n3", "10.0.0.13")]
    for i, (etp, eps) in enumerate(services):
        objs.append(lb_service(f"s{i}", etp=etp, ingress=[f"10.96.0.{i + 1}"]))
        if eps:
            objs.append(
                slice_(f"s{i}", [(f"10.244.{i}.{j + 1}", n, c) for j, (n, c) in enumerate(eps)])
            )
    snap = snapshot(BGP, *objs)
    for n in ("n1", "n2", "n3"):
        got = prefixes(plan(snap, n))
        for i, (etp, eps) in enumerate(services):
            local = [c for nn, c in eps if nn == n]
            anywhere = [c for _, c in eps]
            serving = lambda cs: any(c in (READY, TERMINATING) for c in cs)  # noqa: E731
            expect = serving(local) if etp == "Local" else serving(anywhere)
            assert (f"10.96.0.{i + 1}/32" in got) == expect, (n, etp, eps)
