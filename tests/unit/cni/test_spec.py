"""Wire formats against the CNI spec: result, error and VERSION JSON, and the entry
point's error paths that need no kernel (env, stdin decoding, config, version)."""

from __future__ import annotations

import io
import json
from ipaddress import ip_address, ip_interface, ip_network
from typing import Any

import pytest

from controller.cni.plugin import run
from controller.cni.spec import (
    SUPPORTED_VERSIONS,
    CniError,
    Interface,
    IPConfig,
    Result,
    Route,
    parse_result,
    version_json,
)

RESULT = Result(
    "1.0.0",
    (Interface("rr0123456789a", "aa:bb:cc:00:00:01"),
     Interface("eth0", "aa:bb:cc:00:00:02", "/var/run/netns/p1")),
    (IPConfig(ip_interface("10.244.0.7/32"), ip_address("169.254.1.1"), 1),
     IPConfig(ip_interface("fd00::7/128"), ip_address("fe80::1"), 1)),
    (Route(ip_network("0.0.0.0/0"), ip_address("169.254.1.1")),
     Route(ip_network("::/0"), ip_address("fe80::1"))),
    {"nameservers": ["10.96.0.10"]},
)


def test_result_1_0_shape() -> None:
    assert RESULT.to_json() == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "rr0123456789a", "mac": "aa:bb:cc:00:00:01"},
                       {"name": "eth0", "mac": "aa:bb:cc:00:00:02",
                        "sandbox": "/var/run/netns/p1"}],
        "ips": [{"address": "10.244.0.7/32", "gateway": "169.254.1.1", "interface": 1},
                {"address": "fd00::7/128", "gateway": "fe80::1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}],
        "dns": {"nameservers": ["10.96.0.10"]},
    }


def test_result_for_older_versions_carries_ip_version() -> None:
    old = Result("0.4.0", RESULT.interfaces, RESULT.ips, RESULT.routes).to_json()
    assert [ip["version"] for ip in old["ips"]] == ["4", "6"]
    assert old["cniVersion"] == "0.4.0"


def test_result_round_trips_as_prev_result() -> None:
    assert parse_result(RESULT.to_json()) == RESULT
    old = Result("0.4.0", RESULT.interfaces, RESULT.ips, RESULT.routes).to_json()
    assert parse_result(old).ips == RESULT.ips


def test_error_shape() -> None:
    e = CniError(7, 'invalid network config field "mtu": bad', "more")
    assert e.to_json("0.4.0") == {"cniVersion": "0.4.0", "code": 7,
                                  "msg": 'invalid network config field "mtu": bad',
                                  "details": "more"}
    assert set(e.to_json()) == {"cniVersion", "code", "msg", "details"}


def test_version_json() -> None:
    assert version_json("1.0.0") == {
        "cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    assert version_json("0.3.1")["cniVersion"] == "0.3.1"
    assert version_json("9.9.9")["cniVersion"] == "1.0.0"
    assert list(SUPPORTED_VERSIONS) == version_json(None)["supportedVersions"]


def invoke(env: dict[str, str], stdin: str) -> tuple[int, Any]:
    out = io.StringIO()
    rc = run(env, io.StringIO(stdin), out)
    text = out.getvalue()
    return rc, json.loads(text) if text.strip() else None


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/none",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
CONF = {"cniVersion": "1.0.0", "name": "rackroute", "type": "rackroute-cni",
        "podCIDRs": ["10.244.0.0/24"], "dataDir": "/nonexistent/rackroute-cni-test"}


def test_version_command() -> None:
    rc, out = invoke({"CNI_COMMAND": "VERSION"}, '{"cniVersion": "1.0.0"}')
    assert rc == 0
    assert out == {"cniVersion": "1.0.0",
                   "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    rc, out = invoke({"CNI_COMMAND": "VERSION"}, "")
    assert rc == 0 and out["cniVersion"] == "1.0.0"


@pytest.mark.parametrize("env, stdin, code, msg", [
    ({}, "{}", 4, "invalid environment variable CNI_COMMAND: '' is not one of ADD, DEL, "
     "CHECK, GC, STATUS, VERSION"),
    ({"CNI_COMMAND": "GC"}, json.dumps({**CONF, "cniVersion": "1.0.0"}), 1,
     "GC is not defined for cniVersion 1.0.0"),
    ({"CNI_COMMAND": "GC"}, json.dumps({**CONF, "cniVersion": "1.1.0"}), 7,
     'invalid network config field "cni.dev/valid-attachments": missing (GC needs the '
     "valid attachments)"),
    ({"CNI_COMMAND": "STATUS"}, json.dumps({**CONF, "cniVersion": "1.1.0",
                                            "bpf": {"pinDir": "/nonexistent/pins"}}), 50,
     "the pod datapath is not loaded"),
    (ENV, "{not json", 6, "network config is not valid JSON"),
    ({"CNI_COMMAND": "VERSION"}, "[", 6, "network config is not valid JSON"),
    (ENV, json.dumps({**CONF, "cniVersion": "0.1.0"}), 1, "incompatible CNI version '0.1.0'"),
    (ENV, json.dumps({**CONF, "mtu": 0}), 7, 'invalid network config field "mtu": must be an '
     "integer from 68 to 65535, got 0"),
    (ENV, json.dumps({**CONF, "extra": 1}), 2, 'unsupported network config field "extra"'),
    (ENV, json.dumps(CONF), 4, "invalid environment variable CNI_NETNS: /var/run/netns/none "
     "does not exist"),
    ({**ENV, "CNI_COMMAND": "CHECK"}, json.dumps(CONF), 7, 'invalid network config field '
     '"prevResult": missing (CHECK needs the result of the previous ADD)'),
    ({**ENV, "CNI_COMMAND": "CHECK"}, json.dumps({**CONF, "cniVersion": "0.3.1",
                                                  "prevResult": {"ips": []}}),
     1, "CHECK is not defined for cniVersion 0.3.1"),
])
def test_errors_print_spec_error_json(env: dict[str, str], stdin: str, code: int,
                                      msg: str) -> None:
    rc, out = invoke(env, stdin)
    assert rc != 0
    assert set(out) == {"cniVersion", "code", "msg", "details"}
    assert (out["code"], out["msg"]) == (code, msg)
    assert out["cniVersion"] in SUPPORTED_VERSIONS


def test_error_json_speaks_the_configs_version() -> None:
    rc, out = invoke(ENV, json.dumps({**CONF, "cniVersion": "0.4.0", "mtu": 0}))
    assert rc == 1 and out["cniVersion"] == "0.4.0" and out["code"] == 7
