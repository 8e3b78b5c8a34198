"""rackroute CRDs (rackroute.io/v1alpha1) as frozen dataclasses; Cilium spellings map here too."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from bgp.types import IPV4_UNICAST, IPV6_UNICAST, Family, IPAddress, IPNetwork
from controller.model.meta import LabelSelector, Meta

# ---------------------------------------------------------------- BGP


@dataclass(frozen=True, slots=True)
class BGPPeer:
    """A peer of a BGP instance in BGPClusterConfig."""

    name: str
    peer_address: IPAddress
    peer_asn: int = 0  # 0: accept what the OPEN says
    peer_config_ref: str | None = None


@dataclass(frozen=True, slots=True)
class BGPInstance:
    """One BGP instance of BGPClusterConfig."""

    name: str
    local_asn: int | None = None
    local_port: int | None = None
    peers: tuple[BGPPeer, ...] = ()


@dataclass(frozen=True, slots=True)
class BGPClusterConfig:
    """Which nodes run which BGP instances with which peers."""

    meta: Meta
    node_selector: LabelSelector | None = None
    instances: tuple[BGPInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class Timers:
    connect_retry: int = 120
    hold: int = 90
    keepalive: int = 30


@dataclass(frozen=True, slots=True)
class GracefulRestart:
    enabled: bool = False
    restart_time: int = 120


@dataclass(frozen=True, slots=True)
class Bfd:
    enabled: bool = False
    min_rx_ms: int = 300
    min_tx_ms: int = 300
    multiplier: int = 3


@dataclass(frozen=True, slots=True)
class FamilyConfig:
    """A family a peer negotiates, and the BGPAdvertisements it carries."""

    family: Family
    advertisements: LabelSelector | None = None  # nil: no advertisements


DEFAULT_FAMILIES = (FamilyConfig(IPV4_UNICAST), FamilyConfig(IPV6_UNICAST))


@dataclass(frozen=True, slots=True)
class BGPPeerConfig:
    """Session settings shared by peers that reference it."""

    meta: Meta
    peer_port: int = 179
    timers: Timers = Timers()
    auth_secret_ref: str | None = None
    graceful_restart: GracefulRestart = GracefulRestart()
    ebgp_multihop: int = 1
    bfd: Bfd = Bfd()
    families: tuple[FamilyConfig, ...] = DEFAULT_FAMILIES


ADDR_LB = "LoadBalancerIP"
ADDR_CLUSTER = "ClusterIP"
ADDR_EXTERNAL = "ExternalIP"
SERVICE_ADDRESS_TYPES = (ADDR_LB, ADDR_CLUSTER, ADDR_EXTERNAL)


@dataclass(frozen=True, slots=True)
class Attributes:
    """Path attributes attached by an advertisement."""

    communities: frozenset[str] = frozenset()  # canonical "A:B"
    large_communities: frozenset[str] = frozenset()
    local_pref: int | None = None


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One entry of BGPAdvertisement.spec.advertisements."""

    type: str  # PodCIDR | Service
    addresses: tuple[str, ...] = ()
    aggregation_v4: int = 32
    aggregation_v6: int = 128
    selector: LabelSelector | None = None
    attributes: Attributes = Attributes()


@dataclass(frozen=True, slots=True)
class BGPAdvertisement:
    """A labelled set of advertisements selected by peer-config families."""

    meta: Meta
    advertisements: tuple[Advertisement, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerOverride:
    name: str
    local_address: IPAddress | None = None
    local_port: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceOverride:
    name: str
    router_id: IPAddress | None = None
    local_asn: int | None = None
    local_port: int | None = None
    peers: tuple[PeerOverride, ...] = ()


@dataclass(frozen=True, slots=True)
class BGPNodeConfigOverride:
    """Per-node settings; the object's name is the node's name."""

    meta: Meta
    instances: tuple[InstanceOverride, ...] = ()


# ---------------------------------------------------------------- IPAM


@dataclass(frozen=True, slots=True)
class PoolBlock:
    """A CIDR block, or an inclusive start..stop range."""

    cidr: IPNetwork | None = None
    start: IPAddress | None = None
    stop: IPAddress | None = None

    def __str__(self) -> str:
        return str(self.cidr) if self.cidr is not None else f"{self.start}-{self.stop}"


@dataclass(frozen=True, slots=True)
class LoadBalancerIPPool:
    """Addresses LB-IPAM may hand to the services the pool selects."""

    meta: Meta
    blocks: tuple[PoolBlock, ...] = ()
    service_selector: LabelSelector | None = None
    allow_first_last: bool = True
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class NodeNetwork:
    """Per-node allocations written by the operator: pod CIDRs (cluster-pool IPAM) and
    the BGP router ID from RackrouteConfig's bgpRouterIDPool; name = node name."""

    meta: Meta
    pod_cidrs: tuple[IPNetwork, ...] = ()
    bgp_router_id: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class ClusterNetworkConfig:
    """Cluster-wide networking settings (kind RackrouteConfig, name `default`)."""

    meta: Meta
    ipam_mode: str = "cluster-pool"  # cluster-pool | kubernetes
    cluster_pool_v4: tuple[IPNetwork, ...] = ()
    cluster_pool_v4_mask: int = 24
    cluster_pool_v6: tuple[IPNetwork, ...] = ()
    cluster_pool_v6_mask: int = 112
    routing_mode: str = "native"  # native | tunnel | hybrid
    tunnel_protocol: str = "vxlan"  # vxlan | geneve
    tunnel_underlay: str = "auto"  # auto (IPv4 if the node has one, else IPv6) | ipv4 | ipv6
    auto_direct_node_routes: bool = False  # route to nodes on a shared segment directly
    masquerade: str = "auto"  # auto (in tunnel mode) | always | never: pods' source NAT out
    bgp_router_id_pool: IPv4Network | None = None  # the operator gives each node a router ID
