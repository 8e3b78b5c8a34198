"""Valid manifests of every kind parse into the exact model values, defaults included."""

from __future__ import annotations

import base64
from ipaddress import IPv4Network, ip_address, ip_network
from typing import Any

import pytest

from bgp.types import IPV4_UNICAST, IPV6_UNICAST
from controller.model.crds import (
    DEFAULT_FAMILIES,
    Advertisement,
    Attributes,
    Bfd,
    BGPAdvertisement,
    BGPClusterConfig,
    BGPInstance,
    BGPNodeConfigOverride,
    BGPPeer,
    BGPPeerConfig,
    ClusterNetworkConfig,
    FamilyConfig,
    GracefulRestart,
    InstanceOverride,
    LoadBalancerIPPool,
    NodeNetwork,
    PeerOverride,
    PoolBlock,
    Timers,
)
from controller.model.k8s import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    Secret,
    Service,
    ServicePort,
)
from controller.model.meta import LabelSelector, Meta, Requirement, selects
from controller.model.parse import parse_object

R = "rackroute.io/v1alpha1"


def ok(raw: dict[str, Any]) -> Any:
    result = parse_object(raw, "t.yaml#0")
    assert result.errors == []
    assert result.obj is not None
    return result.obj


def crd(kind: str, name: str, spec: Any, api: str = R, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


# ---------------------------------------------------------------- core kinds


def test_node() -> None:
    node = ok(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "n1",
                "labels": {"rack": "r1", "gpu": True, "slots": 4},
                "uid": "u-1",
                "generation": 3,
                "creationTimestamp": "2024-01-01T00:00:00Z",
            },
            "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"], "podCIDR": "1.1.1.0/24"},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "ExternalIP", "address": "203.0.113.1"},
                    {"type": "InternalIP", "address": "10.0.0.11"},
                    {"type": "InternalIP", "address": "fd00::11"},
                ]
            },
        }
    )
    assert node == Node(
        meta=Meta(
            "Node",
            "n1",
            "",
            generation=3,
            creation_timestamp="2024-01-01T00:00:00.000000Z",
            uid="u-1",
        ),
        addresses=(ip_address("10.0.0.11"), ip_address("fd00::11"), ip_address("203.0.113.1")),
        pod_cidrs=(ip_network("10.244.1.0/24"), ip_network("fd00:244:1::/64")),
    )
    assert dict(node.meta.labels) == {"rack": "r1", "gpu": "true", "slots": "4"}
    assert node.name == "n1"
    assert node.meta.ref == "Node n1"


def test_node_minimal_and_single_pod_cidr() -> None:
    assert ok({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}) == Node(
        Meta("Node", "n")
    )
    node = ok(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n"},
            "spec": {"podCIDR": "10.244.2.0/24"},
        }
    )
    assert node.pod_cidrs == (ip_network("10.244.2.0/24"),)


def test_service_defaults() -> None:
    svc = ok({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}})
    assert svc == Service(Meta("Service", "web", "default"))
    assert svc.type == "ClusterIP"
    assert svc.external_traffic_policy == svc.internal_traffic_policy == "Cluster"
    assert (svc.ip_family_policy, svc.session_affinity, svc.session_affinity_timeout) == (
        "SingleStack",
        "None",
        10800,
    )
    assert dict(svc.selector) == {}
    assert not svc.is_managed_lb


def test_service_full() -> None:
    svc = ok(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "labels": {"tier": "front"},
                "annotations": {
                    "lbipam.rackroute.io/ips": " 192.0.2.10 , 2001:db8::10,192.0.2.10",
                    "lbipam.rackroute.io/sharing-key": " k1 ",
                    "lbipam.rackroute.io/sharing-cross-namespace": "a, b,,*",
                },
            },
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10", "fd00:96::10"],
                "externalIPs": ["198.51.100.7"],
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
                "selector": {"app": "web"},
                "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Local",
                "loadBalancerClass": "rackroute.io/bgp",
                "loadBalancerIP": "192.0.2.20",
                "ipFamilies": ["IPv6", "IPv4"],
                "ipFamilyPolicy": "RequireDualStack",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"hostname": "x"}]}},
        }
    )
    assert svc == Service(
        meta=Meta("Service", "web", "shop"),
        type="LoadBalancer",
        cluster_ips=(ip_address("10.96.0.10"), ip_address("fd00:96::10")),
        external_ips=(ip_address("198.51.100.7"),),
        ports=(
            ServicePort(80, "TCP", "http", "web", 30080),
            ServicePort(53, "UDP", "dns", 5353, None),
            ServicePort(53, "TCP", "dns-tcp", None, None),
        ),
        external_traffic_policy="Local",
        internal_traffic_policy="Local",
        load_balancer_class="rackroute.io/bgp",
        load_balancer_ip=ip_address("192.0.2.20"),
        ip_families=(6, 4),
        ip_family_policy="RequireDualStack",
        session_affinity="ClientIP",
        session_affinity_timeout=600,
        status_ingress=(ip_address("192.0.2.10"),),
        requested_ips=(
            ip_address("192.0.2.10"),
            ip_address("2001:db8::10"),
            ip_address("192.0.2.20"),
        ),
        sharing_key="k1",
        sharing_cross_namespace=frozenset({"a", "b", "*"}),
    )
    assert dict(svc.selector) == {"app": "web"}
    assert dict(svc.meta.labels) == {"tier": "front"}
    assert svc.key == "shop/web"
    assert svc.is_managed_lb


def test_service_cilium_annotations_give_the_same_service() -> None:
    def make(prefix: str) -> Any:
        return ok(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "web",
                    "annotations": {
                        f"{prefix}/ips": "192.0.2.10",
                        f"{prefix}/sharing-key": "k",
                        f"{prefix}/sharing-cross-namespace": "*",
                    },
                },
                "spec": {"type": "LoadBalancer"},
            }
        )

    ours, cilium = make("lbipam.rackroute.io"), make("lbipam.cilium.io")
    assert ours == cilium
    assert cilium.requested_ips == (ip_address("192.0.2.10"),)
    assert (cilium.sharing_key, cilium.sharing_cross_namespace) == ("k", frozenset({"*"}))


SOURCE_RANGES_ANN = "service.beta.kubernetes.io/load-balancer-source-ranges"
SOURCE_RANGES_ANN_PATH = f'metadata.annotations["{SOURCE_RANGES_ANN}"]'


def lb_ranges(spec_ranges: Any = None, annotation: str | None = None) -> Service:
    spec: dict[str, Any] = {"type": "LoadBalancer"}
    if spec_ranges is not None:
        spec["loadBalancerSourceRanges"] = spec_ranges
    meta: dict[str, Any] = {"name": "web"}
    if annotation is not None:
        meta["annotations"] = {SOURCE_RANGES_ANN: annotation}
    svc: Service = ok({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
    return svc


def test_service_source_ranges_from_the_spec_normalised() -> None:
    svc = lb_ranges(
        [" 10.1.2.3/8", "2001:db8::1/64", "192.0.2.0/24", "10.0.0.0/8", "192.0.2.7/24 ",
         "10.0.0.0/16", "0.0.0.0/0"],
        annotation="bogus",  # not read: the spec field wins when it lists anything
    )
    assert svc.load_balancer_source_ranges == (
        ip_network("0.0.0.0/0"),
        ip_network("10.0.0.0/8"),
        ip_network("10.0.0.0/16"),
        ip_network("192.0.2.0/24"),
        ip_network("2001:db8::/64"),
    )
    assert svc.load_balancer_source_ranges_field == "spec.loadBalancerSourceRanges"
    again = lb_ranges(["2001:db8::/64", "192.0.2.0/24", "0.0.0.0/0", "10.0.0.0/16", "10.0.0.0/8"])
    assert again == svc  # the same prefixes in another order and spelling: an equal Service


def test_service_source_ranges_from_the_legacy_annotation() -> None:
    svc = lb_ranges(annotation=" 203.0.113.9/24 ,fd00::/8,,203.0.113.0/24, ")
    assert svc.load_balancer_source_ranges == (
        ip_network("203.0.113.0/24"),
        ip_network("fd00::/8"),
    )
    assert svc.load_balancer_source_ranges_field == SOURCE_RANGES_ANN_PATH
    # an empty spec list gives way to the annotation
    empty_spec = lb_ranges([], annotation="203.0.113.0/24")
    assert empty_spec.load_balancer_source_ranges == (ip_network("203.0.113.0/24"),)
    assert empty_spec.load_balancer_source_ranges_field == SOURCE_RANGES_ANN_PATH


@pytest.mark.parametrize(
    ("spec_ranges", "annotation"),
    [(None, None), ([], None), (None, ""), (None, " , "), ([], "  ")],
)
def test_service_without_source_ranges(spec_ranges: Any, annotation: str | None) -> None:
    svc = lb_ranges(spec_ranges, annotation)
    assert svc.load_balancer_source_ranges is None
    assert svc.load_balancer_source_ranges_field == ""


def test_service_headless_and_classes() -> None:
    headless = ok(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "h"},
            "spec": {"clusterIP": "None"},
        }
    )
    assert headless.cluster_ips == ()
    headless2 = ok(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "h"},
            "spec": {"clusterIPs": ["None"]},
        }
    )
    assert headless2.cluster_ips == ()
    single = ok(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"clusterIP": "10.96.0.1"},
        }
    )
    assert single.cluster_ips == (ip_address("10.96.0.1"),)

    def lb(cls: str | None) -> bool:
        spec: dict[str, Any] = {"type": "LoadBalancer"}
        if cls is not None:
            spec["loadBalancerClass"] = cls
        svc: Service = ok(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec}
        )
        return svc.is_managed_lb

    assert lb(None) and lb("rackroute.io/bgp") and lb("io.cilium/bgp-control-plane")
    assert not lb("metallb.io/metallb")


def test_service_pseudo_labels() -> None:
    svc: Service = ok(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"tier": "front"}},
        }
    )
    labels = svc.selector_labels()
    assert labels == {
        "tier": "front",
        "io.kubernetes.service.name": "web",
        "io.kubernetes.service.namespace": "shop",
    }
    sel = LabelSelector(match_labels=(("io.kubernetes.service.namespace", "shop"),))
    assert sel.matches(labels)
    assert not sel.matches(dict(svc.meta.labels))


def test_endpoint_slice() -> None:
    es = ok(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-abc",
                "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv6",
            "endpoints": [
                {
                    "addresses": ["fd00::5", "fd00::6"],
                    "nodeName": "n1",
                    "targetRef": {"kind": "Pod", "name": "web-0"},
                    "conditions": {"ready": False, "serving": True, "terminating": True},
                }
            ],
            "ports": [{"name": "http", "port": 8080}, {"port": 53, "protocol": "UDP"}],
        }
    )
    assert es == EndpointSlice(
        meta=Meta("EndpointSlice", "web-abc", "shop"),
        service_name="web",
        address_type="IPv6",
        endpoints=(
            Endpoint(
                (ip_address("fd00::5"), ip_address("fd00::6")), False, True, True, "n1", "web-0"
            ),
        ),
        ports=(EndpointPort(8080, "TCP", "http"), EndpointPort(53, "UDP", "")),
    )
    assert es.service_key == "shop/web"


def test_endpoint_slice_defaults() -> None:
    es = ok(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "e", "labels": {"kubernetes.io/service-name": "web"}},
        }
    )
    assert es == EndpointSlice(Meta("EndpointSlice", "e", "default"), "web")
    assert es.address_type == "IPv4"
    fqdn = ok(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "e", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "FQDN",
            "endpoints": [{"addresses": ["web.example.com"]}],
        }
    )
    assert fqdn.endpoints == (Endpoint(()),)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (None, (True, True, False)),
        ({}, (True, True, False)),
        ({"ready": None, "serving": None, "terminating": None}, (True, True, False)),
        ({"ready": False}, (False, False, False)),
        ({"ready": True}, (True, True, False)),
        ({"ready": False, "serving": True}, (False, True, False)),
        ({"ready": True, "serving": False}, (True, False, False)),
        ({"serving": False}, (True, False, False)),
        ({"ready": False, "serving": True, "terminating": True}, (False, True, True)),
        ({"terminating": True}, (True, True, True)),
    ],
    ids=[
        "absent",
        "empty",
        "all-null",
        "not-ready",
        "ready",
        "serving-not-ready",
        "ready-not-serving",
        "serving-false-ready-nil",
        "serving-terminating",
        "terminating-only",
    ],
)
def test_endpoint_conditions_defaults(
    conditions: dict[str, Any] | None, expected: tuple[bool, bool, bool]
) -> None:
    ep: dict[str, Any] = {"addresses": ["10.1.0.5"]}
    if conditions is not None:
        ep["conditions"] = conditions
    es = ok(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "e", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [ep],
        }
    )
    (e,) = es.endpoints
    assert (e.ready, e.serving, e.terminating) == expected
    assert e.node_name is None


def test_secret_decodes_base64_and_string_data_wins() -> None:
    secret = ok(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bgp-auth", "namespace": "kube-system"},
            "type": "Opaque",
            "data": {
                "password": base64.b64encode(b"s3cr\xc3\xa9t").decode(),
                "other": "b2xk",
                "empty": "",
            },
            "stringData": {"other": "new"},
        }
    )
    assert secret == Secret(Meta("Secret", "bgp-auth", "kube-system"))
    assert dict(secret.data) == {"password": "s3cr\u00e9t", "other": "new", "empty": ""}
    assert "s3cr" not in repr(secret)


# ---------------------------------------------------------------- BGP CRDs


CLUSTER_SPEC: dict[str, Any] = {
    "nodeSelector": {
        "matchLabels": {"bgp": "on"},
        "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]}],
    },
    "bgpInstances": [
        {
            "name": "tor",
            "localASN": 65011,
            "localPort": 179,
            "peers": [
                {
                    "name": "tor-a",
                    "peerAddress": "10.0.0.1",
                    "peerASN": 65000,
                    "peerConfigRef": {"name": "default"},
                },
                {"name": "tor-b", "peerAddress": "fd00::1"},
            ],
        },
        {"name": "spare"},
    ],
}

CLUSTER = BGPClusterConfig(
    meta=Meta("BGPClusterConfig", "c"),
    node_selector=LabelSelector(
        (("bgp", "on"),), (Requirement("rack", "In", frozenset({"r1", "r2"})),)
    ),
    instances=(
        BGPInstance(
            "tor",
            65011,
            179,
            (
                BGPPeer("tor-a", ip_address("10.0.0.1"), 65000, "default"),
                BGPPeer("tor-b", ip_address("fd00::1"), 0, None),
            ),
        ),
        BGPInstance("spare", None, None, ()),
    ),
)


@pytest.mark.parametrize(
    ("api", "kind"),
    [
        (R, "BGPClusterConfig"),
        ("cilium.io/v2", "CiliumBGPClusterConfig"),
        ("cilium.io/v2alpha1", "CiliumBGPClusterConfig"),
    ],
    ids=["ours", "cilium-v2", "cilium-v2alpha1"],
)
def test_cluster_config(api: str, kind: str) -> None:
    result = parse_object(crd(kind, "c", CLUSTER_SPEC, api=api))
    assert result.errors == []
    assert result.kind == "BGPClusterConfig"
    assert result.ref == f"{kind} c"  # the object as its own API names it
    assert result.obj == CLUSTER
    meta = getattr(result.obj, "meta", None)
    assert meta is not None and meta.ref == "BGPClusterConfig c"  # the model's
    assert meta.written_ref == f"{kind} c"
    assert meta.written_kind == ("" if kind == "BGPClusterConfig" else kind)


def test_cluster_config_without_selector_selects_every_node() -> None:
    cc = ok(crd("BGPClusterConfig", "c", {"bgpInstances": [{"name": "tor"}]}))
    assert cc.node_selector is None
    assert selects(cc.node_selector, {})


def test_peer_config_defaults() -> None:
    pc = ok(crd("BGPPeerConfig", "default", None))
    assert pc == BGPPeerConfig(Meta("BGPPeerConfig", "default"))
    assert pc.peer_port == 179
    assert pc.timers == Timers(120, 90, 30)
    assert pc.graceful_restart == GracefulRestart(False, 120)
    assert pc.bfd == Bfd(False, 300, 300, 3)
    assert (pc.auth_secret_ref, pc.ebgp_multihop) == (None, 1)
    assert (
        pc.families == DEFAULT_FAMILIES == (FamilyConfig(IPV4_UNICAST), FamilyConfig(IPV6_UNICAST))
    )


PEER_SPEC: dict[str, Any] = {
    "transport": {"peerPort": 1179},
    "timers": {"connectRetryTimeSeconds": 5, "holdTimeSeconds": 9, "keepAliveTimeSeconds": 3},
    "authSecretRef": "bgp-auth",
    "gracefulRestart": {"enabled": True, "restartTimeSeconds": 60},
    "ebgpMultihop": 4,
    "bfd": {"enabled": True, "minRxMs": 100, "minTxMs": 200, "multiplier": 5},
    "families": [
        {"afi": "ipv6", "safi": "unicast", "advertisements": {"matchLabels": {"adv": "v6"}}},
        {"afi": "ipv4"},
    ],
}

PEER = BGPPeerConfig(
    meta=Meta("BGPPeerConfig", "p"),
    peer_port=1179,
    timers=Timers(5, 9, 3),
    auth_secret_ref="bgp-auth",
    graceful_restart=GracefulRestart(True, 60),
    ebgp_multihop=4,
    bfd=Bfd(True, 100, 200, 5),
    families=(
        FamilyConfig(IPV6_UNICAST, LabelSelector((("adv", "v6"),))),
        FamilyConfig(IPV4_UNICAST, None),
    ),
)


@pytest.mark.parametrize(
    ("api", "kind"),
    [(R, "BGPPeerConfig"), ("cilium.io/v2", "CiliumBGPPeerConfig")],
    ids=["ours", "cilium"],
)
def test_peer_config(api: str, kind: str) -> None:
    assert ok(crd(kind, "p", PEER_SPEC, api=api)) == PEER


def test_peer_config_hold_zero_and_auth_ref_object() -> None:
    pc = ok(
        crd(
            "BGPPeerConfig",
            "p",
            {
                "timers": {"holdTimeSeconds": 0, "keepAliveTimeSeconds": 60},
                "authSecretRef": {"name": "auth"},
                "families": [],
            },
        )
    )
    assert pc.timers == Timers(120, 0, 60)
    assert pc.auth_secret_ref == "auth"
    assert pc.families == ()


ADV_SPEC: dict[str, Any] = {
    "advertisements": [
        {"advertisementType": "PodCIDR"},
        {
            "advertisementType": "Service",
            "service": {
                "addresses": ["LoadBalancerIP", "ExternalIP"],
                "aggregationLengthIPv4": 24,
                "aggregationLengthIPv6": 0,
            },
            "selector": {
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["internal"]}]
            },
            "attributes": {
                "communities": {
                    "standard": ["65000:100", " 0:0 ", 65536],
                    "wellKnown": ["no-export", "NO-ADVERTISE"],
                    "large": ["65000:1:2", "4294967295:0:7"],
                },
                "localPreference": 200,
            },
        },
    ]
}

ADV = BGPAdvertisement(
    meta=Meta("BGPAdvertisement", "a"),
    advertisements=(
        Advertisement("PodCIDR"),
        Advertisement(
            "Service",
            ("LoadBalancerIP", "ExternalIP"),
            24,
            0,
            LabelSelector((), (Requirement("tier", "NotIn", frozenset({"internal"})),)),
            Attributes(
                frozenset({"65000:100", "0:0", "1:0", "65535:65281", "65535:65282"}),
                frozenset({"65000:1:2", "4294967295:0:7"}),
                200,
            ),
        ),
    ),
)


@pytest.mark.parametrize(
    ("api", "kind"),
    [(R, "BGPAdvertisement"), ("cilium.io/v2", "CiliumBGPAdvertisement")],
    ids=["ours", "cilium"],
)
def test_advertisement(api: str, kind: str) -> None:
    adv = ok(crd(kind, "a", ADV_SPEC, api=api, labels={"advertise": "default"}))
    assert adv == ADV
    assert dict(adv.meta.labels) == {"advertise": "default"}


def test_advertisement_defaults() -> None:
    adv = ok(
        crd(
            "BGPAdvertisement",
            "a",
            {
                "advertisements": [
                    {"advertisementType": "Service", "service": {"addresses": ["ClusterIP"]}}
                ]
            },
        )
    )
    assert adv.advertisements == (
        Advertisement(
            "Service", ("ClusterIP",), 32, 128, None, Attributes(frozenset(), frozenset(), None)
        ),
    )


NODE_OVERRIDE_SPEC: dict[str, Any] = {
    "bgpInstances": [
        {
            "name": "tor",
            "routerID": "10.0.0.11",
            "localASN": 65011,
            "localPort": 1179,
            "peers": [
                {"name": "tor-a", "localAddress": "10.0.0.11", "localPort": 2179},
                {"name": "tor-b"},
            ],
        },
        {"name": "spare"},
    ]
}


@pytest.mark.parametrize(
    ("api", "kind"),
    [(R, "BGPNodeConfigOverride"), ("cilium.io/v2", "CiliumBGPNodeConfigOverride")],
    ids=["ours", "cilium"],
)
def test_node_config_override(api: str, kind: str) -> None:
    assert ok(crd(kind, "n1", NODE_OVERRIDE_SPEC, api=api)) == BGPNodeConfigOverride(
        Meta("BGPNodeConfigOverride", "n1"),
        (
            InstanceOverride(
                "tor",
                ip_address("10.0.0.11"),
                65011,
                1179,
                (PeerOverride("tor-a", ip_address("10.0.0.11"), 2179), PeerOverride("tor-b")),
            ),
            InstanceOverride("spare"),
        ),
    )


# ---------------------------------------------------------------- IPAM


POOL_SPEC: dict[str, Any] = {
    "blocks": [
        {"cidr": "10.96.100.0/24"},
        {"start": "192.0.2.10", "stop": "192.0.2.50"},
        {"start": "2001:db8::7"},
        {"cidr": "2001:db8:1::/64"},
    ],
    "serviceSelector": {"matchLabels": {"io.kubernetes.service.namespace": "shop"}},
    "allowFirstLastIPs": "No",
    "disabled": True,
}

POOL = LoadBalancerIPPool(
    meta=Meta("LoadBalancerIPPool", "pool"),
    blocks=(
        PoolBlock(cidr=ip_network("10.96.100.0/24")),
        PoolBlock(start=ip_address("192.0.2.10"), stop=ip_address("192.0.2.50")),
        PoolBlock(start=ip_address("2001:db8::7"), stop=ip_address("2001:db8::7")),
        PoolBlock(cidr=ip_network("2001:db8:1::/64")),
    ),
    service_selector=LabelSelector((("io.kubernetes.service.namespace", "shop"),)),
    allow_first_last=False,
    disabled=True,
)


@pytest.mark.parametrize(
    ("api", "kind", "blocks_field"),
    [
        (R, "LoadBalancerIPPool", "blocks"),
        ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool", "blocks"),
        ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool", "cidrs"),
        ("cilium.io/v2", "CiliumLoadBalancerIPPool", "blocks"),
    ],
    ids=["ours", "cilium-v2alpha1", "cilium-v2alpha1-cidrs", "cilium-v2"],
)
def test_pool(api: str, kind: str, blocks_field: str) -> None:
    spec = dict(POOL_SPEC)
    spec[blocks_field] = spec.pop("blocks")
    pool = ok(crd(kind, "pool", spec, api=api))
    assert pool == POOL
    assert [str(b) for b in pool.blocks] == [
        "10.96.100.0/24",
        "192.0.2.10-192.0.2.50",
        "2001:db8::7-2001:db8::7",
        "2001:db8:1::/64",
    ]


def test_pool_defaults() -> None:
    pool = ok(
        crd(
            "LoadBalancerIPPool",
            "p",
            {"blocks": [{"cidr": "10.0.0.0/30"}], "allowFirstLastIPs": "Yes"},
        )
    )
    assert pool == LoadBalancerIPPool(
        Meta("LoadBalancerIPPool", "p"), (PoolBlock(cidr=ip_network("10.0.0.0/30")),)
    )
    assert (pool.service_selector, pool.allow_first_last, pool.disabled) == (None, True, False)


def test_node_network() -> None:
    nn = ok(crd("NodeNetwork", "n1", {"podCIDRs": ["10.244.3.0/24", "fd00:244:3::/112"]}))
    assert nn == NodeNetwork(
        Meta("NodeNetwork", "n1"), (ip_network("10.244.3.0/24"), ip_network("fd00:244:3::/112"))
    )
    assert ok(crd("NodeNetwork", "n2", None)) == NodeNetwork(Meta("NodeNetwork", "n2"))
    nn = ok(crd("NodeNetwork", "n3", {"podCIDRs": ["10.244.3.0/24"], "bgpRouterID": "10.255.0.3"}))
    assert nn == NodeNetwork(
        Meta("NodeNetwork", "n3"), (ip_network("10.244.3.0/24"),), ip_address("10.255.0.3")
    )
    assert nn.bgp_router_id is not None and nn.bgp_router_id.version == 4


def test_rackroute_config() -> None:
    assert ok(crd("RackrouteConfig", "default", None)) == ClusterNetworkConfig(
        Meta("RackrouteConfig", "default"), "cluster-pool", (), 24, (), 112, "native", "vxlan"
    )
    cfg = ok(
        crd(
            "RackrouteConfig",
            "default",
            {
                "ipam": {
                    "mode": "kubernetes",
                    "clusterPoolIPv4PodCIDRList": ["10.244.0.0/16", "10.245.0.0/26"],
                    "clusterPoolIPv4MaskSize": 26,
                    "clusterPoolIPv6PodCIDRList": ["fd00:244::/104"],
                    "clusterPoolIPv6MaskSize": 120,
                },
                "routingMode": "hybrid",
                "tunnelProtocol": "geneve",
                "bgpRouterIDPool": " 10.255.0.0/24 ",
            },
        )
    )
    assert cfg == ClusterNetworkConfig(
        meta=Meta("RackrouteConfig", "default"),
        ipam_mode="kubernetes",
        cluster_pool_v4=(ip_network("10.244.0.0/16"), ip_network("10.245.0.0/26")),
        cluster_pool_v4_mask=26,
        cluster_pool_v6=(ip_network("fd00:244::/104"),),
        cluster_pool_v6_mask=120,
        routing_mode="hybrid",
        tunnel_protocol="geneve",
        bgp_router_id_pool=IPv4Network("10.255.0.0/24"),
    )
    for pool in ("10.255.0.0/31", "0.0.0.0/0"):
        small = ok(crd("RackrouteConfig", "default", {"bgpRouterIDPool": pool}))
        assert small.bgp_router_id_pool == IPv4Network(pool)


# ---------------------------------------------------------------- selectors


def _selector(sel: dict[str, Any]) -> LabelSelector | None:
    pool = ok(
        crd(
            "LoadBalancerIPPool", "p", {"blocks": [{"cidr": "10.0.0.0/24"}], "serviceSelector": sel}
        )
    )
    result: LabelSelector | None = pool.service_selector
    return result


LABELS = {"app": "web", "tier": "front", "env": ""}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {}}, LABELS, True),
        ({"matchLabels": {"app": "web"}}, LABELS, True),
        ({"matchLabels": {"app": "db"}}, LABELS, False),
        ({"matchLabels": {"app": "web", "tier": "back"}}, LABELS, False),
        ({"matchLabels": {"env": ""}}, LABELS, True),
        ({"matchLabels": {"env": ""}}, {}, False),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]},
            LABELS,
            True,
        ),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}, LABELS, False),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}, LABELS, False),
        (
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]},
            LABELS,
            True,
        ),
        (
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
            LABELS,
            False,
        ),
        (
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
            LABELS,
            True,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, LABELS, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, LABELS, False),
        (
            {
                "matchLabels": {"tier": "front"},
                "matchExpressions": [
                    {"key": "app", "operator": "In", "values": ["web"]},
                    {"key": "zone", "operator": "DoesNotExist"},
                ],
            },
            LABELS,
            True,
        ),
        (
            {
                "matchLabels": {"tier": "front"},
                "matchExpressions": [
                    {"key": "app", "operator": "Exists"},
                    {"key": "env", "operator": "DoesNotExist"},
                ],
            },
            LABELS,
            False,
        ),
    ],
    ids=[
        "empty-selects-all",
        "empty-matchlabels",
        "matchlabels-hit",
        "matchlabels-miss",
        "matchlabels-all-must-hold",
        "matchlabels-empty-value",
        "matchlabels-empty-value-absent-key",
        "in-hit",
        "in-miss",
        "in-absent-key",
        "notin-hit",
        "notin-miss",
        "notin-absent-key",
        "exists-empty-value",
        "exists-absent",
        "doesnotexist-absent",
        "doesnotexist-present",
        "labels-and-expressions",
        "expressions-anded",
    ],
)
def test_selector_matches_as_kubernetes(
    selector: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    sel = _selector(selector)
    assert sel is not None
    assert sel.matches(labels) is expected


def test_nil_selector_selects_everything() -> None:
    pool = ok(crd("LoadBalancerIPPool", "p", {"blocks": [{"cidr": "10.0.0.0/24"}]}))
    assert pool.service_selector is None
    assert selects(None, {}) and selects(None, LABELS)


def test_pool_selects_service_by_pseudo_labels() -> None:
    svc: Service = ok(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "LoadBalancer"},
        }
    )
    sel = _selector(
        {
            "matchExpressions": [
                {"key": "io.kubernetes.service.name", "operator": "In", "values": ["web", "api"]},
                {"key": "io.kubernetes.service.namespace", "operator": "NotIn", "values": ["dev"]},
            ]
        }
    )
    assert selects(sel, svc.selector_labels())
    other = _selector({"matchLabels": {"io.kubernetes.service.namespace": "dev"}})
    assert not selects(other, svc.selector_labels())


def test_creation_timestamps_are_normalized_to_utc() -> None:
    def ts(raw: object) -> str:
        r = parse_object(
            {
                "apiVersion": "rackroute.io/v1alpha1",
                "kind": "LoadBalancerIPPool",
                "metadata": {"name": "p", "creationTimestamp": raw},
                "spec": {"blocks": [{"cidr": "10.0.0.0/24"}]},
            }
        )
        assert r.obj is not None, r.errors
        return r.obj.meta.creation_timestamp  # type: ignore[attr-defined, no-any-return]

    a = ts("2026-01-01T01:00:00+02:00")
    b = ts("2026-01-01T00:30:00Z")
    assert a == "2025-12-31T23:00:00.000000Z"
    assert a < b
    assert ts("2026-01-01T00:30:00.5Z") > b
