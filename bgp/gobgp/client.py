"""A thin synchronous gRPC client for gobgpd; takes and returns bgp.types objects."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import grpc

from bgp.diagnose import Notifications
from bgp.gobgp import convert
from bgp.gobgp.exports import MARKER_PREFIX, Grant
from bgp.gobgp.genstubs import ensure_importable
from bgp.speaker import batches
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    Family,
    GlobalConfig,
    IPNetwork,
    Path,
    PeerSpec,
    Route,
)
from bgp.types import PeerStatus as PeerStatusT

ensure_importable()

import gobgp_pb2 as api  # noqa: E402
import gobgp_pb2_grpc as api_grpc  # noqa: E402

FAMILIES = (IPV4_UNICAST, IPV6_UNICAST)
# Carried only inside gobgpd while draining a removed peer; stripped on export.
DRAIN_MARKER = "4294967295:4294967295:4294967295"
EXPORT_POLICY = "rackroute-export"  # per-neighbor exports (bgp.gobgp.exports)


def _replace(communities: tuple[str, ...]) -> Any:
    """A community action that leaves exactly `communities` on a path (none: all removed)."""
    if communities:
        return api.CommunityAction(type=api.CommunityAction.REPLACE,
                                   communities=list(communities))
    return api.CommunityAction(type=api.CommunityAction.REMOVE, communities=[".*"])


class GobgpClient:
    """gRPC calls to one gobgpd over a unix socket."""

    def __init__(self, socket: str, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        self.stub = api_grpc.GobgpApiStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def start_bgp(self, c: GlobalConfig) -> None:
        self.stub.StartBgp(api.StartBgpRequest(**{"global": convert.global_pb(c)}),
                           timeout=self.timeout)

    def add_peer(self, p: PeerSpec, local_asn: int, *, restarting: bool = False) -> None:
        peer = convert.peer_pb(p, local_asn, local_restarting=restarting)
        self.stub.AddPeer(api.AddPeerRequest(peer=peer), timeout=self.timeout)

    def delete_peer(self, address: str) -> None:
        self.stub.DeletePeer(api.DeletePeerRequest(address=address), timeout=self.timeout)

    def drain_and_delete(self, addresses: list[str], paths: list[Path],
                         batch_size: int = 1000, settle: float = 0.3) -> None:
        """Withdraw every path from these peers, then delete them.

        With graceful restart and its notification flag, a deleted peer would keep our
        routes as stale for restart-time. gobgpd sends a withdrawal only when a path that
        was sent is replaced by one that export policy rejects, and a soft reset out does
        not withdraw. So: a temporary global export policy rejects paths carrying a marker
        large community towards the draining peers and strips the marker for everyone
        else; every path is re-announced with the marker (other peers see identical
        attributes), the draining peers get withdrawals, they are deleted, and the
        original paths and policy are restored.
        """
        name = "rackroute-drain"
        t = self.timeout
        nset = api.DefinedSet(defined_type=api.NEIGHBOR, name=name,
                              list=[f"{a}/{128 if ':' in a else 32}" for a in addresses])
        mset = api.DefinedSet(defined_type=api.LARGE_COMMUNITY, name=f"{name}-marker",
                              list=[f"^{DRAIN_MARKER}$"])
        reject = api.Statement(name=f"{name}-reject", conditions=api.Conditions(
            neighbor_set=api.MatchSet(type=api.MatchSet.ANY, name=name),
            large_community_set=api.MatchSet(type=api.MatchSet.ANY, name=f"{name}-marker")),
            actions=api.Actions(route_action=api.REJECT))
        strip = api.Statement(name=f"{name}-strip", conditions=api.Conditions(
            large_community_set=api.MatchSet(type=api.MatchSet.ANY, name=f"{name}-marker")),
            actions=api.Actions(route_action=api.ACCEPT, large_community=api.CommunityAction(
                type=api.CommunityAction.REMOVE, communities=[DRAIN_MARKER])))
        assignment = api.PolicyAssignment(name="global", direction=api.EXPORT,
                                          policies=[api.Policy(name=name)],
                                          default_action=api.ACCEPT)
        marked = [replace(p, large_communities=p.large_communities | {DRAIN_MARKER})
                  for p in paths]
        self.stub.AddDefinedSet(api.AddDefinedSetRequest(defined_set=nset), timeout=t)
        self.stub.AddDefinedSet(api.AddDefinedSetRequest(defined_set=mset), timeout=t)
        self.stub.AddPolicy(api.AddPolicyRequest(policy=api.Policy(
            name=name, statements=[reject, strip])), timeout=t)
        self.stub.AddPolicyAssignment(api.AddPolicyAssignmentRequest(assignment=assignment),
                                      timeout=t)
        try:
            if marked:
                self.send_paths(marked, (), batch_size)
                time.sleep(settle)  # withdrawals leave before the NOTIFICATION
            for a in addresses:
                self.delete_peer(a)
        finally:
            if paths:
                self.send_paths(paths, (), batch_size)
            with contextlib.suppress(grpc.RpcError):
                self.stub.DeletePolicyAssignment(api.DeletePolicyAssignmentRequest(
                    assignment=assignment), timeout=t)
                self.stub.DeletePolicy(api.DeletePolicyRequest(
                    policy=api.Policy(name=name), all=True), timeout=t)
                for d in (nset, mset):
                    self.stub.DeleteDefinedSet(api.DeleteDefinedSetRequest(
                        defined_set=api.DefinedSet(defined_type=d.defined_type, name=d.name),
                        all=True), timeout=t)

    def list_peers(self) -> list[tuple[PeerStatusT, Notifications]]:
        """Each neighbor's status, and its NOTIFICATION counters."""
        req = api.ListPeerRequest(enableAdvertised=True)
        return [(convert.status_of_pb(r.peer), convert.notifications_of_pb(r.peer))
                for r in self.stub.ListPeer(req, timeout=self.timeout)]

    def send_paths(self, announce: Iterable[Path], withdraw: Iterable[Path],
                   batch_size: int = 1000) -> None:
        """Withdrawals then announcements in one AddPathStream, `batch_size` per message."""

        def reqs() -> Iterator[Any]:
            for batch in batches(withdraw, batch_size):
                yield api.AddPathStreamRequest(
                    table_type=api.GLOBAL,
                    paths=[convert.path_pb(p, withdraw=True) for p in batch])
            for batch in batches(announce, batch_size):
                yield api.AddPathStreamRequest(
                    table_type=api.GLOBAL, paths=[convert.path_pb(p) for p in batch])

        self.stub.AddPathStream(reqs(), timeout=max(self.timeout, 60.0))

    def set_export_policy(self, grants: Iterable[Grant], final: str) -> None:
        """Make the global export policy per-neighbor (bgp.gobgp.exports): one statement per
        grant, then `final`: "reject" (an unmarked path, one sent before, passes; what no
        grant names goes nowhere) or "strip" (on the way out of it: markers taken off,
        accepted). "" with no grants: no policy at all."""
        grants = sorted(grants)
        if not grants and not final:
            self.stub.SetPolicyAssignment(api.SetPolicyAssignmentRequest(
                assignment=api.PolicyAssignment(name="global", direction=api.EXPORT,
                                                default_action=api.ACCEPT)),
                timeout=self.timeout)
            self.stub.SetPolicies(api.SetPoliciesRequest(), timeout=self.timeout)
            return
        sets: dict[str, Any] = {}
        statements = []
        for g in grants:
            n, m = f"rr-x-n-{g.peer_id}", f"rr-x-m-{g.peer_id}-{g.group_id}"
            sets.setdefault(n, api.DefinedSet(
                defined_type=api.NEIGHBOR, name=n,
                list=[f"{g.peer}/{128 if ':' in g.peer else 32}"]))
            sets[m] = api.DefinedSet(defined_type=api.LARGE_COMMUNITY, name=m,
                                     list=[f"^{g.marker}$"])
            # gobgpd drops a REPLACE with nothing to put: an empty group REMOVEs them all
            actions = api.Actions(route_action=api.ACCEPT,
                                  community=_replace(g.communities),
                                  large_community=_replace(g.large_communities))
            if g.local_pref is not None:
                actions.local_pref.CopyFrom(api.LocalPrefAction(value=g.local_pref))
            statements.append(api.Statement(
                name=f"rr-x-{g.peer_id}-{g.group_id}",
                conditions=api.Conditions(
                    neighbor_set=api.MatchSet(type=api.MatchSet.ANY, name=n),
                    large_community_set=api.MatchSet(type=api.MatchSet.ANY, name=m)),
                actions=actions))
        if final == "reject":
            # an unmarked path is one sent before the exports began: gobgpd withdraws a
            # path from a neighbor only if the path it replaces passes the policy now
            sets["rr-x-marked"] = api.DefinedSet(defined_type=api.LARGE_COMMUNITY,
                                                 name="rr-x-marked", list=[f"^{MARKER_PREFIX}"])
            statements.append(api.Statement(
                name="rr-x-unmarked",
                conditions=api.Conditions(large_community_set=api.MatchSet(
                    type=api.MatchSet.INVERT, name="rr-x-marked")),
                actions=api.Actions(route_action=api.ACCEPT)))
            statements.append(api.Statement(name="rr-x-reject",
                                            actions=api.Actions(route_action=api.REJECT)))
        else:
            statements.append(api.Statement(name="rr-x-strip", actions=api.Actions(
                route_action=api.ACCEPT, large_community=api.CommunityAction(
                    type=api.CommunityAction.REMOVE, communities=[f"^{MARKER_PREFIX}"]))))
        policy = api.Policy(name=EXPORT_POLICY, statements=statements)
        # SetPolicies replaces the sets and policies (the global assignment it leaves
        # alone); the assignment names the policy, which the first call already changed
        self.stub.SetPolicies(api.SetPoliciesRequest(
            defined_sets=list(sets.values()), policies=[policy]), timeout=self.timeout)
        self.stub.SetPolicyAssignment(api.SetPolicyAssignmentRequest(
            assignment=api.PolicyAssignment(name="global", direction=api.EXPORT,
                                            policies=[api.Policy(name=EXPORT_POLICY)],
                                            default_action=api.ACCEPT)), timeout=self.timeout)

    def delete_path(self, path: Path) -> None:
        """Delete one path from the global RIB (what `gobgp global rib del` does)."""
        self.stub.DeletePath(api.DeletePathRequest(
            table_type=api.GLOBAL, family=convert.family_pb(path.family),
            path=convert.path_pb(path)), timeout=self.timeout)

    def local_paths(self, families: Iterable[Family] = FAMILIES) -> dict[IPNetwork, Path]:
        """The paths this speaker originates, as gobgpd's global RIB holds them now."""
        out: dict[IPNetwork, Path] = {}
        for r, local in self.list_routes("GLOBAL", families=families):
            if local:
                out[r.prefix] = convert.path_of_route(r, keep_next_hop=True)
        return out

    def list_routes(self, table: str, peer: str = "",
                    families: Iterable[Family] = FAMILIES) -> list[tuple[Route, bool]]:
        """Every path of a table as (route, originated-locally)."""
        out: list[tuple[Route, bool]] = []
        for fam in families:
            req = api.ListPathRequest(table_type=api.TableType.Value(table), name=peer,
                                      family=convert.family_pb(fam))
            for res in self.stub.ListPath(req, timeout=self.timeout):
                for pb in res.destination.paths:
                    r = convert.route_of_pb(pb)
                    if r is not None:
                        out.append((r, convert.is_local(pb)))
        return out

    def watch_best(self) -> Any:
        """A stream of WatchEventResponse for best-path changes (cancel() to end)."""
        flt = api.WatchEventRequest.Table.Filter(
            type=api.WatchEventRequest.Table.Filter.BEST, init=True)
        req = api.WatchEventRequest(table=api.WatchEventRequest.Table(filters=[flt]))
        return self.stub.WatchEvent(req)
