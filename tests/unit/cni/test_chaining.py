"""rackroute-cni in a chained conflist (CNI spec, "Adding / Deleting / Checking an
attachment"): it is the first plugin, so its ADD gets no prevResult; CHECK and DEL get
the chain's final result (portmap passes rackroute-cni's through)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.cni.plugin import netconf_for
from controller.cni.spec import ERR_INVALID_CONFIG, CniError

CONF: dict[str, Any] = {"cniVersion": "1.0.0", "name": "rackroute", "type": "rackroute-cni",
                        "podCIDRs": ["10.244.0.0/24"], "dataDir": "/var/lib/rackroute/cni"}
# what portmap prints (and the runtime caches as the final result) after rackroute-cni
FINAL = {"cniVersion": "1.0.0",
         "interfaces": [{"name": "rr0123456789a", "mac": "aa:bb:cc:dd:ee:01"},
                        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02",
                         "sandbox": "/var/run/netns/p1"}],
         "ips": [{"interface": 1, "address": "10.244.0.5/32", "gateway": "169.254.1.1"}],
         "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}], "dns": {}}


def test_add_as_the_first_plugin_and_refused_after_another() -> None:
    assert netconf_for("ADD", CONF).prev_result is None
    with pytest.raises(CniError) as e:
        netconf_for("ADD", {**CONF, "prevResult": FINAL})
    assert e.value.code == ERR_INVALID_CONFIG
    assert e.value.msg == ('invalid network config field "prevResult": rackroute-cni '
                           "creates the pod's interface and must be the first plugin of "
                           "the conflist")


def test_check_reads_the_chains_final_result() -> None:
    prev = netconf_for("CHECK", {**CONF, "prevResult": FINAL}).prev_result
    assert prev is not None and prev.to_json() == FINAL


def test_del_never_fails_over_the_final_result() -> None:
    """DEL needs nothing from prevResult: one a later plugin shaped in a way rackroute-cni
    would refuse (here an interface index past the list) does not keep a pod's address."""
    odd = {**FINAL, "ips": [{"interface": 7, "address": "10.244.0.5/32"}]}
    conf = netconf_for("DEL", {**CONF, "prevResult": odd})
    assert conf.prev_result is None and conf.name == "rackroute"
    assert netconf_for("DEL", {**CONF, "prevResult": FINAL}).name == "rackroute"
