"""BGPNodeConfig-like status of one node: instances, peers, session state, route counts.

Built from the BGP reconciler's last pass and each speaker's live peer state; written by
the agent beside the manifests (`.status/node-<name>.yaml`) and read by
`rackroute bgp peers|routes` and the metrics exporter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bgp.types import IPAddress
from controller.reconcile.bgp import BGPReconciler


def _route_dict(
    prefix: object,
    next_hop: object,
    communities: frozenset[str],
    large: frozenset[str],
    local_pref: int | None,
    as_path: tuple[int, ...] = (),
) -> dict[str, Any]:
    return {
        "prefix": str(prefix),
        "nextHop": str(next_hop) if next_hop else "self",
        "asPath": list(as_path),
        "communities": sorted(communities),
        "largeCommunities": sorted(large),
        "localPreference": local_pref,
    }


def peer_routes(rec: BGPReconciler) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per peer address: routes advertised to it and received from it (live, from speakers)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for sp in rec.speakers().values():
        for st in sp.peers():
            adv = sorted(sp.advertised(st.address), key=lambda p: str(p.prefix))
            rcv = sorted(sp.received(st.address), key=lambda r: str(r.prefix))
            out[str(st.address)] = {
                "advertised": [
                    _route_dict(
                        p.prefix, p.next_hop, p.communities, p.large_communities, p.local_pref
                    )
                    for p in adv
                ],
                "received": [
                    _route_dict(
                        r.prefix,
                        r.next_hop,
                        r.communities,
                        r.large_communities,
                        r.local_pref,
                        r.as_path,
                    )
                    for r in rcv
                ],
            }
    return out


def _bfd_doc(s: Any) -> dict[str, Any]:
    """A peer's BFD session as the status shows it ("pending" before the responder says)."""
    if s is None:
        return {"state": "pending", "diag": "none"}
    return {"state": s.state, "diag": s.diag}


def node_status(
    node: str, rec: BGPReconciler, now: datetime | None = None, routes: bool = True,
    bfd: Mapping[IPAddress, Any] | None = None,
) -> dict[str, Any]:
    """The status document (plain data) for `node`; `bfd`: the BFD sessions by peer
    address (bgp.bfd_port.PeerBfd), shown on the peers whose config enables BFD."""
    view = rec.view
    speakers = rec.speakers()
    instances: list[dict[str, Any]] = []
    for inst in view.bgp.instances if view.bgp else ():
        sp = speakers.get(inst.name)
        live = {p.address: p for p in (sp.peers() if sp else [])}
        peers: list[dict[str, Any]] = []
        for rp in inst.peers:
            st = live.get(rp.spec.address)
            planned = [
                pp
                for pp in (view.plan.peers if view.plan else ())
                if pp.instance == inst.name and pp.peer == rp.name
            ]
            peers.append(
                {
                    "name": rp.name,
                    "peerAddress": str(rp.spec.address),
                    "peerASN": rp.spec.peer_asn,
                    "state": st.state.value if st else "unknown",
                    "establishedTime": st.established_at.isoformat()
                    if st and st.established_at
                    else None,
                    "appliedTimers": {
                        "holdTimeSeconds": st.hold_time
                        if st and st.hold_time
                        else rp.spec.hold_time,
                        "keepAliveTimeSeconds": st.keepalive
                        if st and st.keepalive
                        else rp.spec.keepalive,
                        "connectRetryTimeSeconds": rp.spec.connect_retry,
                    },
                    "routeCount": {
                        str(f): {
                            "received": (st.received.get(f, 0) if st else 0),
                            "advertised": (st.advertised.get(f, 0) if st else 0),
                        }
                        for f in rp.spec.families
                    },
                    "plannedPaths": sorted(str(p.prefix) for pp in planned for p in pp.paths),
                    "lastError": st.last_error if st else None,
                    "bfd": _bfd_doc(bfd.get(rp.spec.address) if bfd else None)
                    if rp.bfd.enabled else None,
                }
            )
        instances.append(
            {
                "name": inst.name,
                "localASN": inst.global_config.asn,
                "routerID": str(inst.global_config.router_id),
                "localPort": inst.global_config.listen_port,
                "heldPaths": sorted(str(p) for p in view.held.get(inst.name, ())),
                "peers": peers,
            }
        )
    return {
        "node": node,
        "updated": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "instances": instances,
        "problems": sorted({p.message for p in (view.bgp.problems if view.bgp else ())}
                           | set(view.problems)),
        "routes": peer_routes(rec) if routes else {},
        "notAdvertised": [
            {"peer": s.peer, "subject": s.subject, "reason": s.reason}
            for s in (view.plan.not_advertised if view.plan else ())
        ],
    }


def uptime(established: str | None, now: datetime) -> str:
    """Human uptime from an ISO timestamp ("-" when not established)."""
    if not established:
        return "-"
    secs = int((now - datetime.fromisoformat(established)).total_seconds())
    h, rem = divmod(max(secs, 0), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def peer_key(a: IPAddress) -> tuple[int, int]:
    return (a.version, int(a))
