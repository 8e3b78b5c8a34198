"""Drift repair: a path lost inside the speaker comes back on the resync pass only."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from controller.reconcile.bgp import BGPReconciler
from tests.unit.reconcile.test_bgp_reconciler import Fakes, announced, lab, run_pass

__all__ = ["lab"]  # the fixture, re-exported for pytest

N = ipaddress.ip_network


def test_resync_pass_repairs_a_path_removed_behind_the_back(
    lab: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    run_pass(lab, rec)
    sp = fakes.made["tor"]
    want = announced(sp)
    assert "10.96.100.1/32" in want
    sp.drift_remove(N("10.96.100.1/32"))
    pod = next(p for p in sp.advertised() if str(p.prefix) == "10.244.0.0/24")
    sp.drift_replace(replace(pod, communities=frozenset({"1:1"})))

    run_pass(lab, rec)  # an ordinary pass diffs against the adapter's memory: no repair
    assert "10.96.100.1/32" not in announced(sp)

    with caplog.at_level(logging.INFO, logger="rackroute.bgp"):
        run_pass(lab, rec, resync=True)
    assert announced(sp) == want
    assert next(p for p in sp.advertised() if p.prefix == pod.prefix) == pod
    lines = [r.getMessage() for r in caplog.records if "bgp_drift_repaired" in r.getMessage()]
    assert sorted(lines) == [
        "event=bgp_drift_repaired instance=tor prefix=10.244.0.0/24 action=announce",
        "event=bgp_drift_repaired instance=tor prefix=10.96.100.1/32 action=announce",
    ]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rackroute.bgp"):
        run_pass(lab, rec, resync=True)  # nothing drifted: nothing sent, nothing logged
    assert not [r for r in caplog.records if "bgp_drift_repaired" in r.getMessage()]


def test_resync_withdraws_a_path_added_behind_the_back(lab: Path) -> None:
    fakes = Fakes()
    rec = BGPReconciler(fakes)
    run_pass(lab, rec)
    sp = fakes.made["tor"]
    want = announced(sp)
    extra = next(iter(sp.advertised()))
    sp.drift_replace(replace(extra, prefix=N("192.0.2.99/32")))
    run_pass(lab, rec, resync=True)
    assert announced(sp) == want
