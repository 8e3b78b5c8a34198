"""Pure rendering of ExaBGP's configuration file, environment and API command lines."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from bgp.types import (
    IPV4_UNICAST,
    Family,
    GlobalConfig,
    IPAddress,
    Path,
    PeerSpec,
)

PROCESS = "rackroute"
NLRI_PER_LINE = 200


def local_address(g: GlobalConfig, p: PeerSpec) -> IPAddress | None:
    """The session's local address: the spec's, else a listen address of the peer's
    address family, else (IPv4) the router id, else None (the kernel chooses)."""
    if p.local_address is not None:
        return p.local_address
    for a in g.listen_addresses:
        if a.version == p.address.version:
            return a
    if p.address.version == 4:
        return g.router_id  # "next-hop self" needs a known local address
    return None


def _quote(s: str) -> str:
    if any(c in s for c in '"\\;{}\n'):
        raise ValueError("a password may not contain quotes, backslashes, ;, braces or newlines")
    return f'"{s}"'


def render(g: GlobalConfig, peers: Sequence[PeerSpec], relay_argv: Sequence[str]) -> str:
    """The whole exabgp.conf for these peers; the relay process is the only API process."""
    lines = [f"process {PROCESS} {{", f"    run {' '.join(relay_argv)};",
             "    encoder json;", "}", ""]
    for p in peers:
        local = local_address(g, p)
        lines.append(f"neighbor {p.address} {{")
        lines.append(f"    description {_quote(p.name)};")
        lines.append(f"    router-id {g.router_id};")
        if local is not None:
            lines.append(f"    local-address {local};")
        lines.append(f"    local-as {g.asn};")
        lines.append(f"    peer-as {p.peer_asn if p.peer_asn else 'auto'};")
        lines.append(f"    hold-time {p.hold_time};")
        listening = g.listen_port > 0 and local is not None
        lines.append(f"    passive {'true' if p.passive and listening else 'false'};")
        if listening:
            lines.append(f"    listen {g.listen_port};")
        lines.append(f"    connect {p.peer_port};")
        if p.password:
            lines.append(f"    md5-password {_quote(p.password)};")
        if p.ebgp_multihop > 1:
            lines.append(f"    outgoing-ttl {p.ebgp_multihop};")
        lines.append("    manual-eor true;")
        lines.append("    family {")
        lines += [f"        {f.afi.value} {f.safi.value};" for f in p.families]
        lines.append("    }")
        if p.address.version == 6 and IPV4_UNICAST in p.families:
            # RFC 8950: IPv4 over an IPv6 session, with IPv6 next hops (ExaBGP negotiates
            # it only when the session carries IPv6 unicast too)
            lines += ["    nexthop {", "        ipv4 unicast ipv6;", "    }"]
        lines.append("    capability {")
        lines.append("        route-refresh enable;")
        if p.graceful_restart:
            lines.append(f"        graceful-restart {p.restart_time};")
        lines.append("    }")
        lines.append("    api {")
        lines.append(f"        processes [ {PROCESS} ];")
        lines.append("        neighbor-changes;")
        lines.append("        receive { parsed; update; }")
        lines.append("    }")
        lines.append("}")
        lines.append("")
    return "\n".join(lines)


def environment(g: GlobalConfig) -> dict[str, str]:
    """Environment for the exabgp process (no privilege drop, no CLI pipes, no daemon).

    Both spellings are set: ExaBGP 5 reads `exabgp.section.option` first, and the
    underscore form alone did not stop the privilege drop here.
    """
    opts = {
        "daemon.drop": "false",
        "daemon.daemonize": "false",
        "daemon.user": "root",
        "api.cli": "false",
        "api.ack": "true",
        "tcp.bind": "",
        "log.destination": "stdout",
        "log.level": os.environ.get("RACKROUTE_EXABGP_LOG_LEVEL", "INFO"),
        "tcp.port": str(g.listen_port if g.listen_port > 0 else 179),
    }
    env: dict[str, str] = {}
    for k, v in opts.items():
        env[f"exabgp.{k}"] = v
        env["exabgp_" + k.replace(".", "_")] = v
    return env


def _attrs(p: Path) -> str:
    parts = [f"next-hop {p.next_hop}" if p.next_hop is not None else "next-hop self",
             "origin igp"]
    if p.local_pref is not None:
        parts.append(f"local-preference {p.local_pref}")
    if p.communities:
        parts.append("community [ " + " ".join(sorted(p.communities)) + " ]")
    if p.large_communities:
        parts.append("large-community [ " + " ".join(sorted(p.large_communities)) + " ]")
    return " ".join(parts)


def _grouped(paths: Iterable[Path]) -> list[tuple[str, list[Path]]]:
    groups: dict[tuple[int, str], list[Path]] = defaultdict(list)
    for p in paths:
        groups[(p.prefix.version, _attrs(p))].append(p)
    return [(attrs, ps) for (_, attrs), ps in sorted(groups.items())]


def needs_ipv6_self(p: PeerSpec) -> bool:
    """Does p take IPv4 paths over an IPv6 session (RFC 8950)?"""
    return p.address.version == 6 and IPV4_UNICAST in p.families


def ipv4_self(g: GlobalConfig, p: PeerSpec, source: IPAddress | None = None
              ) -> IPAddress | None:
    """The next hop an IPv4 "self" path must carry to p, spelled out: ExaBGP resolves
    "next-hop self" of an IPv4 route on an IPv6 session to its router id, an IPv4 address
    an IPv6-only underlay need not reach, where RFC 8950 wants the session's own IPv6
    address: the configured local address, else `source` (the address the kernel sends
    to the peer from). None: "self" is right (not an IPv6 peer carrying IPv4), or neither
    is known."""
    if not needs_ipv6_self(p):
        return None
    local = local_address(g, p) or source
    return local if local is not None and local.version == 6 else None


def announce_for(g: GlobalConfig, peers: Mapping[IPAddress, PeerSpec], paths: Iterable[Path],
                 only: IPAddress | None = None,
                 sources: Mapping[IPAddress, IPAddress] | None = None) -> list[str]:
    """announce_lines for paths to every peer (or `only` that one): one set of lines for
    all, except IPv4 "self" paths, which go neighbor by neighbor when a neighbor needs
    their next hop spelled out (ipv4_self; `sources`: each peer's source address)."""
    paths = list(paths)
    scope = f"neighbor {only} " if only is not None else ""
    targets = [only] if only is not None else sorted(peers, key=lambda a: (a.version, a))
    src = sources or {}
    overrides = {a: nh for a in targets
                 if (nh := ipv4_self(g, peers[a], src.get(a))) is not None}
    if not overrides:
        return announce_lines(paths, scope)
    own4 = [p for p in paths if p.next_hop is None and p.prefix.version == 4]
    out = announce_lines([p for p in paths if p not in own4], scope)
    for a in targets:
        nh = overrides.get(a)
        out += announce_lines([replace(p, next_hop=nh) for p in own4] if nh else own4,
                              f"neighbor {a} ")
    return out


def announce_lines(paths: Iterable[Path], prefix: str = "") -> list[str]:
    """`announce attributes ... nlri P1 P2 ...`, one line per attribute set and batch."""
    out = []
    for attrs, ps in _grouped(paths):
        for i in range(0, len(ps), NLRI_PER_LINE):
            nlri = " ".join(str(p.prefix) for p in ps[i:i + NLRI_PER_LINE])
            out.append(f"{prefix}announce attributes {attrs} nlri {nlri}")
    return out


def withdraw_lines(paths: Iterable[Path], prefix: str = "") -> list[str]:
    """`withdraw attributes next-hop self nlri P1 P2 ...` in batches."""
    out = []
    for attrs, ps in _grouped(paths):
        for i in range(0, len(ps), NLRI_PER_LINE):
            nlri = " ".join(str(p.prefix) for p in ps[i:i + NLRI_PER_LINE])
            out.append(f"{prefix}withdraw attributes {attrs} nlri {nlri}")
    return out


def eor_line(peer: IPAddress, family: Family = IPV4_UNICAST) -> str:
    return f"neighbor {peer} announce eor {family.afi.value} {family.safi.value}"
