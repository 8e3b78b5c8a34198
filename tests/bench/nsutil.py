"""Namespaces for benchmarks: create `rrq…` network namespaces and always remove them,
enter one from the current thread (sockets and child processes made inside stay there),
and a test pin directory under /sys/fs/bpf named for the run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from controller.lab.netns import entered as in_netns

__all__ = ["in_netns", "netns", "ns_name", "nsx", "pin_root", "sh"]
from pathlib import Path

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
def pin_root(tag: str) -> Iterator[Path]:
    """A pin directory under /sys/fs/bpf for this run, removed afterwards."""
    root = Path(f"/sys/fs/bpf/rrq-{tag}-{RUN}")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
