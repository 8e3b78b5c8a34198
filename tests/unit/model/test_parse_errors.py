"""Malformed manifests: each is rejected as a whole with the exact list of messages."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from controller.model.fields import Reader
from controller.model.meta import Meta
from controller.model.parse import parse_object
from controller.model.parse_k8s import parse_service

R = "rackroute.io/v1alpha1"
C2 = "cilium.io/v2"


def crd(kind: str, name: str, spec: Any, api: str = R, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


def svc(spec: Any, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", **meta},
        "spec": spec,
    }


def eps(endpoints: Any, address_type: str = "IPv4", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": address_type,
        "endpoints": endpoints,
        **extra,
    }


INSTANCE = {"name": "tor", "localASN": 65011}

CASES: list[tuple[str, Any, list[str]]] = [
    # ------------------------------------------------------------ documents, kinds, names
    ("doc-list", [1, 2], ["f.yaml#3: must be an object, got list"]),
    ("doc-string", "kind: Node", ["f.yaml#3: must be an object, got string 'kind: Node'"]),
    ("doc-null", None, ["f.yaml#3: must be an object, got null"]),
    (
        "kind-missing",
        {"apiVersion": "v1", "metadata": {"name": "x"}},
        ["object x: kind: required"],
    ),
    (
        "kind-not-string",
        {"apiVersion": "v1", "kind": 7},
        ["object f.yaml#3: kind: must be a string, got integer 7"],
    ),
    (
        "kind-unknown",
        {"apiVersion": "v1", "kind": "Gadget", "metadata": {"name": "g"}},
        ["Gadget g: kind: unsupported kind 'Gadget'"],
    ),
    (
        "apiversion-missing",
        {"kind": "BGPPeerConfig", "metadata": {"name": "default"}},
        ["BGPPeerConfig default: apiVersion: required (rackroute.io/v1alpha1 for BGPPeerConfig)"],
    ),
    (
        "apiversion-wrong-ours",
        crd("BGPPeerConfig", "default", {}, api="cilium.io/v2"),
        [
            "BGPPeerConfig default: apiVersion: must be rackroute.io/v1alpha1 for BGPPeerConfig,"
            " got 'cilium.io/v2'"
        ],
    ),
    (
        "apiversion-wrong-cilium",
        crd("CiliumBGPPeerConfig", "default", {}),
        [
            "CiliumBGPPeerConfig default: apiVersion: must be cilium.io/v2 or cilium.io/v2alpha1"
            " for CiliumBGPPeerConfig, got 'rackroute.io/v1alpha1'"
        ],
    ),
    (
        "apiversion-wrong-service-namespaced-ref",
        {"apiVersion": "v2", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}},
        ["Service shop/web: apiVersion: must be v1 for Service, got 'v2'"],
    ),
    (
        "apiversion-wrong-endpointslice",
        {
            "apiVersion": "discovery.k8s.io/v1beta1",
            "kind": "EndpointSlice",
            "metadata": {"name": "e"},
        },
        [
            "EndpointSlice default/e: apiVersion: must be discovery.k8s.io/v1 for EndpointSlice,"
            " got 'discovery.k8s.io/v1beta1'"
        ],
    ),
    (
        "name-missing-other-errors-still-listed",
        {"apiVersion": R, "kind": "BGPPeerConfig", "metadata": {}, "spec": {"ebgpMultihop": 0}},
        [
            "BGPPeerConfig f.yaml#3: metadata.name: required",
            "BGPPeerConfig f.yaml#3: spec.ebgpMultihop: must be 1..255, got 0",
        ],
    ),
    (
        "name-empty",
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "  "}},
        ["Node f.yaml#3: metadata.name: must not be empty"],
    ),
    (
        "metadata-not-object",
        {"apiVersion": "v1", "kind": "Node", "metadata": ["n1"]},
        [
            "Node f.yaml#3: metadata: must be an object, got list",
            "Node f.yaml#3: metadata.name: required",
        ],
    ),
    (
        "labels-bad-values",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "n1",
                "labels": {"rack": None, "topology.kubernetes.io/zone": [1]},
            },
        },
        [
            "Node n1: metadata.labels.rack: must be a string, got null",
            'Node n1: metadata.labels["topology.kubernetes.io/zone"]: must be a string, got list',
        ],
    ),
    # ------------------------------------------------------------ Node
    (
        "node-bad-cidrs-and-address",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.244.1.1/24", "nope/24", 5]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.300"},
                    {"address": "10.0.0.2"},
                ]
            },
        },
        [
            "Node n1: spec.podCIDRs[0]: host bits set in '10.244.1.1/24', did you mean"
            " 10.244.1.0/24?",
            "Node n1: spec.podCIDRs[1]: not a CIDR: 'nope/24'",
            "Node n1: spec.podCIDRs[2]: must be a CIDR like 10.0.0.0/24, got integer 5",
            "Node n1: status.addresses[0].address: not an IP address: '10.0.0.300'",
            "Node n1: status.addresses[1].type: required",
        ],
    ),
    # ------------------------------------------------------------ Service
    (
        "service-enums",
        svc(
            {
                "type": "Loadbalancer",
                "externalTrafficPolicy": "local",
                "ipFamilyPolicy": "DualStack",
                "ipFamilies": ["ipv4"],
            }
        ),
        [
            "Service default/web: spec.type: must be one of ClusterIP, NodePort, LoadBalancer,"
            " ExternalName, got 'Loadbalancer'",
            "Service default/web: spec.ipFamilies[0]: must be IPv4 or IPv6, got 'ipv4'",
            "Service default/web: spec.externalTrafficPolicy: must be one of Cluster, Local,"
            " got 'local'",
            "Service default/web: spec.ipFamilyPolicy: must be one of SingleStack,"
            " PreferDualStack, RequireDualStack, got 'DualStack'",
        ],
    ),
    (
        "service-ports",
        svc(
            {
                "type": "LoadBalancer",
                "ports": [
                    {"name": "http", "port": 80},
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"port": 70000, "protocol": "tcp"},
                    {"port": "443", "targetPort": 0},
                    {"port": 53, "protocol": "UDP", "targetPort": True},
                ],
            }
        ),
        [
            "Service default/web: spec.ports[1].name: duplicate port name 'http'",
            "Service default/web: spec.ports[1].port: duplicate port 80/TCP",
            "Service default/web: spec.ports[2].port: must be 1..65535, got 70000",
            "Service default/web: spec.ports[2].protocol: must be one of TCP, UDP, SCTP, got 'tcp'",
            "Service default/web: spec.ports[3].port: must be an integer, got string '443'",
            "Service default/web: spec.ports[3].targetPort: must be 1..65535, got 0",
            "Service default/web: spec.ports[4].targetPort: must be a port number or a port"
            " name, got boolean true",
        ],
    ),
    (
        "service-ips",
        svc(
            {
                "type": "LoadBalancer",
                "clusterIPs": ["10.96.0.10", "fd00::x"],
                "externalIPs": "192.0.2.1",
                "loadBalancerIP": "192.0.2.256",
            },
            namespace="shop",
            annotations={"lbipam.rackroute.io/ips": "192.0.2.5, bogus"},
        ),
        [
            "Service shop/web: spec.clusterIPs[1]: not an IP address: 'fd00::x'",
            "Service shop/web: spec.loadBalancerIP: not an IP address: '192.0.2.256'",
            'Service shop/web: metadata.annotations["lbipam.rackroute.io/ips"]: not an IP'
            " address: 'bogus'",
            "Service shop/web: spec.externalIPs: must be a list, got string '192.0.2.1'",
        ],
    ),
    (
        "service-cilium-annotation-and-affinity",
        svc(
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}},
                "selector": {"app": {"name": "x"}},
            },
            annotations={"lbipam.cilium.io/ips": "10.0.0.1,10.0.0"},
        ),
        [
            "Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be"
            " 1..86400, got 0",
            'Service default/web: metadata.annotations["lbipam.cilium.io/ips"]: not an IP'
            " address: '10.0.0'",
            "Service default/web: spec.selector.app: must be a string, got object",
        ],
    ),
    (
        "service-source-ranges-spec",
        svc(
            {
                "type": "LoadBalancer",
                "loadBalancerSourceRanges": [
                    "10.0.0.0/8",
                    "bogus",
                    7,
                    "192.0.2.1",
                    "10.0.0.0/33",
                    " ",
                    None,
                    "2001:db8::/64",
                ],
            },
            # not read (the spec field lists ranges), so not reported
            annotations={"service.beta.kubernetes.io/load-balancer-source-ranges": "x"},
        ),
        [
            "Service default/web: spec.loadBalancerSourceRanges[1]: not a CIDR: 'bogus'",
            "Service default/web: spec.loadBalancerSourceRanges[2]: must be a CIDR like"
            " 10.0.0.0/24, got integer 7",
            "Service default/web: spec.loadBalancerSourceRanges[3]: not a CIDR: '192.0.2.1'",
            "Service default/web: spec.loadBalancerSourceRanges[4]: not a CIDR: '10.0.0.0/33'",
            "Service default/web: spec.loadBalancerSourceRanges[5]: not a CIDR: ' '",
            "Service default/web: spec.loadBalancerSourceRanges[6]: must be a CIDR like"
            " 10.0.0.0/24, got null",
        ],
    ),
    (
        "service-source-ranges-not-a-list",
        svc({"type": "LoadBalancer", "loadBalancerSourceRanges": "10.0.0.0/8"}),
        [
            "Service default/web: spec.loadBalancerSourceRanges: must be a list, got string"
            " '10.0.0.0/8'",
        ],
    ),
    (
        "service-source-ranges-annotation",
        svc(
            {"type": "LoadBalancer", "loadBalancerSourceRanges": []},
            namespace="shop",
            annotations={
                "service.beta.kubernetes.io/load-balancer-source-ranges":
                    "10.0.0.0/8, 300.0.0.0/8,,fd00::/129 ,198.51.100.7"
            },
        ),
        [
            'Service shop/web: metadata.annotations["service.beta.kubernetes.io/load-balancer'
            "-source-ranges\"]: not a CIDR: '300.0.0.0/8'",
            'Service shop/web: metadata.annotations["service.beta.kubernetes.io/load-balancer'
            "-source-ranges\"]: not a CIDR: 'fd00::/129'",
            'Service shop/web: metadata.annotations["service.beta.kubernetes.io/load-balancer'
            "-source-ranges\"]: not a CIDR: '198.51.100.7'",
        ],
    ),
    # ------------------------------------------------------------ EndpointSlice
    (
        "endpointslice-family-and-conditions",
        eps(
            [
                {"addresses": ["fd00::1"], "conditions": {"ready": "yes"}},
                {"addresses": [], "nodeName": 3},
                {"conditions": {"serving": 1, "terminating": None}},
            ],
            ports=[{"port": 0, "protocol": "ICMP"}],
        ),
        [
            "EndpointSlice shop/web-abc: endpoints[0].addresses[0]: must be an IPv4 address"
            " (addressType IPv4), got fd00::1",
            "EndpointSlice shop/web-abc: endpoints[0].conditions.ready: must be true or false,"
            " got string 'yes'",
            "EndpointSlice shop/web-abc: endpoints[1].addresses: must list at least one address",
            "EndpointSlice shop/web-abc: endpoints[1].nodeName: must be a string, got integer 3",
            "EndpointSlice shop/web-abc: endpoints[2].addresses: must list at least one address",
            "EndpointSlice shop/web-abc: endpoints[2].conditions.serving: must be true or false,"
            " got integer 1",
            "EndpointSlice shop/web-abc: ports[0].port: must be 1..65535, got 0",
            "EndpointSlice shop/web-abc: ports[0].protocol: must be one of TCP, UDP, SCTP,"
            " got 'ICMP'",
        ],
    ),
    (
        "endpointslice-v6-gets-v4-and-no-service-label",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-6"},
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["10.1.0.5"]}],
        },
        [
            'EndpointSlice default/web-6: metadata.labels["kubernetes.io/service-name"]: required',
            "EndpointSlice default/web-6: endpoints[0].addresses[0]: must be an IPv6 address"
            " (addressType IPv6), got 10.1.0.5",
        ],
    ),
    (
        "endpointslice-address-type",
        eps([], address_type="IPv5"),
        ["EndpointSlice shop/web-abc: addressType: must be one of IPv4, IPv6, FQDN, got 'IPv5'"],
    ),
    # ------------------------------------------------------------ Secret
    (
        "secret-bad-data",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bgp-auth"},
            "data": {"password": "not base64!", "bin": "//79", "n": 5, "tls.key": None},
            "stringData": {"x": ["y"]},
        },
        [
            "Secret default/bgp-auth: data.password: not valid base64",
            "Secret default/bgp-auth: data.bin: decodes to bytes that are not UTF-8 text",
            "Secret default/bgp-auth: data.n: must be a base64 string, got integer",
            'Secret default/bgp-auth: data["tls.key"]: must be a base64 string, got null',
            "Secret default/bgp-auth: stringData.x: must be a string, got list",
        ],
    ),
    (
        "secret-data-not-map",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "kube"},
            "data": ["cGFzcw=="],
        },
        ["Secret kube/s: data: must be a map of base64 strings, got list"],
    ),
    # ------------------------------------------------------------ BGPClusterConfig
    (
        "clusterconfig-instances-missing",
        crd("BGPClusterConfig", "c", {}),
        ["BGPClusterConfig c: spec.bgpInstances: required"],
    ),
    (
        "clusterconfig-instances-empty",
        crd("BGPClusterConfig", "c", {"bgpInstances": []}),
        ["BGPClusterConfig c: spec.bgpInstances: must have 1..16 instances, got 0"],
    ),
    (
        "clusterconfig-too-many-instances",
        crd("BGPClusterConfig", "c", {"bgpInstances": [{"name": f"i{i}"} for i in range(17)]}),
        ["BGPClusterConfig c: spec.bgpInstances: must have 1..16 instances, got 17"],
    ),
    (
        "clusterconfig-instances-not-list",
        crd("BGPClusterConfig", "c", {"bgpInstances": {"name": "tor"}}),
        ["BGPClusterConfig c: spec.bgpInstances: must be a list, got object"],
    ),
    (
        "clusterconfig-duplicates-and-ranges",
        crd(
            "BGPClusterConfig",
            "c",
            {
                "bgpInstances": [
                    {
                        "name": "tor",
                        "localASN": 0,
                        "localPort": 0,
                        "peers": [
                            {"name": "a", "peerAddress": "10.0.0.1", "peerASN": -1},
                            {"name": "a", "peerAddress": "10.0.0.2", "peerASN": 4294967296},
                            {"peerAddress": 10, "peerConfigRef": {}},
                        ],
                    },
                    {"name": "tor", "localASN": "65000"},
                    {"name": ""},
                ]
            },
        ),
        [
            "BGPClusterConfig c: spec.bgpInstances[0].peers[0].peerASN: must be"
            " 0..4294967295, got -1",
            "BGPClusterConfig c: spec.bgpInstances[0].peers[1].name: duplicate peer name 'a'",
            "BGPClusterConfig c: spec.bgpInstances[0].peers[1].peerASN: must be 0..4294967295,"
            " got 4294967296",
            "BGPClusterConfig c: spec.bgpInstances[0].peers[2].name: required",
            "BGPClusterConfig c: spec.bgpInstances[0].peers[2].peerAddress: must be an IP"
            " address string, got integer 10",
            "BGPClusterConfig c: spec.bgpInstances[0].peers[2].peerConfigRef.name: required",
            "BGPClusterConfig c: spec.bgpInstances[0].localASN: must be 1..4294967295, got 0",
            "BGPClusterConfig c: spec.bgpInstances[0].localPort: must be 1..65535, got 0",
            "BGPClusterConfig c: spec.bgpInstances[1].name: duplicate instance name 'tor'",
            "BGPClusterConfig c: spec.bgpInstances[1].localASN: must be an integer, got string"
            " '65000'",
            "BGPClusterConfig c: spec.bgpInstances[2].name: must not be empty",
        ],
    ),
    (
        "clusterconfig-selector-operators",
        crd(
            "BGPClusterConfig",
            "c",
            {
                "bgpInstances": [INSTANCE],
                "nodeSelector": {
                    "matchExpressions": [
                        {"key": "rack", "operator": "in", "values": ["r1"]},
                        {"key": "rack", "operator": "In"},
                        {"key": "rack", "operator": "Exists", "values": ["r1"]},
                        {"key": "", "operator": "DoesNotExist"},
                        {"key": "rack", "operator": "NotIn", "values": [1]},
                        {"operator": "Exists"},
                    ],
                },
            },
        ),
        [
            "BGPClusterConfig c: spec.nodeSelector.matchExpressions[0].operator: must be one of"
            " In, NotIn, Exists, DoesNotExist, got 'in'",
            "BGPClusterConfig c: spec.nodeSelector.matchExpressions[1].values: must be"
            " non-empty for operator In",
            "BGPClusterConfig c: spec.nodeSelector.matchExpressions[2].values: must be empty"
            " for operator Exists",
            "BGPClusterConfig c: spec.nodeSelector.matchExpressions[3].key: must not be empty",
            "BGPClusterConfig c: spec.nodeSelector.matchExpressions[4].values[0]: must be a"
            " string, got integer 1",
            "BGPClusterConfig c: spec.nodeSelector.matchExpressions[4].values: must be"
            " non-empty for operator NotIn",
            "BGPClusterConfig c: spec.nodeSelector.matchExpressions[5].key: required",
        ],
    ),
    (
        "clusterconfig-selector-without-matchlabels",
        crd(
            "BGPClusterConfig",
            "c",
            {"bgpInstances": [INSTANCE], "nodeSelector": {"rack": "r1", "matchLabels": "r1"}},
        ),
        [
            "BGPClusterConfig c: spec.nodeSelector.rack: unknown field, a selector has only"
            " matchLabels and matchExpressions",
            "BGPClusterConfig c: spec.nodeSelector.matchLabels: must be a map of strings,"
            " got string 'r1'",
        ],
    ),
    # ------------------------------------------------------------ BGPPeerConfig
    (
        "peerconfig-hold-time",
        crd("BGPPeerConfig", "default", {"timers": {"holdTimeSeconds": 2}}),
        ["BGPPeerConfig default: spec.timers.holdTimeSeconds: must be 0 or 3..65535, got 2"],
    ),
    (
        "peerconfig-keepalive-above-hold",
        crd(
            "BGPPeerConfig",
            "default",
            {"timers": {"holdTimeSeconds": 9, "keepAliveTimeSeconds": 10}},
        ),
        [
            "BGPPeerConfig default: spec.timers.keepAliveTimeSeconds: must not exceed"
            " holdTimeSeconds (9), got 10"
        ],
    ),
    (
        "peerconfig-keepalive-above-default-hold",
        crd("BGPPeerConfig", "default", {"timers": {"keepAliveTimeSeconds": 91}}),
        [
            "BGPPeerConfig default: spec.timers.keepAliveTimeSeconds: must not exceed"
            " holdTimeSeconds (90), got 91"
        ],
    ),
    (
        "peerconfig-bad-hold-no-cross-check",
        crd(
            "BGPPeerConfig",
            "default",
            {"timers": {"holdTimeSeconds": 1, "keepAliveTimeSeconds": 100}},
        ),
        ["BGPPeerConfig default: spec.timers.holdTimeSeconds: must be 0 or 3..65535, got 1"],
    ),
    (
        "peerconfig-ranges-and-types",
        crd(
            "BGPPeerConfig",
            "default",
            {
                "transport": {"peerPort": 0},
                "timers": {"connectRetryTimeSeconds": 0, "keepAliveTimeSeconds": 1.5},
                "authSecretRef": 5,
                "gracefulRestart": {"enabled": "true", "restartTimeSeconds": 4096},
                "ebgpMultihop": 256,
                "bfd": {"enabled": True, "minRxMs": 5, "minTxMs": 60001, "multiplier": 0},
            },
        ),
        [
            "BGPPeerConfig default: spec.timers.keepAliveTimeSeconds: must be an integer,"
            " got number 1.5",
            "BGPPeerConfig default: spec.timers.connectRetryTimeSeconds: must be 1..2147483647,"
            " got 0",
            "BGPPeerConfig default: spec.authSecretRef: must be a Secret name, got integer 5",
            "BGPPeerConfig default: spec.transport.peerPort: must be 1..65535, got 0",
            "BGPPeerConfig default: spec.gracefulRestart.enabled: must be true or false,"
            " got string 'true'",
            "BGPPeerConfig default: spec.gracefulRestart.restartTimeSeconds: must be 1..4095,"
            " got 4096",
            "BGPPeerConfig default: spec.ebgpMultihop: must be 1..255, got 256",
            "BGPPeerConfig default: spec.bfd.minRxMs: must be 10..60000, got 5",
            "BGPPeerConfig default: spec.bfd.minTxMs: must be 10..60000, got 60001",
            "BGPPeerConfig default: spec.bfd.multiplier: must be 1..255, got 0",
        ],
    ),
    (
        "peerconfig-families",
        crd(
            "BGPPeerConfig",
            "default",
            {
                "families": [
                    {"afi": "ipv4", "safi": "unicast"},
                    {"afi": "ipv4"},
                    {"afi": "l2vpn", "safi": "evpn"},
                    {"safi": "unicast", "advertisements": {"matchLabels": {"a": "b"}, "x": 1}},
                ]
            },
        ),
        [
            "BGPPeerConfig default: spec.families[1].afi: duplicate family ipv4-unicast",
            "BGPPeerConfig default: spec.families[2].afi: must be one of ipv4, ipv6, got 'l2vpn'",
            "BGPPeerConfig default: spec.families[2].safi: must be one of unicast, got 'evpn'",
            "BGPPeerConfig default: spec.families[3].afi: required",
            "BGPPeerConfig default: spec.families[3].advertisements.x: unknown field,"
            " a selector has only matchLabels and matchExpressions",
        ],
    ),
    (
        "cilium-peerconfig-errors-use-cilium-kind",
        crd("CiliumBGPPeerConfig", "p", {"timers": {"holdTimeSeconds": 70000}}, api=C2),
        ["CiliumBGPPeerConfig p: spec.timers.holdTimeSeconds: must be 0 or 3..65535, got 70000"],
    ),
    # ------------------------------------------------------------ BGPAdvertisement
    (
        "advertisement-missing-list",
        crd("BGPAdvertisement", "a", {}),
        ["BGPAdvertisement a: spec.advertisements: required"],
    ),
    (
        "advertisement-types-and-aggregation",
        crd(
            "BGPAdvertisement",
            "a",
            {
                "advertisements": [
                    {"advertisementType": "Pods"},
                    {"advertisementType": "Service"},
                    {
                        "advertisementType": "Service",
                        "service": {
                            "addresses": ["LoadBalancerIP", "NodeIP", 3],
                            "aggregationLengthIPv4": 33,
                            "aggregationLengthIPv6": -1,
                        },
                    },
                    {},
                ]
            },
        ),
        [
            "BGPAdvertisement a: spec.advertisements[0].advertisementType: must be one of"
            " PodCIDR, Service, got 'Pods'",
            "BGPAdvertisement a: spec.advertisements[1].service.addresses: required for"
            " advertisementType Service",
            "BGPAdvertisement a: spec.advertisements[2].service.addresses[2]: must be a string,"
            " got integer 3",
            "BGPAdvertisement a: spec.advertisements[2].service.addresses[1]: must be one of"
            " LoadBalancerIP, ClusterIP, ExternalIP, got 'NodeIP'",
            "BGPAdvertisement a: spec.advertisements[2].service.aggregationLengthIPv4: must be"
            " 0..32, got 33",
            "BGPAdvertisement a: spec.advertisements[2].service.aggregationLengthIPv6: must be"
            " 0..128, got -1",
            "BGPAdvertisement a: spec.advertisements[3].advertisementType: required",
        ],
    ),
    (
        "advertisement-communities",
        crd(
            "BGPAdvertisement",
            "a",
            {
                "advertisements": [
                    {
                        "advertisementType": "PodCIDR",
                        "attributes": {
                            "communities": {
                                "standard": ["65000:100", "65536:1", "no-export", "abc", True],
                                "wellKnown": ["no-exprt", 7],
                                "large": ["1:2", "1:2:4294967296", "65000:1:2"],
                            },
                            "localPreference": -5,
                        },
                    }
                ]
            },
        ),
        [
            "BGPAdvertisement a: spec.advertisements[0].attributes.communities.standard[1]:"
            " not a standard community (A:B, each 0..65535): '65536:1'",
            "BGPAdvertisement a: spec.advertisements[0].attributes.communities.standard[2]:"
            " well-known names go under wellKnown: 'no-export'",
            "BGPAdvertisement a: spec.advertisements[0].attributes.communities.standard[3]:"
            " not a standard community (A:B, each 0..65535): 'abc'",
            "BGPAdvertisement a: spec.advertisements[0].attributes.communities.standard[4]:"
            " not a standard community (A:B, each 0..65535): True",
            "BGPAdvertisement a: spec.advertisements[0].attributes.communities.wellKnown[0]:"
            " unknown well-known community 'no-exprt'",
            "BGPAdvertisement a: spec.advertisements[0].attributes.communities.wellKnown[1]:"
            " unknown well-known community 7",
            "BGPAdvertisement a: spec.advertisements[0].attributes.communities.large[0]:"
            " not a large community (A:B:C, each 0..4294967295): '1:2'",
            "BGPAdvertisement a: spec.advertisements[0].attributes.communities.large[1]:"
            " not a large community (A:B:C, each 0..4294967295): '1:2:4294967296'",
            "BGPAdvertisement a: spec.advertisements[0].attributes.localPreference: must be"
            " 0..4294967295, got -5",
        ],
    ),
    (
        "advertisement-selector-values",
        crd(
            "BGPAdvertisement",
            "a",
            {
                "advertisements": [
                    {
                        "advertisementType": "Service",
                        "service": {"addresses": ["ClusterIP"]},
                        "selector": {
                            "matchExpressions": [
                                {
                                    "key": "io.kubernetes.service.name",
                                    "operator": "In",
                                    "values": "web",
                                }
                            ]
                        },
                    }
                ]
            },
        ),
        [
            "BGPAdvertisement a: spec.advertisements[0].selector.matchExpressions[0].values:"
            " must be a list, got string 'web'",
            "BGPAdvertisement a: spec.advertisements[0].selector.matchExpressions[0].values:"
            " must be non-empty for operator In",
        ],
    ),
    # ------------------------------------------------------------ BGPNodeConfigOverride
    (
        "nodeoverride",
        crd(
            "BGPNodeConfigOverride",
            "n1",
            {
                "bgpInstances": [
                    {
                        "name": "tor",
                        "routerID": "fd00::11",
                        "localASN": 4294967296,
                        "peers": [
                            {"name": "a", "localAddress": "10.0.0.256"},
                            {"name": "a"},
                            {"localPort": 65536},
                        ],
                    },
                    {"name": "tor", "routerID": "10.0.0.11"},
                ]
            },
        ),
        [
            "BGPNodeConfigOverride n1: spec.bgpInstances[0].routerID: must be an IPv4 address,"
            " got fd00::11",
            "BGPNodeConfigOverride n1: spec.bgpInstances[0].peers[0].localAddress: not an IP"
            " address: '10.0.0.256'",
            "BGPNodeConfigOverride n1: spec.bgpInstances[0].peers[1].name: duplicate peer name 'a'",
            "BGPNodeConfigOverride n1: spec.bgpInstances[0].peers[2].name: required",
            "BGPNodeConfigOverride n1: spec.bgpInstances[0].peers[2].localPort: must be"
            " 1..65535, got 65536",
            "BGPNodeConfigOverride n1: spec.bgpInstances[0].localASN: must be 1..4294967295,"
            " got 4294967296",
            "BGPNodeConfigOverride n1: spec.bgpInstances[1].name: duplicate instance name 'tor'",
        ],
    ),
    (
        "cilium-nodeoverride-v2alpha1",
        crd(
            "CiliumBGPNodeConfigOverride",
            "n2",
            {"bgpInstances": [{"routerID": "x"}]},
            api="cilium.io/v2alpha1",
        ),
        [
            "CiliumBGPNodeConfigOverride n2: spec.bgpInstances[0].name: required",
            "CiliumBGPNodeConfigOverride n2: spec.bgpInstances[0].routerID: not an IP address: 'x'",
        ],
    ),
    # ------------------------------------------------------------ LoadBalancerIPPool
    (
        "pool-blocks",
        crd(
            "LoadBalancerIPPool",
            "p",
            {
                "blocks": [
                    {"cidr": "10.96.100.1/24"},
                    {"start": "192.0.2.50", "stop": "192.0.2.10"},
                    {"start": "192.0.2.1", "stop": "2001:db8::1"},
                    {"cidr": "10.0.0.0/24", "start": "10.0.0.1"},
                    {"stop": "192.0.2.9"},
                    {},
                    {"cidr": "10.0.0.0"},
                ]
            },
        ),
        [
            "LoadBalancerIPPool p: spec.blocks[0].cidr: host bits set in '10.96.100.1/24',"
            " did you mean 10.96.100.0/24?",
            "LoadBalancerIPPool p: spec.blocks[1].stop: must not be below start 192.0.2.50,"
            " got 192.0.2.10",
            "LoadBalancerIPPool p: spec.blocks[2].stop: must be the same address family as"
            " start 192.0.2.1, got 2001:db8::1",
            "LoadBalancerIPPool p: spec.blocks[3]: set either cidr or start/stop, not both",
            "LoadBalancerIPPool p: spec.blocks[4].start: required",
            "LoadBalancerIPPool p: spec.blocks[5]: must set cidr or start",
            "LoadBalancerIPPool p: spec.blocks[6].cidr: must be a CIDR like 10.0.0.0/24,"
            " got string '10.0.0.0'",
        ],
    ),
    (
        "pool-empty-and-flags",
        crd(
            "LoadBalancerIPPool",
            "p",
            {"blocks": [], "allowFirstLastIPs": "no", "disabled": "false"},
        ),
        [
            "LoadBalancerIPPool p: spec.blocks: must list at least one block",
            'LoadBalancerIPPool p: spec.allowFirstLastIPs: must be "Yes" or "No",'
            " got string 'no'",
            "LoadBalancerIPPool p: spec.disabled: must be true or false, got string 'false'",
        ],
    ),
    (
        "pool-unquoted-yaml-no",
        crd(
            "LoadBalancerIPPool",
            "p",
            {"blocks": [{"cidr": "10.0.0.0/30"}], "allowFirstLastIPs": False},
        ),
        [
            'LoadBalancerIPPool p: spec.allowFirstLastIPs: must be the string "Yes" or "No"'
            " (quote it in YAML), got boolean false"
        ],
    ),
    (
        "pool-blocks-not-list-and-selector",
        crd(
            "LoadBalancerIPPool",
            "p",
            {"blocks": {"cidr": "10.0.0.0/24"}, "serviceSelector": "app=web"},
        ),
        [
            "LoadBalancerIPPool p: spec.blocks: must be a list, got object",
            "LoadBalancerIPPool p: spec.serviceSelector: must be an object, got string 'app=web'",
        ],
    ),
    (
        "cilium-pool-cidrs-field",
        crd(
            "CiliumLoadBalancerIPPool",
            "p",
            {"cidrs": [{"cidr": "10.0.0.0/33"}]},
            api="cilium.io/v2alpha1",
        ),
        ["CiliumLoadBalancerIPPool p: spec.cidrs[0].cidr: not a CIDR: '10.0.0.0/33'"],
    ),
    # ------------------------------------------------------------ NodeNetwork
    (
        "nodenetwork",
        crd("NodeNetwork", "n1", {"podCIDRs": ["10.244.0.0/24", "10.244.1.5/24", None]}),
        [
            "NodeNetwork n1: spec.podCIDRs[1]: host bits set in '10.244.1.5/24', did you mean"
            " 10.244.1.0/24?",
            "NodeNetwork n1: spec.podCIDRs[2]: must be a CIDR like 10.0.0.0/24, got null",
        ],
    ),
    (
        "nodenetwork-router-id",
        crd("NodeNetwork", "n1", {"podCIDRs": ["10.244.0.0/24"], "bgpRouterID": "fd00::1"}),
        ["NodeNetwork n1: spec.bgpRouterID: must be an IPv4 address, got fd00::1"],
    ),
    (
        "nodenetwork-router-id-not-an-address",
        crd("NodeNetwork", "n1", {"bgpRouterID": "10.255.0.0/24"}),
        ["NodeNetwork n1: spec.bgpRouterID: not an IP address: '10.255.0.0/24'"],
    ),
    # ------------------------------------------------------------ RackrouteConfig
    (
        "rackrouteconfig-modes",
        crd(
            "RackrouteConfig",
            "default",
            {"ipam": {"mode": "host-scope"}, "routingMode": "overlay", "tunnelProtocol": "gre"},
        ),
        [
            "RackrouteConfig default: spec.ipam.mode: must be one of cluster-pool, kubernetes,"
            " got 'host-scope'",
            "RackrouteConfig default: spec.routingMode: must be one of native, tunnel, hybrid,"
            " got 'overlay'",
            "RackrouteConfig default: spec.tunnelProtocol: must be one of vxlan, geneve, got 'gre'",
        ],
    ),
    (
        "rackrouteconfig-pool-family-and-mask",
        crd(
            "RackrouteConfig",
            "default",
            {
                "ipam": {
                    "clusterPoolIPv4PodCIDRList": ["10.0.0.0/16", "fd00::/104"],
                    "clusterPoolIPv6PodCIDRList": ["10.1.0.0/16", "fd00::/120"],
                    "clusterPoolIPv4MaskSize": 12,
                }
            },
        ),
        [
            "RackrouteConfig default: spec.ipam.clusterPoolIPv4PodCIDRList[1]: must be an IPv4"
            " CIDR, got fd00::/104",
            "RackrouteConfig default: spec.ipam.clusterPoolIPv6PodCIDRList[0]: must be an IPv6"
            " CIDR, got 10.1.0.0/16",
            "RackrouteConfig default: spec.ipam.clusterPoolIPv4MaskSize: must be at least the"
            " prefix length of pool 10.0.0.0/16 (16), got 12",
            "RackrouteConfig default: spec.ipam.clusterPoolIPv6MaskSize: must be at least the"
            " prefix length of pool fd00::/120 (120), got 112",
        ],
    ),
    (
        "rackrouteconfig-bad-mask-no-cross-check",
        crd(
            "RackrouteConfig",
            "default",
            {
                "ipam": {
                    "clusterPoolIPv4PodCIDRList": ["10.0.0.0/26"],
                    "clusterPoolIPv4MaskSize": 33,
                }
            },
        ),
        ["RackrouteConfig default: spec.ipam.clusterPoolIPv4MaskSize: must be 1..32, got 33"],
    ),
    (
        "rackrouteconfig-router-id-pool-ipv6",
        crd(
            "RackrouteConfig", "default", {"routingMode": "tunnel", "bgpRouterIDPool": "fd00::/64"}
        ),
        ["RackrouteConfig default: spec.bgpRouterIDPool: must be an IPv4 CIDR, got fd00::/64"],
    ),
    (
        "rackrouteconfig-router-id-pool-host-bits",
        crd("RackrouteConfig", "default", {"bgpRouterIDPool": "10.255.0.1/24"}),
        [
            "RackrouteConfig default: spec.bgpRouterIDPool: host bits set in '10.255.0.1/24',"
            " did you mean 10.255.0.0/24?"
        ],
    ),
    (
        "rackrouteconfig-router-id-pool-single-address",
        crd("RackrouteConfig", "default", {"bgpRouterIDPool": "10.255.0.1/32"}),
        [
            "RackrouteConfig default: spec.bgpRouterIDPool: must be /31 or shorter (its network"
            " address is never given out), got 10.255.0.1/32"
        ],
    ),
    (
        "rackrouteconfig-router-id-pool-not-a-cidr",
        crd("RackrouteConfig", "default", {"bgpRouterIDPool": "10.255.0.1"}),
        [
            "RackrouteConfig default: spec.bgpRouterIDPool: must be a CIDR like 10.0.0.0/24,"
            " got string '10.255.0.1'"
        ],
    ),
    (
        "rackrouteconfig-router-id-pool-list",
        crd("RackrouteConfig", "default", {"bgpRouterIDPool": ["10.255.0.0/24"]}),
        [
            "RackrouteConfig default: spec.bgpRouterIDPool: must be a CIDR like 10.0.0.0/24,"
            " got list"
        ],
    ),
    (
        "spec-not-object",
        crd("RackrouteConfig", "default", ["native"]),
        ["RackrouteConfig default: spec: must be an object, got list"],
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_manifest_is_rejected_with_exact_messages(raw: Any, expected: list[str]) -> None:
    result = parse_object(raw, "f.yaml#3")
    assert result.errors == expected
    assert result.obj is None
    assert not result.ignored


def test_case_ids_are_unique_and_numerous() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 35


def test_one_bad_object_does_not_affect_others() -> None:
    good = crd(
        "BGPPeerConfig", "good", {"timers": {"holdTimeSeconds": 9, "keepAliveTimeSeconds": 3}}
    )
    bad = crd("BGPPeerConfig", "bad", {"timers": {"holdTimeSeconds": 2}})
    results = [parse_object(x) for x in (good, bad, good)]
    assert [r.obj is not None for r in results] == [True, False, True]
    assert [r.ref for r in results] == [
        "BGPPeerConfig good",
        "BGPPeerConfig bad",
        "BGPPeerConfig good",
    ]
    assert results[1].kind == "BGPPeerConfig"


def test_ignored_kinds_are_neither_parsed_nor_errors() -> None:
    r = parse_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}})
    assert (r.ignored, r.obj, r.errors, r.ref) == (True, None, [], "ConfigMap cm")


def test_ref_of_unnamed_object_without_origin() -> None:
    r = parse_object({"apiVersion": "v1", "kind": "Node"})
    assert r.errors == ["Node <unnamed>: metadata.name: required"]


def test_invalid_source_ranges_leave_the_valid_ones_and_fail_closed() -> None:
    """parse_object rejects a Service with a bad range (as for any field error); what the
    Service parser built keeps only the valid prefixes, and () when none is valid, never
    None (which would let every client in)."""
    def model(spec: Any, annotation: str | None = None) -> tuple[Any, list[str]]:
        ann = {} if annotation is None else {
            "service.beta.kubernetes.io/load-balancer-source-ranges": annotation}
        meta = Meta("Service", "web", "default", annotations=ann)
        r = Reader({"spec": spec})
        parsed = parse_service(meta, r)
        return parsed.load_balancer_source_ranges, r.errors

    ranges, errors = model({"loadBalancerSourceRanges": ["bogus", "10.1.0.0/16"]})
    assert ranges == (ip_network("10.1.0.0/16"),)
    assert errors == ["spec.loadBalancerSourceRanges[0]: not a CIDR: 'bogus'"]
    ranges, errors = model({"loadBalancerSourceRanges": ["bogus"]}, "10.0.0.0/8")
    assert ranges == ()  # the spec field (its entry invalid) still wins over the annotation
    assert errors == ["spec.loadBalancerSourceRanges[0]: not a CIDR: 'bogus'"]
    ranges, errors = model({"loadBalancerSourceRanges": "10.0.0.0/8"})
    assert ranges == ()
    assert errors == ["spec.loadBalancerSourceRanges: must be a list, got string '10.0.0.0/8'"]
    ranges, errors = model({}, "bogus, 10.0.0.0/33")
    assert ranges == ()
    path = 'metadata.annotations["service.beta.kubernetes.io/load-balancer-source-ranges"]'
    assert errors == [f"{path}: not a CIDR: 'bogus'", f"{path}: not a CIDR: '10.0.0.0/33'"]
