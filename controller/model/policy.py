"""What network policy is computed from: Pods, Namespaces and NetworkPolicies
(networking.k8s.io/v1), only the fields policy uses.

Kubernetes' semantics, kept as the API states them so the compiler
(controller/desired/policy.py) can follow the specification to the letter:
- `NetworkPolicy.policy_types` is what the object says, or when it says nothing,
  ("Ingress",) plus "Egress" when it has egress rules (the API server's defaulting).
- A rule's `peers` is None when `from`/`to` is absent or empty: every peer. A rule's
  `ports` is () when `ports` is absent or empty: every port.
- A `PolicyPeer` holds a pod selector, a namespace selector (both: pods matching the
  first in namespaces matching the second; the pod selector alone: in the policy's own
  namespace; the namespace selector alone: every pod there), or an ipBlock.
- A `PolicyPort.port` is a number, a name (a container port's name on the pod the
  traffic goes to), or None (every port of the protocol); `end_port` makes a number a
  range.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgp.types import IPAddress, IPNetwork
from controller.model.meta import LabelSelector, Meta

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace: its labels select it (kubernetes.io/metadata.name always among them)."""

    meta: Meta

    @property
    def name(self) -> str:
        return self.meta.name


@dataclass(frozen=True, slots=True)
class ContainerPort:
    """One port a container of the pod declares (named ports resolve against these)."""

    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod: where it runs, its addresses (status.podIPs) and declared ports."""

    meta: Meta
    node: str = ""  # spec.nodeName ("" before it is scheduled)
    ips: tuple[IPAddress, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False  # policy does not apply to host-network pods
    phase: str = ""  # status.phase; Succeeded and Failed pods hold no address

    @property
    def key(self) -> str:
        return self.meta.key


@dataclass(frozen=True, slots=True)
class IPBlock:
    """ipBlock: a prefix, less the `except` prefixes (each inside it)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyPeer:
    """One `from` / `to` entry: selectors, or an ipBlock (never both)."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PolicyPort:
    """One `ports` entry: protocol, and a port number, name or None (every port)."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One ingress or egress rule: peers (None: every peer) and ports (() : every port)."""

    peers: tuple[PolicyPeer, ...] | None = None
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """A NetworkPolicy: the pods it selects in its namespace, and their allowed traffic."""

    meta: Meta
    pod_selector: LabelSelector = LabelSelector()
    policy_types: tuple[str, ...] = ("Ingress",)
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()

    @property
    def key(self) -> str:
        return self.meta.key
