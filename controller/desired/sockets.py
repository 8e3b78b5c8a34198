"""The UDP peers connected sockets may hold: with the socket hooks translating a UDP
socket's connect(), the socket's peer is the service backend itself, and it keeps that
backend for as long as it lives. These are the backends of the programmed UDP service
entries (those the datapath gives new flows: kube-proxy's eligible endpoints); a peer
that leaves this set is one whose connected sockets must be closed, as kube-proxy
clears the UDP conntrack entries of endpoints it no longer uses."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address

from bpf.table import Proto, Service, ServiceKey

IPAddress = IPv4Address | IPv6Address
Peer = tuple[IPAddress, int]


def udp_peers(table: Mapping[ServiceKey, Service]) -> frozenset[Peer]:
    """Every (address, port) a UDP service entry of table balances new flows to."""
    return frozenset((b.ip, b.port) for k, s in table.items() if k.proto is Proto.UDP
                     for b in s.eligible())


def gone_peers(before: frozenset[Peer], after: frozenset[Peer]) -> frozenset[Peer]:
    """Peers no UDP entry uses any more (one still used by another service stays)."""
    return before - after
