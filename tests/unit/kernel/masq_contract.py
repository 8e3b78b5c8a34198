"""The MasqueradePort contract: the fake (unit) and nftables in a namespace (integration)
pass the same checks."""

from __future__ import annotations

from ipaddress import ip_network as N

from controller.desired.masquerade import MasqPlan
from controller.desired.podcidr import collapsed
from controller.kernel.masquerade import MasqueradePort

PLAN = MasqPlan(collapsed([N("10.244.1.0/24"), N("fd00:244:1::/64")]),
                collapsed([N("10.244.0.0/16"), N("10.244.1.0/24"), N("fd00:244::/48")]))


def check_apply_current_remove(port: MasqueradePort) -> None:
    assert port.current() is None  # nothing of ours at first
    port.apply(PLAN)
    assert port.current() == PLAN
    port.apply(PLAN)  # again: the same
    assert port.current() == PLAN
    v4 = MasqPlan((N("10.244.2.0/24"),), ())  # another node's plan: nothing exempt
    port.apply(v4)
    assert port.current() == v4
    port.apply(None)
    assert port.current() is None
    port.apply(None)  # removing what is not there is fine
    assert port.current() is None
