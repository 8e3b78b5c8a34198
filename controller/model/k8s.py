"""Core Kubernetes objects: Node, Service, EndpointSlice, Secret (only what we use)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bgp.types import IPAddress, IPNetwork
from controller.model.meta import EMPTY, Meta

LB_CLASS = "rackroute.io/bgp"
CILIUM_LB_CLASS = "io.cilium/bgp-control-plane"
SERVICE_NAME_LABEL = "io.kubernetes.service.name"
SERVICE_NAMESPACE_LABEL = "io.kubernetes.service.namespace"
# the legacy form of spec.loadBalancerSourceRanges: a comma-separated list of prefixes
LB_SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
# the well-known Node label (any value): the node takes no load-balancer traffic, so it
# advertises no LoadBalancer IP or externalIP (as MetalLB and Cilium do)
EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
# Node annotation "true": RFC 8326 graceful shutdown of the node's BGP paths
GRACEFUL_SHUTDOWN_ANNOTATION = "bgp.rackroute.io/graceful-shutdown"


@dataclass(frozen=True, slots=True)
class Node:
    """A cluster node."""

    meta: Meta
    addresses: tuple[IPAddress, ...] = ()  # InternalIP first
    pod_cidrs: tuple[IPNetwork, ...] = ()

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def excluded_from_load_balancers(self) -> bool:
        """The node carries the exclude-from-external-load-balancers label (any value)."""
        return EXCLUDE_FROM_LB_LABEL in self.meta.labels

    @property
    def graceful_shutdown(self) -> bool:
        """The node's graceful-shutdown annotation says "true" (any case, spaces ignored)."""
        value = self.meta.annotations.get(GRACEFUL_SHUTDOWN_ANNOTATION, "")
        return value.strip().lower() == "true"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One entry of spec.ports."""

    port: int
    protocol: str = "TCP"  # TCP | UDP | SCTP
    name: str = ""
    target_port: int | str | None = None
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """A Service, with the status fields LB-IPAM owns.

    `load_balancer_source_ranges` is spec.loadBalancerSourceRanges or, when that is empty,
    the legacy annotation: None when neither gives any prefix (clients from anywhere);
    otherwise the valid prefixes of both families (host bits cleared, distinct, sorted by
    family then prefix), () when none was valid (from nowhere: fail closed).
    `load_balancer_source_ranges_field` names the field they came from, for messages.
    """

    meta: Meta
    type: str = "ClusterIP"
    cluster_ips: tuple[IPAddress, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] = field(default_factory=lambda: EMPTY, hash=False, compare=False)
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    load_balancer_class: str | None = None
    load_balancer_ip: IPAddress | None = None
    ip_families: tuple[int, ...] = ()  # 4 / 6 in order of preference
    ip_family_policy: str = "SingleStack"
    session_affinity: str = "None"
    session_affinity_timeout: int = 10800
    status_ingress: tuple[IPAddress, ...] = ()
    requested_ips: tuple[IPAddress, ...] = ()  # annotation ips + spec.loadBalancerIP
    sharing_key: str | None = None
    sharing_cross_namespace: frozenset[str] = frozenset()
    load_balancer_source_ranges: tuple[IPNetwork, ...] | None = None
    load_balancer_source_ranges_field: str = ""
    # spec.healthCheckNodePort: where a node answers whether it has ready endpoints of
    # this service (a LoadBalancer with externalTrafficPolicy Local), for outside LBs
    health_check_node_port: int | None = None

    @property
    def key(self) -> str:
        return self.meta.key

    @property
    def is_managed_lb(self) -> bool:
        """A LoadBalancer service that rackroute's LB-IPAM serves."""
        return self.type == "LoadBalancer" and self.load_balancer_class in (
            None,
            LB_CLASS,
            CILIUM_LB_CLASS,
        )

    def selector_labels(self) -> dict[str, str]:
        """Labels plus the pseudo-labels that pool and advertisement selectors may use."""
        labels = dict(self.meta.labels)
        labels[SERVICE_NAME_LABEL] = self.meta.name
        labels[SERVICE_NAMESPACE_LABEL] = self.meta.namespace
        return labels


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of an EndpointSlice."""

    addresses: tuple[IPAddress, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None
    target: str = ""  # targetRef name, for display
    # hints.forZones: the zones whose nodes should use this endpoint (topology aware
    # routing); None when the endpoint carries no zone hints
    zones: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class EndpointPort:
    """One entry of EndpointSlice.ports."""

    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice, bound to its service by the kubernetes.io/service-name label."""

    meta: Meta
    service_name: str
    address_type: str = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()

    @property
    def service_key(self) -> str:
        return f"{self.meta.namespace}/{self.service_name}"


@dataclass(frozen=True, slots=True)
class Secret:
    """A Secret, reduced to the keys BGP auth reads; values never appear in repr."""

    meta: Meta
    data: Mapping[str, str] = field(
        default_factory=lambda: EMPTY, hash=False, compare=False, repr=False
    )
