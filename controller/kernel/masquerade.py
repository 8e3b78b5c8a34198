"""The node's masquerade, as a port: nftables (real) and in memory (fake).

`NftMasquerade` owns one table, `inet rackroute_nat`, and nothing else: each `apply`
replaces it whole in one nft transaction (add, delete, add again: atomic, and never an
error whether it existed or not), its postrouting chain at the source-NAT priority
masquerading packets from the node's pod CIDRs (`@pods4`, `@pods6`) to anything outside
the cluster's (`@cluster4`, `@cluster6`). `current` reads the sets back, so drift (the
table deleted or edited by hand) shows. `FakeMasquerade` keeps the plan in memory; both
pass tests/unit/kernel/masq_contract.py.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable
from typing import Any, Protocol

from bgp.types import IPNetwork
from controller.desired.masquerade import MasqPlan

TABLE = "rackroute_nat"


class MasqueradePort(Protocol):
    def apply(self, plan: MasqPlan | None) -> None:
        """Make the node masquerade as `plan` says (None: not at all)."""
        ...

    def current(self) -> MasqPlan | None:
        """What the node does now (None: no masquerade of ours)."""
        ...


class FakeMasquerade:
    """In memory."""

    def __init__(self) -> None:
        self.plan: MasqPlan | None = None
        self.applied = 0

    def apply(self, plan: MasqPlan | None) -> None:
        self.plan = plan if plan is not None and plan.sources else None
        self.applied += 1

    def current(self) -> MasqPlan | None:
        return self.plan


def _elements(nets: Iterable[IPNetwork]) -> str:
    text = ", ".join(str(n) for n in nets)
    return f" elements = {{ {text} }};" if text else ""


def ruleset(plan: MasqPlan | None) -> str:
    """The nft script that makes the table hold `plan` (None: removes it)."""
    head = f"table inet {TABLE}\ndelete table inet {TABLE}\n"
    if plan is None or not plan.sources:
        return head
    sets, rules = [], []
    for fam, typ, ip in ((4, "ipv4_addr", "ip"), (6, "ipv6_addr", "ip6")):
        src = [n for n in plan.sources if n.version == fam]
        dst = [n for n in plan.exempt if n.version == fam]
        sets.append(f"  set pods{fam} {{ type {typ}; flags interval;{_elements(src)} }}")
        sets.append(f"  set cluster{fam} {{ type {typ}; flags interval;{_elements(dst)} }}")
        rules.append(f"    {ip} saddr @pods{fam} {ip} daddr != @cluster{fam} masquerade")
    body = "\n".join([*sets, "  chain postrouting {",
                      "    type nat hook postrouting priority srcnat; policy accept;",
                      *rules, "  }"])
    return f"{head}table inet {TABLE} {{\n{body}\n}}\n"


def _nets(elems: list[Any]) -> list[IPNetwork]:
    out: list[IPNetwork] = []
    for e in elems:
        if isinstance(e, str):
            out.append(ipaddress.ip_network(e))
        elif "prefix" in e:
            out.append(ipaddress.ip_network(f"{e['prefix']['addr']}/{e['prefix']['len']}"))
        elif "range" in e:
            lo, hi = (ipaddress.ip_address(a) for a in e["range"])
            out.extend(ipaddress.summarize_address_range(lo, hi))
    return out


class NftMasquerade:
    """The port on nftables, in this process's network namespace or `netns`."""

    def __init__(self, netns: str | None = None, nft: str = "nft") -> None:
        self.argv = (["ip", "netns", "exec", netns] if netns else []) + [nft]

    def _nft(self, args: list[str], stdin: str | None = None) -> str:
        try:
            res = subprocess.run([*self.argv, *args], input=stdin, capture_output=True,
                                 text=True, timeout=20)
        except FileNotFoundError as e:
            raise OSError(f"masquerade needs nft (nftables): {e}") from None
        if res.returncode != 0:
            raise OSError(f"nft {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    def apply(self, plan: MasqPlan | None) -> None:
        self._nft(["-f", "-"], ruleset(plan))

    def current(self) -> MasqPlan | None:
        try:
            doc = json.loads(self._nft(["-j", "list", "table", "inet", TABLE]))
        except OSError as e:
            if "No such file or directory" in str(e):
                return None  # no table: no masquerade
            raise
        sets: dict[str, list[IPNetwork]] = {}
        for item in doc.get("nftables", []):
            s = item.get("set")
            if s is not None:
                sets[s["name"]] = _nets(s.get("elem", []))
        sources = sets.get("pods4", []) + sets.get("pods6", [])
        if not sources:
            return None
        exempt = sets.get("cluster4", []) + sets.get("cluster6", [])
        return MasqPlan(tuple(sources), tuple(exempt))
