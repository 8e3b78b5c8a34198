"""Resolve the BGP instances and peers of each node from the peering CRDs (pure).

BGPClusterConfig (which nodes, which instances and peers) + BGPPeerConfig (session
settings) + BGPNodeConfigOverride (router ID, ASN, port, local addresses per node) +
Secrets (MD5 passwords) → per node, fully resolved speaker settings. A router ID comes
from the override, else (with RackrouteConfig's bgpRouterIDPool) from the node's
NodeNetwork, where the operator records the one it allocated, else from the node's first
IPv4 address. Problems become conditions on the object at fault; the other instances and
peers keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from bgp.types import GlobalConfig, PeerSpec
from controller.model.crds import (
    DEFAULT_FAMILIES,
    Bfd,
    BGPClusterConfig,
    BGPNodeConfigOverride,
    BGPPeerConfig,
    FamilyConfig,
    InstanceOverride,
)
from controller.model.k8s import Node
from controller.model.meta import Condition, Meta, selects
from controller.store import Snapshot

DEFAULT_PEER_CONFIG = BGPPeerConfig(Meta("BGPPeerConfig", "<defaults>"))


@dataclass(frozen=True)
class Problem:
    """A configuration problem: the object at fault, the condition type, the message."""

    ref: str  # "Kind name"
    condition: str
    message: str


@dataclass(frozen=True)
class ResolvedPeer:
    """A peer ready for the speaker, with the families (and adverts) it carries."""

    instance: str
    name: str
    spec: PeerSpec
    families: tuple[FamilyConfig, ...]
    local_asn: int
    bfd: Bfd = Bfd()  # its BGPPeerConfig's spec.bfd (the agent's BFD responder runs it)
    config_ref: str = ""  # "BGPPeerConfig <name>" it took its settings from

    @property
    def ibgp(self) -> bool:
        return self.spec.peer_asn == self.local_asn


@dataclass(frozen=True)
class ResolvedInstance:
    name: str
    global_config: GlobalConfig
    peers: tuple[ResolvedPeer, ...]


@dataclass(frozen=True)
class NodeBGP:
    """Everything one node's speaker must be configured with."""

    node: str
    instances: tuple[ResolvedInstance, ...]
    problems: tuple[Problem, ...] = ()


def matching_configs(snap: Snapshot, node: Node) -> list[BGPClusterConfig]:
    """Cluster configs selecting the node, oldest first (the oldest wins a conflict)."""
    cfgs = [c for c in snap.cluster_configs.values() if selects(c.node_selector, node.meta.labels)]
    return sorted(cfgs, key=lambda c: (c.meta.creation_timestamp, c.meta.name))


def _router_id(
    snap: Snapshot, node: Node, ov: InstanceOverride | None, where: str
) -> IPv4Address | str:
    """The instance's router ID, or why it has none: the override's routerID; else, with
    RackrouteConfig's bgpRouterIDPool set, what the operator allocated to the node (its
    NodeNetwork's bgpRouterID); else the node's first IPv4 address."""
    if ov is not None and isinstance(ov.router_id, IPv4Address):  # the parser wants IPv4
        return ov.router_id
    cfg = snap.network_config
    if cfg is not None and cfg.bgp_router_id_pool is not None:
        nn = snap.node_networks.get(node.name)
        if nn is not None and nn.bgp_router_id is not None:
            return nn.bgp_router_id
        return (
            f"{where}: node {node.name} waits for the operator to allocate its router ID "
            f"from {cfg.meta.ref} spec.bgpRouterIDPool {cfg.bgp_router_id_pool} (or set "
            f"routerID in BGPNodeConfigOverride {node.name})"
        )
    v4 = next((a for a in node.addresses if isinstance(a, IPv4Address)), None)
    if v4 is not None:
        return v4
    return (
        f"{where}: node {node.name} has no IPv4 address; set routerID in "
        f"BGPNodeConfigOverride {node.name}, or RackrouteConfig spec.bgpRouterIDPool for "
        "the operator to allocate one"
    )


def resolve_node(snap: Snapshot, node: Node) -> NodeBGP:
    """The node's instances and peers; every skipped piece leaves a Problem."""
    problems: list[Problem] = []
    override = snap.overrides.get(node.name)
    ov_inst = {i.name: i for i in override.instances} if override else {}
    instances: list[ResolvedInstance] = []
    seen_names: dict[str, str] = {}
    ports: dict[int, str] = {}
    for cfg in matching_configs(snap, node):
        for inst in cfg.instances:
            if inst.name in seen_names:
                problems.append(
                    Problem(
                        cfg.meta.ref,
                        "ConflictingClusterConfig",
                        f"{cfg.meta.ref}: spec.bgpInstances[{inst.name}]: node {node.name} already "
                        f"runs instance {inst.name!r} from {seen_names[inst.name]}",
                    )
                )
                continue
            ov = ov_inst.get(inst.name)
            asn = (ov.local_asn if ov and ov.local_asn else None) or inst.local_asn
            where = f"{cfg.meta.ref}: spec.bgpInstances[{inst.name}]"
            if asn is None:
                problems.append(
                    Problem(
                        cfg.meta.ref,
                        "MissingLocalASN",
                        f"{where}.localASN: required (or set it in "
                        f"BGPNodeConfigOverride {node.name})",
                    )
                )
                continue
            rid = _router_id(snap, node, ov, where)
            if isinstance(rid, str):
                problems.append(Problem(cfg.meta.ref, "MissingRouterID", rid))
                continue
            port = (ov.local_port if ov and ov.local_port else None) or inst.local_port or -1
            if port > 0 and port in ports:
                problems.append(
                    Problem(
                        cfg.meta.ref,
                        "ConflictingClusterConfig",
                        f"{where}.localPort: port {port} on node {node.name} is already used by "
                        f"instance {ports[port]!r}",
                    )
                )
                continue
            seen_names[inst.name] = cfg.meta.ref
            if port > 0:
                ports[port] = inst.name
            peer_ovs = {p.name: p for p in ov.peers} if ov else {}
            peers: list[ResolvedPeer] = []
            for peer in inst.peers:
                pc = DEFAULT_PEER_CONFIG
                if peer.peer_config_ref is not None:
                    found = snap.peer_configs.get(peer.peer_config_ref)
                    if found is None:
                        problems.append(
                            Problem(
                                cfg.meta.ref,
                                "MissingPeerConfigs",
                                f"{where}.peers[{peer.name}].peerConfigRef: BGPPeerConfig "
                                f"{peer.peer_config_ref!r} not found; peer not configured",
                            )
                        )
                        continue
                    pc = found
                password: str | None = None
                if pc.auth_secret_ref is not None:
                    secret = _find_secret(snap, pc.auth_secret_ref)
                    password = secret.get("password") if secret is not None else None
                    if not password:
                        problems.append(
                            Problem(
                                pc.meta.ref,
                                "MissingAuthSecret",
                                f"{pc.meta.ref}: spec.authSecretRef: Secret {pc.auth_secret_ref!r} "
                                f"{'has no key password' if secret is not None else 'not found'}; "
                                f"peer {peer.name} of node {node.name} not configured",
                            )
                        )
                        continue
                po = peer_ovs.get(peer.name)
                ebgp = peer.peer_asn != asn
                spec = PeerSpec(
                    name=peer.name,
                    address=peer.peer_address,
                    peer_asn=peer.peer_asn,
                    peer_port=pc.peer_port,
                    local_address=po.local_address if po else None,
                    hold_time=pc.timers.hold,
                    keepalive=pc.timers.keepalive,
                    connect_retry=pc.timers.connect_retry,
                    password=password,
                    graceful_restart=pc.graceful_restart.enabled,
                    restart_time=pc.graceful_restart.restart_time,
                    ebgp_multihop=pc.ebgp_multihop if ebgp else 1,
                    families=tuple(f.family for f in (pc.families or DEFAULT_FAMILIES)),
                )
                peers.append(ResolvedPeer(inst.name, peer.name, spec, pc.families, asn,
                                          pc.bfd, pc.meta.ref))
            instances.append(
                ResolvedInstance(inst.name, GlobalConfig(asn, rid, port), tuple(peers))
            )
    if override is not None:
        problems += _override_problems(snap, node, override)
    return NodeBGP(node.name, tuple(instances), tuple(problems))


def _override_problems(snap: Snapshot, node: Node,
                       override: BGPNodeConfigOverride) -> list[Problem]:
    """What a node's BGPNodeConfigOverride names that nothing uses: an instance no
    BGPClusterConfig selecting the node has, a peer its instance has not, a peer
    localPort (not applied: the session's source port is the kernel's choice)."""
    ref = override.meta.ref
    known = {i.name: {p.name for p in i.peers}
             for cfg in matching_configs(snap, node) for i in cfg.instances}
    out: list[Problem] = []
    for inst in override.instances:
        where = f"{ref}: spec.bgpInstances[{inst.name}]"
        if inst.name not in known:
            out.append(Problem(ref, "UnknownInstance",
                               f"{where}: no BGPClusterConfig selecting node {node.name} has an "
                               "instance of that name; ignored"))
            continue
        for p in inst.peers:
            if p.name not in known[inst.name]:
                out.append(Problem(ref, "UnknownPeer",
                                   f"{where}.peers[{p.name}]: instance {inst.name} has no peer "
                                   "of that name; ignored"))
            elif p.local_port:
                out.append(Problem(ref, "Unsupported",
                                   f"{where}.peers[{p.name}].localPort: not applied (the "
                                   "session's source port is the kernel's choice); the "
                                   "instance's localPort is where it listens"))
    return out


def _find_secret(snap: Snapshot, name: str) -> Mapping[str, str] | None:
    """Secrets are looked up by name; the agent's namespace first, then any namespace."""
    for key in (f"kube-system/{name}", f"rackroute-system/{name}", f"default/{name}"):
        if key in snap.secrets:
            return snap.secrets[key].data
    for s in snap.secrets.values():
        if s.meta.name == name:
            return s.data
    return None


def cluster_conditions(snap: Snapshot) -> dict[str, list[Condition]]:
    """Conditions for BGPClusterConfig and BGPPeerConfig objects, keyed by `Kind name`:
    each object gets every one of its kind's conditions, True or False (so a fixed
    problem clears and `kubectl get` shows the healthy state), at its generation."""
    out: dict[str, list[Condition]] = {}
    found: dict[tuple[str, str], list[str]] = {}
    for node in snap.nodes.values():
        for p in resolve_node(snap, node).problems:
            if p.condition in ("ConflictingClusterConfig", "MissingAuthSecret"):
                msgs = found.setdefault((p.ref, p.condition), [])
                if p.message not in msgs:
                    msgs.append(p.message)
    for cfg in snap.cluster_configs.values():
        matched = [n for n in snap.nodes.values() if selects(cfg.node_selector, n.meta.labels)]
        gen = cfg.meta.generation
        out.setdefault(cfg.meta.ref, []).append(
            Condition(
                "NoMatchingNode",
                "False" if matched else "True",
                "NodesMatched" if matched else "NoMatchingNode",
                f"{len(matched)} node(s) selected",
                gen,
            )
        )
        missing = [
            f"spec.bgpInstances[{i.name}].peers[{p.name}].peerConfigRef: BGPPeerConfig "
            f"{p.peer_config_ref!r} not found"
            for i in cfg.instances
            for p in i.peers
            if p.peer_config_ref and p.peer_config_ref not in snap.peer_configs
        ]
        out[cfg.meta.ref].append(
            Condition(
                "MissingPeerConfigs",
                "True" if missing else "False",
                "MissingPeerConfigs" if missing else "AllPresent",
                "; ".join(missing),
                gen,
            )
        )
        out[cfg.meta.ref].append(_found(found, cfg.meta.ref, "ConflictingClusterConfig",
                                        "NoConflict", gen))
    for pc in snap.peer_configs.values():
        out.setdefault(pc.meta.ref, []).append(
            _found(found, pc.meta.ref, "MissingAuthSecret",
                   "SecretFound" if pc.auth_secret_ref else "NoAuthSecret", pc.meta.generation))
    return out


def _found(found: Mapping[tuple[str, str], list[str]], ref: str, ctype: str, ok: str,
           gen: int) -> Condition:
    """Condition ctype of ref: True with the nodes' messages when they reported it, else
    False with reason ok."""
    msgs = found.get((ref, ctype))
    if msgs:
        return Condition(ctype, "True", ctype, "; ".join(msgs)[:32768], gen)
    return Condition(ctype, "False", ok, "", gen)
