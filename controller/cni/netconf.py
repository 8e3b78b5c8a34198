"""The network configuration (stdin) and the CNI_* environment, parsed and validated.

A bad field is answered with the spec's code 7 (code 2 for a field rackroute-cni
does not support, code 1 for a cniVersion it does not speak) and a message naming the
field; a bad environment variable is code 4 naming the variable.

Network config fields (a conflist plugin entry):

    cniVersion  "0.3.0" | "0.3.1" | "0.4.0" | "1.0.0" | "1.1.0"  required
    name        network name [A-Za-z0-9][A-Za-z0-9_.-]*          required
    type        the executable ("rackroute-cni")                  required
    podCIDRs    the node's pod CIDRs, e.g. ["10.244.0.0/24"]      required, non-empty
    mtu         pod and host veth MTU, 68..65535 (1280+ with v6)  default 1500
    dataDir     absolute path of the address store                default /var/lib/rackroute/cni
    bpf         {"pinDir": absolute path of the pinned programs,  optional
                 "policyWait": seconds ADD waits for the agent to
                 program a new pod's network policy, 0..600,       default 10
                 "podPrograms": false: the host veth carries no    default true
                 program (no per-packet LB, kernel host routing),
                 only the network policy ones are attached}
    dns         {"nameservers","domain","search","options"}       optional, copied to the result
    prevResult  the previous ADD's result                         required for CHECK
                (refused on ADD: rackroute-cni is a conflist's first plugin; ignored on DEL)
    cni.dev/valid-attachments  [{containerID, ifname}] still valid required for GC
    args, runtimeConfig, capabilities, ipMasq (false only)        accepted, not used
                (hostPorts, runtimeConfig.portMappings, are the chained portmap plugin's)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.cni.spec import (
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_UNSUPPORTED_FIELD,
    CniError,
    Result,
    check_version,
    parse_result,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MTU = 1500
DEFAULT_DATA_DIR = Path("/var/lib/rackroute/cni")
DEFAULT_POLICY_WAIT = 10.0  # seconds (controller/cni/podrecords.py)
MAX_POLICY_WAIT = 600
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
VALID_ATTACHMENTS = ("cni.dev/valid-attachments", "cni.dev/attachments")  # GC (1.1.0)
# Fields every CNI config may carry (spec + conventions); accepted, mostly ignored.
GENERIC_FIELDS = frozenset({"cniVersion", "cniVersions", "name", "type", "args", "ipMasq",
                            "ipam", "dns", "runtimeConfig", "capabilities", "prevResult",
                            "disableCheck", "disableGC", *VALID_ATTACHMENTS})
OWN_FIELDS = frozenset({"podCIDRs", "mtu", "dataDir", "bpf"})
DNS_LISTS = ("nameservers", "search", "options")


def _bad(fld: str, why: str) -> CniError:
    return CniError(ERR_INVALID_CONFIG, f'invalid network config field "{fld}": {why}')


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    pod_cidrs: tuple[IPNetwork, ...]
    mtu: int = DEFAULT_MTU
    data_dir: Path = DEFAULT_DATA_DIR
    pin_dir: Path | None = None
    dns: dict[str, Any] = field(default_factory=dict)
    prev_result: Result | None = None
    policy_wait: float = DEFAULT_POLICY_WAIT
    # the pinned pod programs go on the host veth (False: only the policy programs, on
    # the pod's own interface, when pinned)
    pod_programs: bool = True
    # GC: the (containerID, ifname) attachments still valid (None: not a GC config)
    valid_attachments: frozenset[tuple[str, str]] | None = None


def _abs_path(raw: object, fld: str) -> Path:
    if not isinstance(raw, str) or not raw.startswith("/") or "\0" in raw:
        raise _bad(fld, f"must be an absolute path, got {raw!r}")
    return Path(raw)


def _pod_cidrs(raw: object) -> tuple[IPNetwork, ...]:
    if not isinstance(raw, list) or not raw:
        raise _bad("podCIDRs", "must be a non-empty list of CIDRs")
    nets: list[IPNetwork] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise _bad(f"podCIDRs[{i}]", f"must be a string, got {item!r}")
        try:
            net = ipaddress.ip_network(item, strict=True)
        except ValueError as e:
            raise _bad(f"podCIDRs[{i}]", f"{item!r} is not a valid CIDR ({e})") from None
        for j, other in enumerate(nets):
            if net.version == other.version and net.overlaps(other):
                raise _bad(f"podCIDRs[{i}]", f"{net} overlaps podCIDRs[{j}] {other}")
        nets.append(net)
    return tuple(nets)


def _mtu(raw: object, cidrs: tuple[IPNetwork, ...]) -> int:
    low = 1280 if any(n.version == 6 for n in cidrs) else 68
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= 65535:
        raise _bad("mtu", f"must be an integer from {low} to 65535, got {raw!r}")
    return raw


def _dns(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad("dns", "must be an object")
    out: dict[str, Any] = {}
    for key, val in raw.items():
        if key in DNS_LISTS:
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise _bad(f"dns.{key}", "must be a list of strings")
            if key == "nameservers":
                for v in val:
                    try:
                        ipaddress.ip_address(v)
                    except ValueError:
                        raise _bad("dns.nameservers", f"{v!r} is not an IP address") from None
        elif key == "domain":
            if not isinstance(val, str):
                raise _bad("dns.domain", "must be a string")
        else:
            raise _bad(f"dns.{key}", "unknown DNS field")
        out[key] = val
    return out


def parse_netconf(raw: object, need_prev: bool = False) -> NetConf:
    """Validate a decoded network config; CniError (code 1, 2 or 7) names the field."""
    if not isinstance(raw, dict):
        raise CniError(ERR_INVALID_CONFIG, "invalid network config: must be a JSON object")
    version = check_version(raw.get("cniVersion"))
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad("name", f"must match {NAME_RE.pattern}, got {name!r}")
    typ = raw.get("type")
    if not isinstance(typ, str) or not typ:
        raise _bad("type", f"must be a non-empty string, got {typ!r}")
    unknown = sorted(set(raw) - GENERIC_FIELDS - OWN_FIELDS)
    if unknown:
        raise CniError(ERR_UNSUPPORTED_FIELD, f'unsupported network config field "{unknown[0]}"',
                       "rackroute-cni understands: " + ", ".join(sorted(OWN_FIELDS)))
    if raw.get("ipam"):
        raise CniError(ERR_UNSUPPORTED_FIELD, 'unsupported network config field "ipam"',
                       "rackroute-cni allocates from podCIDRs itself; remove ipam")
    if raw.get("ipMasq") not in (None, False):
        raise CniError(ERR_UNSUPPORTED_FIELD, 'unsupported network config field "ipMasq"',
                       "pods are routed natively; the agent owns any masquerading")
    cidrs = _pod_cidrs(raw.get("podCIDRs"))
    mtu = _mtu(raw.get("mtu", DEFAULT_MTU), cidrs)
    data_dir = _abs_path(raw["dataDir"], "dataDir") if "dataDir" in raw else DEFAULT_DATA_DIR
    pin_dir = None
    policy_wait = DEFAULT_POLICY_WAIT
    pod_programs = True
    if "bpf" in raw and raw["bpf"] is not None:
        bpf = raw["bpf"]
        if not isinstance(bpf, dict):
            raise _bad("bpf", "must be an object")
        extra = sorted(set(bpf) - {"pinDir", "policyWait", "podPrograms"})
        if extra:
            raise CniError(ERR_UNSUPPORTED_FIELD,
                           f'unsupported network config field "bpf.{extra[0]}"',
                           "bpf understands: pinDir, policyWait, podPrograms")
        if "pinDir" not in bpf:
            raise _bad("bpf.pinDir", "missing")
        pin_dir = _abs_path(bpf["pinDir"], "bpf.pinDir")
        wait = bpf.get("policyWait", DEFAULT_POLICY_WAIT)
        if isinstance(wait, bool) or not isinstance(wait, int | float) \
                or not 0 <= wait <= MAX_POLICY_WAIT:
            raise _bad("bpf.policyWait", f"must be a number of seconds from 0 to "
                       f"{MAX_POLICY_WAIT}, got {wait!r}")
        policy_wait = float(wait)
        pod_programs = bpf.get("podPrograms", True)
        if not isinstance(pod_programs, bool):
            raise _bad("bpf.podPrograms", f"must be true or false, got {pod_programs!r}")
    dns = _dns(raw["dns"]) if raw.get("dns") is not None else {}
    prev = None
    if raw.get("prevResult") is not None:
        prev = parse_result(raw["prevResult"])
    elif need_prev:
        raise _bad("prevResult", "missing (CHECK needs the result of the previous ADD)")
    return NetConf(version, name, typ, cidrs, mtu, data_dir, pin_dir, dns, prev, policy_wait,
                   pod_programs, _attachments(raw))


def _attachments(raw: dict[str, Any]) -> frozenset[tuple[str, str]] | None:
    """GC's still-valid attachments (the spec's key, or the older one libcni also sets)."""
    key = next((k for k in VALID_ATTACHMENTS if k in raw), None)
    if key is None:
        return None
    items = raw[key]
    if not isinstance(items, list):
        raise _bad(key, "must be a list of {containerID, ifname}")
    out: set[tuple[str, str]] = set()
    for i, a in enumerate(items):
        if not isinstance(a, dict) or not isinstance(a.get("containerID"), str) \
                or not isinstance(a.get("ifname"), str):
            raise _bad(f"{key}[{i}]", "must be an object with string containerID and ifname")
        out.add((a["containerID"], a["ifname"]))
    return frozenset(out)


@dataclass(frozen=True)
class Env:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: tuple[tuple[str, str], ...] = ()
    path: tuple[str, ...] = ()


def _env_bad(var: str, why: str) -> CniError:
    return CniError(ERR_INVALID_ENV, f"invalid environment variable {var}: {why}")


def valid_ifname(name: str) -> bool:
    return (0 < len(name) < 16 and name not in (".", "..")
            and not any(c in "/:" or c.isspace() for c in name))


def parse_cni_args(raw: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for part in raw.split(";"):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep or not key:
            raise _env_bad("CNI_ARGS", f"{part!r} is not KEY=VALUE")
        out.append((key, val))
    return tuple(out)


def parse_env(env: Mapping[str, str]) -> Env:
    """Read CNI_COMMAND and, for ADD/DEL/CHECK, the container's variables (code 4)."""
    cmd = env.get("CNI_COMMAND", "")
    if cmd not in COMMANDS:
        raise _env_bad("CNI_COMMAND", f"{cmd!r} is not one of {', '.join(COMMANDS)}")
    if cmd in ("VERSION", "GC", "STATUS"):  # no container
        path = tuple(p for p in env.get("CNI_PATH", "").split(":") if p)
        return Env(cmd, path=path)
    cid = env.get("CNI_CONTAINERID", "")
    if not NAME_RE.match(cid):
        raise _env_bad("CNI_CONTAINERID", f"{cid!r} must match {NAME_RE.pattern}")
    ifname = env.get("CNI_IFNAME", "")
    if not valid_ifname(ifname):
        raise _env_bad("CNI_IFNAME", f"{ifname!r} is not a valid interface name")
    netns = env.get("CNI_NETNS", "")
    if cmd in ("ADD", "CHECK") and not netns:
        raise _env_bad("CNI_NETNS", f"required for {cmd}")
    if netns and not netns.startswith("/"):
        raise _env_bad("CNI_NETNS", f"{netns!r} is not an absolute path")
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    path = tuple(p for p in env.get("CNI_PATH", "").split(":") if p)
    return Env(cmd, cid, netns, ifname, args, path)
