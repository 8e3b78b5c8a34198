"""A small typed reader over raw manifest dicts that records errors with field paths.

Each getter returns a value (or the default) and, on bad input, records
`<path>: <message>` instead of raising, so one pass reports every problem of an object.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from bgp.types import IPAddress, IPNetwork

T = TypeVar("T")


class Reader:
    """Reads fields of one mapping; `errors` is shared with child readers."""

    def __init__(self, data: Any, path: str = "", errors: list[str] | None = None) -> None:
        self.path = path
        self.errors: list[str] = [] if errors is None else errors
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.error("", f"must be an object, got {describe(data)}")
            data = {}
        self.data: dict[str, Any] = data

    # ------------------------------------------------------------ plumbing
    def at(self, name: str) -> str:
        if not name:
            return self.path or "<root>"
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> None:
        self.errors.append(f"{self.at(name)}: {message}")

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def child(self, name: str) -> Reader:
        return Reader(self.data.get(name), self.at(name), self.errors)

    def items(self, name: str) -> Iterator[tuple[str, Any]]:
        """(path, item) for each element of a list field."""
        raw = self.data.get(name)
        if raw is None:
            return
        if not isinstance(raw, list):
            self.error(name, f"must be a list, got {describe(raw)}")
            return
        for i, item in enumerate(raw):
            yield f"{self.at(name)}[{i}]", item

    def objects(self, name: str) -> Iterator[Reader]:
        for path, item in self.items(name):
            yield Reader(item, path, self.errors)

    # ------------------------------------------------------------ scalars
    def text(
        self,
        name: str,
        default: str | None = None,
        *,
        required: bool = False,
        choices: tuple[str, ...] = (),
    ) -> str | None:
        raw = self.data.get(name)
        if raw is None:
            if required:
                self.error(name, "required")
            return default
        if not isinstance(raw, str):
            self.error(name, f"must be a string, got {describe(raw)}")
            return default
        if required and not raw.strip():
            self.error(name, "must not be empty")
            return default
        if choices and raw not in choices:
            self.error(name, f"must be one of {', '.join(choices)}, got {raw!r}")
            return default
        return raw

    def integer(
        self,
        name: str,
        default: int | None = None,
        *,
        lo: int | None = None,
        hi: int | None = None,
        required: bool = False,
        rule: str = "",
        check: Callable[[int], bool] | None = None,
    ) -> int | None:
        raw = self.data.get(name)
        if raw is None:
            if required:
                self.error(name, "required")
            return default
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.error(name, f"must be an integer, got {describe(raw)}")
            return default
        ok = (lo is None or raw >= lo) and (hi is None or raw <= hi)
        if check is not None:
            ok = check(raw)
        if not ok:
            want = rule or f"{lo if lo is not None else ''}..{hi if hi is not None else ''}"
            self.error(name, f"must be {want}, got {raw}")
            return default
        return raw

    def flag(self, name: str, default: bool) -> bool:
        raw = self.data.get(name)
        if raw is None:
            return default
        if not isinstance(raw, bool):
            self.error(name, f"must be true or false, got {describe(raw)}")
            return default
        return raw

    def ip(self, name: str, *, required: bool = False) -> IPAddress | None:
        raw = self.data.get(name)
        if raw is None:
            if required:
                self.error(name, "required")
            return None
        return parse_ip(raw, self.at(name), self.errors)

    def cidr(self, name: str, *, required: bool = False) -> IPNetwork | None:
        raw = self.data.get(name)
        if raw is None:
            if required:
                self.error(name, "required")
            return None
        return parse_cidr(raw, self.at(name), self.errors)

    def str_map(self, name: str) -> dict[str, str]:
        raw = self.data.get(name)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.error(name, f"must be a map of strings, got {describe(raw)}")
            return {}
        out: dict[str, str] = {}
        for k, v in raw.items():
            if not isinstance(k, str):
                self.error(name, f"keys must be strings, got {describe(k)}")
                continue
            if isinstance(v, (dict, list)) or v is None:
                self.error(key_path(name, k), f"must be a string, got {describe(v)}")
                continue
            out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        return out

    def str_list(self, name: str) -> list[str]:
        out: list[str] = []
        for path, item in self.items(name):
            if not isinstance(item, str):
                self.errors.append(f"{path}: must be a string, got {describe(item)}")
                continue
            out.append(item)
        return out


def type_name(v: Any) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def describe(v: Any) -> str:
    """A value as messages show it: its type, and for scalars the value too."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, (dict, list)):
        return type_name(v)
    if isinstance(v, (str, int, float)):
        return f"{type_name(v)} {v!r}"
    return type_name(v)


def key_path(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` when the key holds dots, slashes or other punctuation."""
    if key and all(c.isalnum() or c in "_-" for c in key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def parse_ip(raw: Any, path: str, errors: list[str]) -> IPAddress | None:
    if not isinstance(raw, str):
        errors.append(f"{path}: must be an IP address string, got {describe(raw)}")
        return None
    try:
        return ipaddress.ip_address(raw.strip())
    except ValueError:
        errors.append(f"{path}: not an IP address: {raw!r}")
        return None


def parse_cidr(raw: Any, path: str, errors: list[str]) -> IPNetwork | None:
    if not isinstance(raw, str) or "/" not in raw:
        errors.append(f"{path}: must be a CIDR like 10.0.0.0/24, got {describe(raw)}")
        return None
    try:
        return ipaddress.ip_network(raw.strip(), strict=True)
    except ValueError as e:
        if "host bits" in str(e):
            net = ipaddress.ip_network(raw.strip(), strict=False)
            errors.append(f"{path}: host bits set in {raw!r}, did you mean {net}?")
        else:
            errors.append(f"{path}: not a CIDR: {raw!r}")
        return None


def parse_loose_cidr(raw: Any, path: str, errors: list[str]) -> IPNetwork | None:
    """A prefix read as the API server takes a Service's source ranges or an ipBlock:
    surrounding whitespace trimmed, host bits cleared (10.1.2.3/8 is 10.0.0.0/8); a
    prefix length is required."""
    if not isinstance(raw, str):
        errors.append(f"{path}: must be a CIDR like 10.0.0.0/24, got {describe(raw)}")
        return None
    text = raw.strip()
    if "/" in text:
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            pass
    errors.append(f"{path}: not a CIDR: {raw!r}")
    return None
