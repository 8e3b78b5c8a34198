"""CNI_ARGS IP=: parsed into requested addresses, bad values refused with code 4."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from controller.cni.netconf import Env
from controller.cni.plugin import requested_ips
from controller.cni.spec import ERR_INVALID_ENV, CniError


def env(args: tuple[tuple[str, str], ...]) -> Env:
    return Env("ADD", "c1", "/run/netns/x", "eth0", args, "")


def test_requested_ips_from_cni_args() -> None:
    assert requested_ips(env((("IgnoreUnknown", "1"), ("IP", "10.0.0.5,fd00::5")))) == [
        ip_address("10.0.0.5"),
        ip_address("fd00::5"),
    ]
    assert requested_ips(env((("K8S_POD_NAME", "web"),))) == []


def test_bad_requested_ip_is_an_env_error() -> None:
    with pytest.raises(CniError) as e:
        requested_ips(env((("IP", "10.0.0.300"),)))
    assert e.value.code == ERR_INVALID_ENV
    assert "IP='10.0.0.300' is not an IP address" in e.value.msg
