"""The readiness gate between the datapath and BGP.

A prefix is announced only once the datapath that serves it is programmed on this node,
and withdrawn before it is torn down. The datapath reconciler reports which service
addresses it has confirmed in its maps; the BGP reconciler asks the gate before it
announces a path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bgp.types import IPAddress, IPNetwork


class ReadinessGate(Protocol):
    def ready(self, prefix: IPNetwork) -> bool:
        """May `prefix` be announced now?"""
        ...


class OpenGate:
    """No datapath on this node (BGP only): every prefix is ready."""

    def ready(self, prefix: IPNetwork) -> bool:
        return True


@dataclass(frozen=True)
class ConfirmedGate:
    """Service addresses the datapath owns (`managed`) and has programmed (`confirmed`).

    A prefix is ready when it holds no managed address, or at least one confirmed one
    (an aggregate is announced as soon as any service inside it can be served).
    """

    managed: frozenset[IPAddress] = field(default_factory=frozenset)
    confirmed: frozenset[IPAddress] = field(default_factory=frozenset)

    def ready(self, prefix: IPNetwork) -> bool:
        if prefix.prefixlen == prefix.max_prefixlen:
            addr = prefix.network_address
            return addr not in self.managed or addr in self.confirmed
        inside = [a for a in self.managed if a.version == prefix.version and a in prefix]
        return not inside or any(a in self.confirmed for a in inside)
