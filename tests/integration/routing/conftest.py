"""A fresh two-node topology per test (namespaces rrt<pid>…), torn down even on failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .topo import Topo


@pytest.fixture
def topo() -> Iterator[Topo]:
    t = Topo().build()
    try:
        t.install_router_counters()
        yield t
    finally:
        t.teardown()
