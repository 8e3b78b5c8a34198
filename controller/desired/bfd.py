"""The BFD sessions a node runs: one per BGP peer whose BGPPeerConfig enables BFD (pure).

A peer reached over eBGP multihop (spec.ebgpMultihop > 1) gets a multihop session (RFC
5883): as many hops allowed as the BGP session, from the BGP session's local address
where one is set (the peer's BFD session is keyed by the addresses of its BGP session).
Peers of several instances at one address share one session; where their timers differ
the strictest wins (the shortest intervals, the smallest multiplier), so no instance
detects a failure later than it asked, and the most hops any of them allows.
"""

from __future__ import annotations

from bgp.bfd import Settings
from bgp.types import IPAddress
from controller.desired.bgpconfig import NodeBGP


def desired_bfd(nb: NodeBGP) -> dict[IPAddress, Settings]:
    """Peer address → the session's settings."""
    out: dict[IPAddress, Settings] = {}
    for inst in nb.instances:
        for peer in inst.peers:
            if not peer.bfd.enabled:
                continue
            hops = max(1, min(peer.spec.ebgp_multihop, 255))
            s = Settings(peer.bfd.min_rx_ms, peer.bfd.min_tx_ms, peer.bfd.multiplier, hops,
                         peer.spec.local_address if hops > 1 else None)
            old = out.get(peer.spec.address)
            if old is not None:
                hops = max(old.hops, s.hops)
                s = Settings(min(old.min_rx_ms, s.min_rx_ms), min(old.min_tx_ms, s.min_tx_ms),
                             min(old.multiplier, s.multiplier), hops,
                             (old.local or s.local) if hops > 1 else None)
            out[peer.spec.address] = s
    return out
