"""The tunnel in use as metrics: nothing without one; with one, its protocol, device,
endpoint and underlay family, peers, MTU and counters (the kernel VXLAN device's link
counters, read through the link port)."""

from __future__ import annotations

import ipaddress

from prometheus_client import CollectorRegistry

from controller.kernel.links import FakeLinks, Underlay
from controller.kernel.routes import FakeRoutes
from controller.metrics import TunnelCollector
from controller.reconcile.loop import PassContext
from controller.reconcile.routing import RoutingReconciler
from tests.unit.routing.cluster import cluster

NODES = {"n1": ("fd00:0:1::2", ["10.244.1.0/24"]), "n2": ("fd00:0:2::2", ["10.244.2.0/24"]),
         "n3": ("fd00:0:3::2", ["fd00:3::/64"])}


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, {"node": "n1", **labels})


def test_no_tunnel_no_metrics_then_the_kernel_vxlan_devices_counters() -> None:
    local = ipaddress.ip_address("fd00:0:1::2")
    links = FakeLinks({local: Underlay("u0", 2, 1500)})
    r = RoutingReconciler(FakeRoutes(), links, lambda: {}, protocol="vxlan")
    reg = CollectorRegistry()
    reg.register(TunnelCollector("n1", r.tunnel_state))
    r.reconcile(PassContext(cluster(NODES, "native"), "n1"))
    assert r.tunnel_state() is None
    assert sample(reg, "rackroute_tunnel_peers", protocol="vxlan") is None
    r.reconcile(PassContext(cluster(NODES, "tunnel"), "n1"))
    links.counters["rr.vxlan"] = {"rx_packets": 7, "tx_packets": 9, "rx_bytes": 700,
                                  "tx_bytes": 900, "rx_errors": 1, "tx_errors": 2,
                                  "rx_dropped": 0, "tx_dropped": 3}
    assert sample(reg, "rackroute_tunnel_info", protocol="vxlan", device="rr.vxlan",
                  endpoint="fd00:0:1::2", underlay="ipv6") == 1.0
    assert sample(reg, "rackroute_tunnel_peers", protocol="vxlan") == 2.0
    assert sample(reg, "rackroute_tunnel_mtu", protocol="vxlan") == 1430.0
    want = {"encap_packets": 9, "encap_bytes": 900, "decap_packets": 7, "decap_bytes": 700,
            "miss": 3, "errors": 3}
    for name, value in want.items():
        assert sample(reg, f"rackroute_tunnel_{name}_total", protocol="vxlan") == value, name
    # back to native: the device goes, and so do the metrics
    r.reconcile(PassContext(cluster(NODES, "native"), "n1"))
    assert sample(reg, "rackroute_tunnel_info", protocol="vxlan", device="rr.vxlan",
                  endpoint="fd00:0:1::2", underlay="ipv6") is None
