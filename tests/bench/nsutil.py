"""Namespaces for benchmarks: create `rrq…` network namespaces and always remove them,
enter one from the current thread (sockets and child processes made inside stay there),
and a test pin directory under /sys/fs/bpf named for the run."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
RUN = f"{os.getpid() % 100000:05d}"


def sh(*args: str, input: str | None = None) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, input=input)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def nsx(ns: str, *args: str) -> str:
    return sh("ip", "netns", "exec", ns, *args)


def ns_name(tag: str) -> str:
    name = f"rrq{tag}{RUN}"
    assert len(name) <= 15, name
    return name


@contextmanager
def netns(*names: str) -> Iterator[tuple[str, ...]]:
    """Create the namespaces (loopback up); delete them however the block ends."""
    made: list[str] = []
    try:
        for n in names:
            assert n.startswith("rrq") and len(n) <= 15, n
            sh("ip", "netns", "add", n)
            made.append(n)
            nsx(n, "ip", "link", "set", "lo", "up")
        yield tuple(names)
    finally:
        for n in reversed(made):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Switch this thread into ns, then back."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        yield
    finally:
        _libc.setns(here, CLONE_NEWNET)
        os.close(here)
        os.close(there)


@contextmanager
def pin_root(tag: str) -> Iterator[Path]:
    """A pin directory under /sys/fs/bpf for this run, removed afterwards."""
    root = Path(f"/sys/fs/bpf/rrq-{tag}-{RUN}")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
