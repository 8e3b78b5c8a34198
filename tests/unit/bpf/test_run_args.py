"""The standalone datapath runner's --uplink spec: IPv4 and/or IPv6 node addresses."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from bpf.run import uplink_spec


@pytest.mark.parametrize(("spec", "want"), [
    ("ns1:eth0@10.0.0.11", ("ns1", "eth0", IPv4Address("10.0.0.11"), None)),
    ("ns1:eth0@fd00::11", ("ns1", "eth0", None, IPv6Address("fd00::11"))),
    ("eth0@10.0.0.11,fd00::11", (None, "eth0", IPv4Address("10.0.0.11"),
                                 IPv6Address("fd00::11"))),
    ("ns1:eth0@fd00::11, 10.0.0.11", ("ns1", "eth0", IPv4Address("10.0.0.11"),
                                     IPv6Address("fd00::11"))),
    ("ns1:eth0:10.0.0.11", ("ns1", "eth0", IPv4Address("10.0.0.11"), None)),  # older form
])
def test_uplink_specs(spec: str, want: tuple[object, ...]) -> None:
    assert uplink_spec(spec) == want


@pytest.mark.parametrize(("spec", "words"), [
    ("ns1:eth0@10.0.0.1,10.0.0.2", "two IPv4"),
    ("ns1:eth0@fd00::1,fd00::2", "two IPv6"),
    ("ns1:eth0@node-1", "'node-1' is not an IP address"),
    ("ns1:eth0:fd00::1", "expected [NETNS:]IFNAME@ADDR"),
    ("ns1:@10.0.0.1", "no interface name"),
])
def test_bad_uplink_specs_name_the_spec_and_the_fault(spec: str, words: str) -> None:
    with pytest.raises(ValueError) as e:
        uplink_spec(spec)
    assert spec in str(e.value) and words in str(e.value)
