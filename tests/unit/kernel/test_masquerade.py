"""The masquerade plan (controller/desired/masquerade.py), the nft script, and the fake
port's contract."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_network as N

from controller.desired.masquerade import MasqPlan, plan_masquerade
from controller.desired.podcidr import collapsed
from controller.kernel.masquerade import FakeMasquerade, ruleset
from tests.unit.kernel.masq_contract import PLAN, check_apply_current_remove
from tests.unit.routing.cluster import cluster

NODES = {"n1": ("10.0.1.2", ["10.244.1.0/24"]), "n2": ("10.0.2.2", ["10.244.2.0/24"])}


def with_masq(mode: str, setting: str):  # type: ignore[no-untyped-def]
    snap = cluster(NODES, mode)
    cfg = dataclasses.replace(snap.network_config, masquerade=setting)  # type: ignore[arg-type]
    return dataclasses.replace(snap, network_config=cfg)


def test_auto_masquerades_in_tunnel_mode_only_and_keeps_pod_to_pod() -> None:
    assert plan_masquerade(with_masq("native", "auto"), "n1") is None
    assert plan_masquerade(with_masq("hybrid", "auto"), "n1") is None
    plan = plan_masquerade(with_masq("tunnel", "auto"), "n1")
    assert plan == MasqPlan((N("10.244.1.0/24"),), (N("10.244.1.0/24"), N("10.244.2.0/24")))
    assert plan_masquerade(with_masq("native", "auto"), "n1", "tunnel") == plan  # pinned
    assert plan_masquerade(with_masq("native", "always"), "n1") == plan
    assert plan_masquerade(with_masq("tunnel", "never"), "n1") is None
    assert plan_masquerade(with_masq("tunnel", "auto"), "n9") is None  # no pod CIDR


def test_exempt_destinations_are_merged_for_an_interval_set() -> None:
    assert collapsed([N("10.244.0.0/16"), N("10.244.1.0/24"), N("fd00::/64"),
                      N("10.245.0.0/16")]) == (N("10.244.0.0/15"), N("fd00::/64"))


def test_the_nft_script_replaces_one_table_of_ours_atomically() -> None:
    text = ruleset(PLAN)
    assert text.startswith("table inet rackroute_nat\ndelete table inet rackroute_nat\n")
    assert "ip saddr @pods4 ip daddr != @cluster4 masquerade" in text
    assert "ip6 saddr @pods6 ip6 daddr != @cluster6 masquerade" in text
    assert "elements = { 10.244.0.0/16 }" in text
    assert ruleset(None) == "table inet rackroute_nat\ndelete table inet rackroute_nat\n"


def test_fake_contract() -> None:
    check_apply_current_remove(FakeMasquerade())


def test_the_reconciler_applies_changes_repairs_drift_and_never_starts_needlessly() -> None:
    from controller.reconcile.loop import PassContext
    from controller.reconcile.masquerade import MasqueradeReconciler

    ports: list[FakeMasquerade] = []

    def make() -> FakeMasquerade:
        ports.append(FakeMasquerade())
        return ports[-1]

    r = MasqueradeReconciler(make)
    r.reconcile(PassContext(with_masq("native", "auto"), "n1"))
    assert ports == []  # native: no port made, nothing run
    r.reconcile(PassContext(with_masq("tunnel", "auto"), "n1"))
    (port,) = ports
    assert port.current() is not None and port.applied == 1
    r.reconcile(PassContext(with_masq("tunnel", "auto"), "n1"))
    assert port.applied == 1  # unchanged: not applied again
    port.plan = None  # the table deleted by hand
    r.reconcile(PassContext(with_masq("tunnel", "auto"), "n1"))
    assert port.current() is None  # an ordinary pass trusts what it applied
    r.reconcile(PassContext(with_masq("tunnel", "auto"), "n1", resync=True))
    assert port.current() is not None and port.applied == 2
    r.reconcile(PassContext(with_masq("native", "auto"), "n1"))
    assert port.current() is None and port.applied == 3


def test_the_reconciler_reports_a_port_that_fails() -> None:
    from controller.reconcile.loop import PassContext
    from controller.reconcile.masquerade import MasqueradeReconciler

    class Broken(FakeMasquerade):
        def apply(self, plan: MasqPlan | None) -> None:
            raise OSError("masquerade needs nft (nftables): no such file")

    r = MasqueradeReconciler(Broken)
    ctx = PassContext(with_masq("tunnel", "auto"), "n1")
    r.reconcile(ctx)
    assert ctx.errors == {"masquerade": "masquerade needs nft (nftables): no such file"}


def test_the_setting_is_read_and_a_bad_one_names_the_field() -> None:
    from controller.model.parse import parse_object

    def cfg(value: object) -> object:
        return {"apiVersion": "rackroute.io/v1alpha1", "kind": "RackrouteConfig",
                "metadata": {"name": "default"}, "spec": {"masquerade": value}}

    ok = parse_object(cfg("always"))
    assert ok.obj is not None and ok.obj.masquerade == "always"  # type: ignore[attr-defined]
    bad = parse_object(cfg("sometimes"))
    assert bad.obj is None and bad.errors[0].startswith(
        "RackrouteConfig default: spec.masquerade: must be one of auto, always, never")
