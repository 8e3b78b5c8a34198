"""The BFD sessions a node runs: one per BGP peer whose BGPPeerConfig enables BFD (pure).

Single-hop BFD only (RFC 5881): a peer reached over eBGP multihop would need RFC 5883
(another port, no TTL check), so it gets a problem message and its BGP session runs
without BFD. Peers of several instances at one address share one session; where their
timers differ the strictest wins (the shortest intervals, the smallest multiplier), so
no instance detects a failure later than it asked.
"""

from __future__ import annotations

from bgp.bfd import Settings
from bgp.types import IPAddress
from controller.desired.bgpconfig import NodeBGP


def desired_bfd(nb: NodeBGP) -> tuple[dict[IPAddress, Settings], list[str]]:
    """(peer address → the session's settings, problems)."""
    out: dict[IPAddress, Settings] = {}
    problems: list[str] = []
    for inst in nb.instances:
        for peer in inst.peers:
            if not peer.bfd.enabled:
                continue
            if peer.spec.ebgp_multihop > 1:
                problems.append(
                    f"{peer.config_ref or 'BGPPeerConfig'}: spec.bfd.enabled, but BGP peer "
                    f"{inst.name}/{peer.name} ({peer.spec.address}) is "
                    f"{peer.spec.ebgp_multihop} hops away (spec.ebgpMultihop); multihop BFD "
                    "is not supported, the session runs without BFD")
                continue
            s = Settings(peer.bfd.min_rx_ms, peer.bfd.min_tx_ms, peer.bfd.multiplier)
            old = out.get(peer.spec.address)
            if old is not None:
                s = Settings(min(old.min_rx_ms, s.min_rx_ms), min(old.min_tx_ms, s.min_tx_ms),
                             min(old.multiplier, s.multiplier))
            out[peer.spec.address] = s
    return out, problems
