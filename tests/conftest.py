"""Shared pytest setup: integration and e2e tests need root (network namespaces)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_ROOT_ONLY = ("integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in _ROOT_ONLY:
            if kind in parts:
                item.add_marker(getattr(pytest.mark, kind))
                if not is_root:
                    item.add_marker(
                        pytest.mark.skip(reason="needs root: creates network namespaces")
                    )
