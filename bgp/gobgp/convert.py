"""Conversions between the speaker-neutral types and GoBGP's protobuf messages.

Only this package imports the generated stubs; callers get and give bgp.types objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address, ip_network
from typing import Any

from bgp.diagnose import Notifications
from bgp.gobgp.genstubs import ensure_importable
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    Afi,
    Family,
    GlobalConfig,
    IPAddress,
    Path,
    PeerSpec,
    PeerStatus,
    Route,
    SessionState,
    community_text,
    community_value,
    large_community_parts,
)

ensure_importable()

import attribute_pb2 as attr  # noqa: E402
import gobgp_pb2 as api  # noqa: E402
from google.protobuf import any_pb2  # noqa: E402

ORIGIN_IGP = 0
LOCAL_NEIGHBORS = ("", "<nil>", "0.0.0.0", "::")


def family_pb(f: Family) -> Any:
    afi = api.Family.AFI_IP if f.afi is Afi.IPV4 else api.Family.AFI_IP6
    return api.Family(afi=afi, safi=api.Family.SAFI_UNICAST)


def family_of_pb(f: Any) -> Family | None:
    if f.safi != api.Family.SAFI_UNICAST:
        return None
    if f.afi == api.Family.AFI_IP:
        return IPV4_UNICAST
    if f.afi == api.Family.AFI_IP6:
        return IPV6_UNICAST
    return None


def _pack(msg: Any) -> Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def path_pb(p: Path, *, withdraw: bool = False) -> Any:
    """A GoBGP Path for an announcement (or its withdrawal) of `p`."""
    nlri = _pack(attr.IPAddressPrefix(prefix_len=p.prefix.prefixlen,
                                      prefix=str(p.prefix.network_address)))
    v4 = p.prefix.version == 4
    nh = str(p.next_hop) if p.next_hop is not None else ("0.0.0.0" if v4 else "::")
    pattrs = [_pack(attr.OriginAttribute(origin=ORIGIN_IGP))]
    if v4:
        pattrs.append(_pack(attr.NextHopAttribute(next_hop=nh)))
    else:
        pattrs.append(_pack(attr.MpReachNLRIAttribute(
            family=family_pb(IPV6_UNICAST), next_hops=[nh], nlris=[nlri])))
    if p.communities:
        vals = sorted(community_value(c) for c in p.communities)
        pattrs.append(_pack(attr.CommunitiesAttribute(communities=vals)))
    if p.large_communities:
        lcs = [attr.LargeCommunity(global_admin=a, local_data1=b, local_data2=c)
               for a, b, c in sorted(large_community_parts(x) for x in p.large_communities)]
        pattrs.append(_pack(attr.LargeCommunitiesAttribute(communities=lcs)))
    if p.local_pref is not None:
        pattrs.append(_pack(attr.LocalPrefAttribute(local_pref=p.local_pref)))
    return api.Path(nlri=nlri, pattrs=pattrs, family=family_pb(p.family), is_withdraw=withdraw)


def route_of_pb(pb: Any) -> Route | None:
    """A Route from a GoBGP Path (None for families this project does not use)."""
    fam = family_of_pb(pb.family)
    if fam is None:
        return None
    pfx = attr.IPAddressPrefix()
    if not pb.nlri.Unpack(pfx):
        return None
    prefix = ip_network(f"{pfx.prefix}/{pfx.prefix_len}", strict=False)
    next_hop: IPAddress | None = None
    as_path: list[int] = []
    comms: set[str] = set()
    larges: set[str] = set()
    local_pref: int | None = None
    for a in pb.pattrs:
        if a.Is(attr.NextHopAttribute.DESCRIPTOR):
            m = attr.NextHopAttribute()
            a.Unpack(m)
            next_hop = _addr(m.next_hop)
        elif a.Is(attr.MpReachNLRIAttribute.DESCRIPTOR):
            m = attr.MpReachNLRIAttribute()
            a.Unpack(m)
            if m.next_hops:
                next_hop = _addr(m.next_hops[0])
        elif a.Is(attr.AsPathAttribute.DESCRIPTOR):
            m = attr.AsPathAttribute()
            a.Unpack(m)
            for seg in m.segments:
                as_path.extend(seg.numbers)
        elif a.Is(attr.CommunitiesAttribute.DESCRIPTOR):
            m = attr.CommunitiesAttribute()
            a.Unpack(m)
            comms.update(community_text(v) for v in m.communities)
        elif a.Is(attr.LargeCommunitiesAttribute.DESCRIPTOR):
            m = attr.LargeCommunitiesAttribute()
            a.Unpack(m)
            larges.update(f"{c.global_admin}:{c.local_data1}:{c.local_data2}"
                          for c in m.communities)
        elif a.Is(attr.LocalPrefAttribute.DESCRIPTOR):
            m = attr.LocalPrefAttribute()
            a.Unpack(m)
            local_pref = m.local_pref
    peer = None if pb.neighbor_ip in LOCAL_NEIGHBORS else _addr(pb.neighbor_ip)
    return Route(prefix=prefix, next_hop=next_hop, peer=peer, as_path=tuple(as_path),
                 communities=frozenset(comms), large_communities=frozenset(larges),
                 local_pref=local_pref)


def is_local(pb: Any) -> bool:
    """True for paths this speaker originated through the API."""
    return bool(pb.neighbor_ip in LOCAL_NEIGHBORS)


def path_of_route(r: Route, *, keep_next_hop: bool) -> Path:
    """The Path a Route represents (next hop dropped when it was "self")."""
    nh = r.next_hop if keep_next_hop and r.next_hop is not None and not r.next_hop.is_unspecified \
        else None
    return Path(prefix=r.prefix, next_hop=nh, communities=r.communities,
                large_communities=r.large_communities, local_pref=r.local_pref)


def _addr(text: str) -> IPAddress | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def global_pb(c: GlobalConfig) -> Any:
    port = c.listen_port if c.listen_port > 0 else -1
    return api.Global(
        asn=c.asn, router_id=str(c.router_id), listen_port=port,
        listen_addresses=[str(a) for a in c.listen_addresses],
    )


def peer_pb(p: PeerSpec, local_asn: int, *, local_restarting: bool = False) -> Any:
    """The GoBGP Peer for a spec; `local_restarting` after a gobgpd restart (GR)."""
    conf = api.PeerConf(neighbor_address=str(p.address), peer_asn=p.peer_asn,
                        description=p.name, auth_password=p.password or "")
    timers = api.Timers(config=api.TimersConfig(
        connect_retry=p.connect_retry, hold_time=p.hold_time,
        keepalive_interval=p.keepalive, idle_hold_time_after_reset=1))
    transport = api.Transport(passive_mode=p.passive, remote_port=p.peer_port,
                              local_address=str(p.local_address) if p.local_address else "")
    multihop = api.EbgpMultihop(enabled=p.ebgp_multihop > 1, multihop_ttl=p.ebgp_multihop)
    gr = api.GracefulRestart(enabled=p.graceful_restart, restart_time=p.restart_time,
                             notification_enabled=p.graceful_restart,
                             local_restarting=local_restarting and p.graceful_restart)
    afs = [api.AfiSafi(
        config=api.AfiSafiConfig(family=family_pb(f), enabled=True),
        mp_graceful_restart=api.MpGracefulRestart(
            config=api.MpGracefulRestartConfig(enabled=p.graceful_restart)),
    ) for f in p.families]
    return api.Peer(conf=conf, timers=timers, transport=transport, ebgp_multihop=multihop,
                    graceful_restart=gr, afi_safis=afs)


_STATES = {
    "UNKNOWN": SessionState.UNKNOWN, "IDLE": SessionState.IDLE,
    "CONNECT": SessionState.CONNECT, "ACTIVE": SessionState.ACTIVE,
    "OPENSENT": SessionState.OPENSENT, "OPENCONFIRM": SessionState.OPENCONFIRM,
    "ESTABLISHED": SessionState.ESTABLISHED,
}


def notifications_of_pb(pb: Any) -> Notifications:
    """The NOTIFICATION counters of a GoBGP Peer (since it was configured)."""
    msgs = pb.state.messages
    return Notifications(int(msgs.received.notification), int(msgs.sent.notification))


def status_of_pb(pb: Any) -> PeerStatus:
    """A PeerStatus from a GoBGP Peer (ListPeer with advertised counts)."""
    state = _STATES.get(api.PeerState.SessionState.Name(pb.state.session_state),
                        SessionState.UNKNOWN)
    up = state is SessionState.ESTABLISHED
    since = None
    if up and pb.timers.state.HasField("uptime") and pb.timers.state.uptime.seconds:
        since = datetime.fromtimestamp(pb.timers.state.uptime.seconds, UTC)
    received: dict[Family, int] = {}
    advertised: dict[Family, int] = {}
    for af in pb.afi_safis:
        fam = family_of_pb(af.state.family) or family_of_pb(af.config.family)
        if fam is None or not up:
            continue
        received[fam] = int(af.state.received)
        advertised[fam] = int(af.state.advertised)
    addr = ip_address(pb.conf.neighbor_address or pb.state.neighbor_address)
    hold = int(pb.timers.state.negotiated_hold_time) if up else None
    keep = int(pb.timers.state.keepalive_interval) if up else None
    return PeerStatus(address=addr, state=state, peer_asn=int(pb.state.peer_asn or
                                                               pb.conf.peer_asn),
                      established_at=since, hold_time=hold, keepalive=keep,
                      received=received, advertised=advertised)
