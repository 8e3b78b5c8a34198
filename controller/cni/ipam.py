"""The pod address store: one file per allocated address under the node's data dir.

Layout of `<dataDir>`:

    lock          flock(2) target; every read-modify-write holds it exclusively
    ips/<addr>    one file per allocated address: {"network","containerID","ifname"}
    index.json    {"owners": {"<network>/<containerID>/<ifname>": [addr, ...]},
                   "cursor": {"<cidr>": last allocated addr}}

The per-address files are the truth (an address is taken iff its file exists, created
with O_EXCL); the index makes lookups by container cheap and remembers where the last
allocation stopped, so a freed address is handed out again only after the rest of the
range (round-robin, as stale conntrack and ARP entries ask). If the index is missing
or unreadable it is rebuilt from the files. Everything survives restarts, and many
plugin processes can allocate at once: the lock serialises them.

One address is allocated per address family present in the pod CIDRs; the network
address of each range is skipped (and the IPv4 broadcast address), but not the first
host address: pods reach the node through a link-local gateway.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpamError(Exception):
    """Base of the store's errors."""


class PoolExhausted(IpamError):
    """No free address in any range of one family."""


class AlreadyAllocated(IpamError):
    """The (network, container, ifname) already holds addresses: ADD called twice."""

    def __init__(self, key: str, addrs: Sequence[IPAddress]) -> None:
        super().__init__(f"{key} already holds {', '.join(map(str, addrs))}")
        self.addrs = tuple(addrs)


class RequestRefused(IpamError):
    """A requested address (CNI_ARGS IP=) is outside the ranges or already taken."""


class LockTimeout(IpamError):
    """Another process held the store lock for too long."""


@dataclass(frozen=True)
class Owner:
    network: str
    container_id: str
    ifname: str

    @property
    def key(self) -> str:
        return f"{self.network}/{self.container_id}/{self.ifname}"


def usable_bounds(net: IPNetwork) -> tuple[int, int]:
    """First and last assignable address of a range, as integers."""
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.num_addresses > 2:  # /31, /32, /127, /128 use every address
        first += 1
        if net.version == 4:
            last -= 1
    return first, last


def _addr(v: int | str, version: int) -> IPAddress:
    return ipaddress.IPv4Address(v) if version == 4 else ipaddress.IPv6Address(v)


class IpamStore:
    """Allocate, look up and release pod addresses for one network."""

    def __init__(self, root: Path, network: str, ranges: Sequence[IPNetwork],
                 lock_timeout: float = 30.0) -> None:
        self.root = root
        self.network = network
        self.ranges = tuple(ranges)
        self.lock_timeout = lock_timeout
        self.ips_dir = root / "ips"
        self.index_path = root / "index.json"

    # -- locking and files -------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        self.ips_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"{self.root}/lock busy for {self.lock_timeout}s"
                                          ) from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing the descriptor drops the lock

    def _scan(self) -> dict[IPAddress, Owner]:
        out: dict[IPAddress, Owner] = {}
        for p in self.ips_dir.iterdir():
            if p.name.startswith("."):
                continue
            try:
                addr = ipaddress.ip_address(p.name)
                doc = json.loads(p.read_text())
                out[addr] = Owner(str(doc["network"]), str(doc["containerID"]),
                                  str(doc["ifname"]))
            except (ValueError, KeyError, TypeError, OSError):
                continue  # not ours, or half-written by a crashed process
        return out

    def _write_atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _load_index(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.index_path.read_text())
            if isinstance(doc, dict) and isinstance(doc.get("owners"), dict) \
                    and isinstance(doc.get("cursor"), dict):
                return doc
        except (OSError, ValueError):
            pass
        owners: dict[str, list[str]] = {}
        for addr, owner in sorted(self._scan().items(), key=lambda kv: str(kv[0])):
            owners.setdefault(owner.key, []).append(str(addr))
        return {"owners": owners, "cursor": {}}

    def _save_index(self, doc: dict[str, Any]) -> None:
        self._write_atomic(self.index_path, json.dumps(doc, indent=1, sort_keys=True) + "\n")

    # -- operations ---------------------------------------------------------------
    def _owner(self, container_id: str, ifname: str) -> Owner:
        return Owner(self.network, container_id, ifname)

    def lookup(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Addresses held by a container's interface (empty if none)."""
        with self.locked():
            doc = self._load_index()
            return [ipaddress.ip_address(a)
                    for a in doc["owners"].get(self._owner(container_id, ifname).key, [])]

    def allocations(self) -> dict[IPAddress, Owner]:
        """Every address in the store and who holds it."""
        with self.locked():
            return self._scan()

    def allocate(self, container_id: str, ifname: str,
                 requested: Sequence[IPAddress] = ()) -> list[IPAddress]:
        """One free address per family of the ranges; AlreadyAllocated, PoolExhausted.

        `requested` (CNI_ARGS `IP=`) pins the address of its family: it must be a usable
        address of a range and free, else RequestRefused."""
        owner = self._owner(container_id, ifname)
        with self.locked():
            doc = self._load_index()
            held = doc["owners"].get(owner.key)
            if held:
                raise AlreadyAllocated(owner.key, [ipaddress.ip_address(a) for a in held])
            got: list[IPAddress] = []
            try:
                for version in sorted({r.version for r in self.ranges}):
                    want = [a for a in requested if a.version == version]
                    if want:
                        got.append(self._take_exact(want[0], owner))
                    else:
                        got.append(self._take(version, owner, doc["cursor"]))
            except BaseException:
                for a in got:
                    self._unlink(a)
                raise
            doc["owners"][owner.key] = [str(a) for a in got]
            self._save_index(doc)
            return got

    def _take_exact(self, addr: IPAddress, owner: Owner) -> IPAddress:
        inside = [n for n in self.ranges if n.version == addr.version
                  and usable_bounds(n)[0] <= int(addr) <= usable_bounds(n)[1]]
        if not inside:
            raise RequestRefused(f"requested IP {addr} is not a usable address of "
                                 + ", ".join(str(r) for r in self.ranges))
        body = json.dumps({"network": owner.network, "containerID": owner.container_id,
                           "ifname": owner.ifname}) + "\n"
        try:
            fd = os.open(self.ips_dir / str(addr), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise RequestRefused(f"requested IP {addr} is already allocated") from None
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        return addr

    def _take(self, version: int, owner: Owner, cursor: dict[str, str]) -> IPAddress:
        body = json.dumps({"network": owner.network, "containerID": owner.container_id,
                           "ifname": owner.ifname}) + "\n"
        ranges = [r for r in self.ranges if r.version == version]
        for net in ranges:
            first, last = usable_bounds(net)
            size = last - first + 1
            last_used = cursor.get(str(net))
            start = first
            if last_used is not None:
                lu = int(ipaddress.ip_address(last_used))
                if first <= lu <= last:
                    start = first + (lu - first + 1) % size
            for step in range(size):
                cand = _addr(first + (start - first + step) % size, version)
                path = self.ips_dir / str(cand)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                cursor[str(net)] = str(cand)
                return cand
        raise PoolExhausted(f"no free IPv{version} address in "
                            + ", ".join(str(r) for r in ranges))

    def _unlink(self, addr: IPAddress) -> None:
        with suppress(FileNotFoundError):
            (self.ips_dir / str(addr)).unlink()

    def release(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Free a container's addresses; a no-op (empty list) when it holds none."""
        owner = self._owner(container_id, ifname)
        with self.locked():
            doc = self._load_index()
            listed = doc["owners"].pop(owner.key, [])
            addrs = {ipaddress.ip_address(a) for a in listed}
            # files the index missed (a process died between the two writes)
            addrs |= {a for a, o in self._scan().items() if o == owner}
            for a in addrs:
                self._unlink(a)
            if listed or addrs:
                self._save_index(doc)
            return sorted(addrs, key=lambda a: (a.version, int(a)))
