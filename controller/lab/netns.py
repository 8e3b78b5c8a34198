"""Network namespaces, veth pairs, bridges and addresses, driven through `ip`.

Every helper raises `LabError` with the failing command and its stderr. `namespace()` and
`Lab` always clean up what they created, in reverse order, even when the body fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

IFNAMSIZ = 15
T = TypeVar("T")


class LabError(RuntimeError):
    """A lab command failed."""


def run_cmd(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, raise LabError if it fails and `check`."""
    try:
        res = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from e
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def run_id() -> str:
    """A short token unique to this process, for names (base-36 pid)."""
    n, digits, out = os.getpid(), "0123456789abcdefghijklmnopqrstuvwxyz", ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def check_name(name: str) -> str:
    """Reject interface / namespace names the kernel would truncate or refuse."""
    if not name or len(name) > IFNAMSIZ or "/" in name or " " in name:
        raise LabError(f"bad name {name!r}: 1..{IFNAMSIZ} chars, no '/' or spaces")
    return name


class Netns:
    """One network namespace, addressed by name."""

    def __init__(self, name: str) -> None:
        self.name = check_name(name)

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return run_cmd(self.argv(argv), check=check, timeout=timeout)

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a command inside the namespace (caller owns and must reap the process)."""
        return subprocess.Popen(self.argv(argv), **kwargs)  # type: ignore[call-overload, no-any-return]

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ip ARGS` inside the namespace."""
        return run_cmd(["ip", "-n", self.name, *args], check=check)

    def create(self) -> None:
        run_cmd(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        log.info("event=netns_created name=%s", self.name)

    def delete(self) -> None:
        run_cmd(["ip", "netns", "del", self.name], check=False)
        log.info("event=netns_deleted name=%s", self.name)

    def exists(self) -> bool:
        return os.path.exists(f"/run/netns/{self.name}")

    def add_address(self, dev: str, cidr: str) -> None:
        """Add an address (IPv6 without duplicate address detection)."""
        extra = ["nodad"] if ":" in cidr else []
        self.ip("addr", "add", cidr, "dev", dev, *extra)

    def link_up(self, dev: str) -> None:
        self.ip("link", "set", dev, "up")

    def add_route(self, prefix: str, via: str | None = None, dev: str | None = None) -> None:
        args = ["route", "replace", prefix]
        if via:
            args += ["via", via]
        if dev:
            args += ["dev", dev]
        self.ip(*args)

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def routes(self, family: int = 4, table: str = "main") -> list[dict[str, object]]:
        """Kernel routes as `ip -j route` reports them."""
        import json

        res = run_cmd(["ip", "-n", self.name, "-j", f"-{family}", "route", "show", "table", table])
        out = json.loads(res.stdout or "[]")
        return out if isinstance(out, list) else []

    def add_bridge(self, name: str) -> None:
        self.ip("link", "add", check_name(name), "type", "bridge")
        self.link_up(name)


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body with this thread in network namespace `ns` (sockets made inside stay
    there), then switch back."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        yield
    finally:
        libc.setns(here, CLONE_NEWNET)
        os.close(here)
        os.close(there)


def veth(a: Netns, a_dev: str, b: Netns, b_dev: str, *, master: str | None = None) -> None:
    """Create a veth pair a_dev (in a) <-> b_dev (in b), both up; b_dev optionally bridged."""
    check_name(a_dev)
    check_name(b_dev)
    run_cmd(
        [
            "ip",
            "-n",
            a.name,
            "link",
            "add",
            a_dev,
            "type",
            "veth",
            "peer",
            "name",
            b_dev,
            "netns",
            b.name,
        ]
    )
    a.link_up(a_dev)
    if master:
        b.ip("link", "set", b_dev, "master", master)
    b.link_up(b_dev)


@contextlib.contextmanager
def namespace(name: str) -> Iterator[Netns]:
    """A fresh namespace for the body; deleted afterwards whatever happens."""
    ns = Netns(name)
    if ns.exists():
        ns.delete()
    ns.create()
    try:
        yield ns
    finally:
        ns.delete()


class Lab:
    """Collects namespaces and cleanup callbacks; `close()` undoes everything in reverse."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._cleanups: list[Callable[[], None]] = []

    def netns(self, suffix: str) -> Netns:
        """Create namespace `<prefix><suffix>` (deleted on close)."""
        ns = Netns(self.prefix + suffix)
        if ns.exists():
            ns.delete()
        ns.create()
        self._cleanups.append(ns.delete)
        return ns

    def defer(self, fn: Callable[[], None]) -> None:
        """Run `fn` on close (before anything registered earlier)."""
        self._cleanups.append(fn)

    def close(self) -> None:
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as e:  # cleanup keeps going; the failure is logged
                log.warning("event=lab_cleanup_failed error=%r", e)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(fn: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "") -> T:
    """Poll `fn` until it returns something truthy; LabError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what or fn!r}")
        time.sleep(interval)
        last = fn()
    return last
