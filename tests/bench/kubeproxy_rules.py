"""A kube-proxy-style iptables ruleset (the baseline of R1 and R2), written here.

KUBE-SERVICES matches each VIP:port and jumps to a per-service chain; that chain picks an
endpoint chain with `statistic --mode random` (probability 1/n, 1/(n-1), …), and the
endpoint chain marks hairpin traffic for masquerade and DNATs to the endpoint. A one-service
update is written the way kube-proxy's partial sync does it: with --noflush, only the
service chain (re-declared, so flushed), the new endpoint chains, and the old ones
flushed and deleted with -X.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Svc:
    vip: str
    port: int
    endpoints: tuple[tuple[str, int], ...]
    proto: str = "tcp"


def svc_chain(i: int) -> str:
    return f"KUBE-SVC-{i:016X}"


def sep_chain(i: int, ep: tuple[str, int]) -> str:
    a, b, c, d = (int(x) for x in ep[0].split("."))
    return f"KUBE-SEP-{i:08X}{(a << 24 | b << 16 | c << 8 | d) ^ ep[1]:08X}"


def _service_rules(i: int, s: Svc) -> list[str]:
    out = []
    n = len(s.endpoints)
    for j, ep in enumerate(s.endpoints):
        left = n - j
        stat = f"-m statistic --mode random --probability {1 / left:.10f} " if left > 1 else ""
        out.append(f"-A {svc_chain(i)} -m comment --comment \"s{i}\" {stat}-j {sep_chain(i, ep)}")
    for ep in s.endpoints:
        c = sep_chain(i, ep)
        out.append(f"-A {c} -s {ep[0]}/32 -j KUBE-MARK-MASQ")
        out.append(f"-A {c} -p {s.proto} -m {s.proto} -j DNAT --to-destination {ep[0]}:{ep[1]}")
    return out


def full_ruleset(services: Sequence[Svc]) -> str:
    """The whole nat table (iptables-restore without --noflush replaces it)."""
    head = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
            ":KUBE-POSTROUTING - [0:0]"]
    chains: list[str] = []
    rules = [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A POSTROUTING -j KUBE-POSTROUTING",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MASQUERADE",
    ]
    for i, s in enumerate(services):
        chains.append(f":{svc_chain(i)} - [0:0]")
        chains.extend(f":{sep_chain(i, ep)} - [0:0]" for ep in s.endpoints)
        rules.append(f"-A KUBE-SERVICES -d {s.vip}/32 -p {s.proto} -m comment --comment \"s{i}\""
                     f" -m {s.proto} --dport {s.port} -j {svc_chain(i)}")
        rules.extend(_service_rules(i, s))
    return "\n".join(head + chains + rules + ["COMMIT", ""])


def one_service_update(i: int, old: Svc, new: Svc) -> str:
    """kube-proxy's partial sync of one service whose endpoints changed (--noflush)."""
    gone = [ep for ep in old.endpoints if ep not in new.endpoints]
    lines = ["*nat", f":{svc_chain(i)} - [0:0]"]
    lines += [f":{sep_chain(i, ep)} - [0:0]" for ep in (*new.endpoints, *gone)]  # flushed
    lines += _service_rules(i, new)
    lines += [f"-X {sep_chain(i, ep)}" for ep in gone]
    return "\n".join(lines + ["COMMIT", ""])
