"""FRR (zebra + bgpd, optionally bfdd) run by hand inside a namespace, with JSON queries.

The config is generated from `BgpConfig` (a ToR that needs no per-node config: eBGP, a
peer-group with `remote-as external`, `bgp listen range`, no ebgp-requires-policy).
Neighbors can be added and removed at run time through vtysh. Daemons are stopped by the
PIDs in their pid files; nothing else is ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.lab.netns import LabError, Netns, run_cmd, wait_for

log = logging.getLogger(__name__)

FRR_DIR = Path("/usr/lib/frr")
DAEMONS = ("zebra", "bgpd")


@dataclass(frozen=True)
class Neighbor:
    """One explicitly configured BGP neighbor of the FRR router."""

    address: str
    remote_as: str = "external"  # "external", "internal" or a number
    peer_group: str | None = None
    password: str | None = field(default=None, repr=False)
    ebgp_multihop: int = 0
    update_source: str | None = None
    route_reflector_client: bool = False
    next_hop_self: bool = False
    families: tuple[str, ...] = ("ipv4",)
    extended_nexthop: bool = False  # IPv4 routes with IPv6 next hops (RFC 8950)

    def lines(self) -> list[str]:
        """Config lines under `router bgp` for this neighbor (address-family parts last)."""
        a = self.address
        out = (
            [f"neighbor {a} peer-group {self.peer_group}"]
            if self.peer_group
            else [f"neighbor {a} remote-as {self.remote_as}"]
        )
        if self.peer_group and self.remote_as not in ("external", ""):
            out.append(f"neighbor {a} remote-as {self.remote_as}")
        if self.password:
            out.append(f"neighbor {a} password {self.password}")
        if self.ebgp_multihop:
            out.append(f"neighbor {a} ebgp-multihop {self.ebgp_multihop}")
        if self.update_source:
            out.append(f"neighbor {a} update-source {self.update_source}")
        if self.extended_nexthop:
            out.append(f"neighbor {a} capability extended-nexthop")
        out += [f"neighbor {a} timers 3 9", f"neighbor {a} timers connect 1"]
        for fam in ("ipv4", "ipv6"):
            out.append(f"address-family {fam} unicast")
            if fam in self.families:
                out.append(f" neighbor {a} activate")
                if self.route_reflector_client:
                    out.append(f" neighbor {a} route-reflector-client")
                if self.next_hop_self:
                    out.append(f" neighbor {a} next-hop-self")
            else:
                out.append(f" no neighbor {a} activate")
            out.append("exit-address-family")
        return out


@dataclass(frozen=True)
class BgpConfig:
    """bgpd config of a ToR: a NODES peer-group (eBGP) reachable by listen ranges."""

    asn: int
    router_id: str
    hostname: str = "tor"
    peer_group: str = "NODES"
    listen_ranges: tuple[str, ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    networks: tuple[str, ...] = ()  # prefixes this router originates
    group_password: str | None = field(default=None, repr=False)
    group_next_hop_self: bool = False
    bfd: bool = False

    def render(self) -> str:
        g = self.peer_group
        lines = [
            f"hostname {self.hostname}",
            "!",
            f"router bgp {self.asn}",
            f" bgp router-id {self.router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp default ipv4-unicast",
            " bgp graceful-restart",
            " bgp bestpath as-path multipath-relax",
            f" neighbor {g} peer-group",
            f" neighbor {g} remote-as external",
            f" neighbor {g} timers 3 9",
            f" neighbor {g} timers connect 1",
        ]
        if self.group_password:
            lines.append(f" neighbor {g} password {self.group_password}")
        if self.bfd:
            lines.append(f" neighbor {g} bfd")
        lines += [f" bgp listen range {r} peer-group {g}" for r in self.listen_ranges]
        for n in self.neighbors:
            lines += [
                " " + x for x in n.lines() if not x.startswith(("address-family", " ", "exit"))
            ]
        for fam in ("ipv4", "ipv6"):
            lines.append(f" address-family {fam} unicast")
            lines.append(f"  neighbor {g} activate")
            if self.group_next_hop_self:
                lines.append(f"  neighbor {g} next-hop-self")
            lines.append("  maximum-paths 16")
            for net in self.networks:
                if (":" in net) == (fam == "ipv6"):
                    lines.append(f"  network {net}")
            for n in self.neighbors:
                lines += ["  " + x.strip() for x in _af_lines(n, fam)]
            lines.append(" exit-address-family")
        lines.append("!")
        return "\n".join(lines) + "\n"


def _af_lines(n: Neighbor, fam: str) -> list[str]:
    out: list[str] = []
    inside = False
    for x in n.lines():
        if x == f"address-family {fam} unicast":
            inside = True
        elif x == "exit-address-family":
            inside = False
        elif inside:
            out.append(x)
    return out


class FrrRouter:
    """zebra + bgpd (+ bfdd) inside `ns`, in a private work directory."""

    def __init__(self, ns: Netns, config: BgpConfig, *, bfd: bool = False) -> None:
        self.ns = ns
        self.config = config
        self.daemons = (*DAEMONS, "bfdd") if bfd else DAEMONS
        self.workdir = Path(tempfile.mkdtemp(prefix=f"rrb-frr-{ns.name}-"))
        os.chmod(self.workdir, 0o755)
        shutil.chown(self.workdir, "frr", "frr")

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Write the config and start each daemon; return once bgpd answers vtysh."""
        self._write(f"{self.workdir}/zebra.conf", f"hostname {self.config.hostname}\n")
        self._write(f"{self.workdir}/bfdd.conf", f"hostname {self.config.hostname}\n")
        self._write(f"{self.workdir}/bgpd.conf", self.config.render())
        for d in self.daemons:
            pidfile = self.workdir / f"{d}.pid"
            pidfile.unlink(missing_ok=True)
            argv = [
                str(FRR_DIR / d),
                "-d",
                "-f",
                f"{self.workdir}/{d}.conf",
                "-i",
                str(pidfile),
                "-z",
                f"{self.workdir}/zserv.api",
                "--vty_socket",
                str(self.workdir),
                "-P",
                "0",
                "-u",
                "frr",
                "-g",
                "frr",
                "--log",
                f"file:{self.workdir}/{d}.log",
            ]
            self.ns.run(argv, timeout=timeout)
            wait_for(lambda p=pidfile: p.exists(), timeout, what=f"{d} pid file")  # type: ignore[misc]
            if d == "zebra":
                wait_for(
                    lambda: (self.workdir / "zserv.api").exists(), timeout, what="zebra socket"
                )
        wait_for(lambda: self._answers(), timeout, what="bgpd vty")
        log.info("event=frr_started ns=%s pids=%s", self.ns.name, self.pids())

    def _write(self, path: str, text: str) -> None:
        Path(path).write_text(text)
        shutil.chown(path, "frr", "frr")

    def _answers(self) -> bool:
        res = run_cmd(self._vtysh_argv(["show bgp summary json"]), check=False, timeout=10)
        return res.returncode == 0 and res.stdout.strip().startswith("{")

    def pids(self) -> dict[str, int]:
        """PID of each running daemon, from its pid file."""
        out: dict[str, int] = {}
        for d in self.daemons:
            try:
                out[d] = int((self.workdir / f"{d}.pid").read_text().strip())
            except (OSError, ValueError):
                continue
        return out

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Signal each daemon by PID (SIGKILL after `timeout`) and wait for it to exit."""
        pids = self.pids()
        for pid in pids.values():
            _signal(pid, sig)
        deadline = time.monotonic() + timeout
        for pid in pids.values():
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        for d in self.daemons:
            (self.workdir / f"{d}.pid").unlink(missing_ok=True)
        log.info("event=frr_stopped ns=%s signal=%s", self.ns.name, sig.name)

    def close(self) -> None:
        """Stop and remove the work directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- queries ---------------------------------------------------------------------
    def _vtysh_argv(self, cmds: Sequence[str]) -> list[str]:
        argv = ["vtysh", "--vty_socket", str(self.workdir)]
        for c in cmds:
            argv += ["-c", c]
        return argv

    def vtysh(self, *cmds: str) -> str:
        """Run vtysh commands against this router; LabError if vtysh fails."""
        return run_cmd(self._vtysh_argv(cmds), timeout=20).stdout

    def vtysh_json(self, cmd: str) -> Any:
        """Run one `... json` show command and parse its output."""
        out = self.vtysh(cmd)
        try:
            return json.loads(out)
        except json.JSONDecodeError as e:
            raise LabError(f"vtysh {cmd!r}: not JSON: {out[:200]!r}") from e

    def configure(self, *lines: str) -> None:
        """Apply config lines under `router bgp <asn>`."""
        self.vtysh("configure terminal", f"router bgp {self.config.asn}", *lines)

    def add_neighbor(self, n: Neighbor) -> None:
        self.configure(*n.lines())

    def remove_neighbor(self, address: str) -> None:
        self.configure(f"no neighbor {address}")

    def bgp_routes(self, afi: str = "ipv4") -> dict[str, list[dict[str, Any]]]:
        """`show bgp <afi> unicast json` routes: prefix -> list of paths."""
        data = self.vtysh_json(f"show bgp {afi} unicast json")
        routes = data.get("routes", {}) if isinstance(data, dict) else {}
        return routes if isinstance(routes, dict) else {}

    def bgp_route_detail(self, prefix: str, afi: str = "ipv4") -> dict[str, Any]:
        """`show bgp <afi> unicast <prefix> json` (communities, local-pref, ...)."""
        data = self.vtysh_json(f"show bgp {afi} unicast {prefix} json")
        return data if isinstance(data, dict) else {}

    def rib(self, afi: str = "ipv4") -> dict[str, list[dict[str, Any]]]:
        """zebra's RIB: `show ip route json` / `show ipv6 route json`."""
        cmd = "show ip route json" if afi == "ipv4" else "show ipv6 route json"
        data = self.vtysh_json(cmd)
        return data if isinstance(data, dict) else {}

    def installed_bgp(self, afi: str = "ipv4") -> set[str]:
        """Prefixes whose BGP route zebra reports installed in the kernel."""
        return {
            p
            for p, entries in self.rib(afi).items()
            if any(e.get("protocol") == "bgp" and e.get("installed") for e in entries)
        }

    def neighbors(self) -> dict[str, dict[str, Any]]:
        """`show bgp neighbors json`: address -> details (bgpState, ...)."""
        data = self.vtysh_json("show bgp neighbors json")
        return (
            {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
        )

    def neighbor_state(self, address: str) -> str | None:
        n = self.neighbors().get(address)
        return str(n.get("bgpState")) if n else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
