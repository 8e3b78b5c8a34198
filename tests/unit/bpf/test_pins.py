"""Stale-pin bookkeeping that needs no kernel: shape diffs and the log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bpf.pins import MapShape, StalePin, remove_stale


def test_diff_names_each_differing_field_pinned_then_declared() -> None:
    want = MapShape(9, 40, 64, 262144, 0)
    assert MapShape(9, 40, 64, 262144, 0).diff(want) == ""
    assert MapShape(1, 40, 64, 1024, 0).diff(want) == "type:1->9,max_entries:1024->262144"
    assert MapShape(9, 40, 56, 262144, 1).diff(want) == "value_size:56->64,map_flags:1->0"
    assert MapShape(9, 36, 64, 262144, 0).diff(want) == "key_size:36->40"


def test_remove_stale_unlinks_and_logs_one_line_per_pin(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = tmp_path / "rr_ct", tmp_path / "rr_affinity"
    a.write_bytes(b"")
    caplog.set_level(logging.INFO, logger="bpf.pins")
    remove_stale([StalePin("rr_ct", a, "type:1->9"),
                  StalePin("rr_affinity", b, "value_size:8->16")])  # b already gone
    assert not a.exists()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"event=pin_recreated map=rr_ct path={a} reason=type:1->9",
                     f"event=pin_recreated map=rr_affinity path={b} reason=value_size:8->16"]
