"""CNI wire types: spec versions, the error object, and the ADD result.

Errors are exceptions carrying the spec's code; `CniError.to_json` renders the
`{"cniVersion","code","msg","details"}` object the runtime reads from stdout. Codes
below 100 are the spec's well-known ones; 100 and up are rackroute's own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

SPEC_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CHECK_MIN_VERSION = "0.4.0"
GC_MIN_VERSION = "1.1.0"  # GC and STATUS

# Well-known error codes (CNI spec, "Error" section).
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50  # STATUS: the plugin cannot take ADDs now

# rackroute-cni's own codes (the spec reserves 100 and up for plugins).
ERR_POOL_EXHAUSTED = 100
ERR_ALREADY_ADDED = 101
ERR_NETWORK_SETUP = 102
ERR_BPF_ATTACH = 103
ERR_CHECK_FAILED = 104
ERR_IP_REFUSED = 105  # CNI_ARGS IP= outside the ranges, or taken
ERR_POLICY_NOT_READY = 106  # the agent did not program a new pod's network policy in time


class CniError(Exception):
    """A failure reported to the runtime as the spec's error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"[{code}] {msg}" + (f": {details}" if details else ""))
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str = SPEC_VERSION) -> dict[str, Any]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg,
                "details": self.details}


def version_tuple(v: str) -> tuple[int, int, int]:
    parts = v.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a semantic version: {v!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def check_version(v: object) -> str:
    """The config's cniVersion if this plugin speaks it, else error code 1."""
    if not isinstance(v, str) or not v:
        raise CniError(ERR_INVALID_CONFIG, 'invalid network config field "cniVersion": '
                       "must be a non-empty string")
    if v not in SUPPORTED_VERSIONS:
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"incompatible CNI version {v!r}",
                       "supported versions: " + ", ".join(SUPPORTED_VERSIONS))
    return v


def version_json(requested: str | None) -> dict[str, Any]:
    """The VERSION command's answer."""
    used = requested if requested in SUPPORTED_VERSIONS else SPEC_VERSION
    return {"cniVersion": used, "supportedVersions": list(SUPPORTED_VERSIONS)}


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.sandbox:
            out["sandbox"] = self.sandbox
        return out


@dataclass(frozen=True)
class IPConfig:
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    interface: int | None

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if version_tuple(cni_version) < (1, 0, 0):  # 0.3.x/0.4.0 carry the family
            out["version"] = str(self.address.version)
        out["address"] = str(self.address)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        if self.interface is not None:
            out["interface"] = self.interface
        return out


@dataclass(frozen=True)
class Route:
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gw: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        return out


@dataclass(frozen=True)
class Result:
    """The ADD result (also what CHECK receives back as prevResult)."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cniVersion": self.cni_version,
            "interfaces": [i.to_json() for i in self.interfaces],
            "ips": [ip.to_json(self.cni_version) for ip in self.ips],
            "routes": [r.to_json() for r in self.routes],
            "dns": dict(self.dns),
        }


def _field(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise CniError(ERR_INVALID_CONFIG, f'invalid network config field "{where}.{key}": '
                       "missing")
    return obj[key]


def parse_result(raw: object, where: str = "prevResult") -> Result:
    """Parse a 0.3.x-1.0 result (prevResult for CHECK); code 7 naming the bad field."""

    def bad(path: str, why: str) -> CniError:
        return CniError(ERR_INVALID_CONFIG, f'invalid network config field "{path}": {why}')

    if not isinstance(raw, dict):
        raise bad(where, "must be an object")
    version = raw.get("cniVersion", SPEC_VERSION)
    if not isinstance(version, str):
        raise bad(f"{where}.cniVersion", "must be a string")
    ifaces: list[Interface] = []
    for i, it in enumerate(raw.get("interfaces") or []):
        if not isinstance(it, dict) or not isinstance(it.get("name"), str):
            raise bad(f"{where}.interfaces[{i}]", 'must be an object with a string "name"')
        ifaces.append(Interface(it["name"], str(it.get("mac", "")), str(it.get("sandbox", ""))))
    ips: list[IPConfig] = []
    for i, it in enumerate(raw.get("ips") or []):
        path = f"{where}.ips[{i}]"
        if not isinstance(it, dict):
            raise bad(path, "must be an object")
        try:
            addr = ipaddress.ip_interface(_field(it, "address", path))
            gw = ipaddress.ip_address(it["gateway"]) if it.get("gateway") else None
        except ValueError as e:
            raise bad(path, str(e)) from None
        idx = it.get("interface")
        if idx is not None and (not isinstance(idx, int) or not 0 <= idx < len(ifaces)):
            raise bad(f"{path}.interface", f"index {idx!r} is not in interfaces")
        ips.append(IPConfig(addr, gw, idx))
    routes: list[Route] = []
    for i, it in enumerate(raw.get("routes") or []):
        path = f"{where}.routes[{i}]"
        if not isinstance(it, dict):
            raise bad(path, "must be an object")
        try:
            dst = ipaddress.ip_network(_field(it, "dst", path))
            rgw = ipaddress.ip_address(it["gw"]) if it.get("gw") else None
        except ValueError as e:
            raise bad(path, str(e)) from None
        routes.append(Route(dst, rgw))
    dns = raw.get("dns") or {}
    if not isinstance(dns, dict):
        raise bad(f"{where}.dns", "must be an object")
    return Result(version, tuple(ifaces), tuple(ips), tuple(routes), dns)
