"""Network config and CNI_* environment validation: codes and exact messages."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from controller.cni.netconf import DEFAULT_DATA_DIR, parse_env, parse_netconf
from controller.cni.spec import CniError


def conf(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": "rackroute", "type": "rackroute-cni",
                            "podCIDRs": ["10.244.0.0/24"], "mtu": 1500,
                            "dataDir": "/var/lib/rackroute/cni/n1",
                            "bpf": {"pinDir": "/sys/fs/bpf/rackroute/n1"}}
    for k, v in over.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def err(raw: Any, **kw: Any) -> CniError:
    with pytest.raises(CniError) as ei:
        parse_netconf(raw, **kw)
    return ei.value


def test_full_config_parses() -> None:
    c = parse_netconf(conf(podCIDRs=["10.244.0.0/24", "fd00:244::/64"], mtu=1450,
                           dns={"nameservers": ["10.96.0.10"], "search": ["svc.local"]}))
    assert c.name == "rackroute" and c.cni_version == "1.0.0"
    assert c.pod_cidrs == (ipaddress.ip_network("10.244.0.0/24"),
                           ipaddress.ip_network("fd00:244::/64"))
    assert c.mtu == 1450
    assert c.data_dir == Path("/var/lib/rackroute/cni/n1")
    assert c.pin_dir == Path("/sys/fs/bpf/rackroute/n1")
    assert c.dns == {"nameservers": ["10.96.0.10"], "search": ["svc.local"]}
    assert c.prev_result is None


def test_defaults() -> None:
    c = parse_netconf(conf(mtu=None, dataDir=None, bpf=None))
    assert c.mtu == 1500 and c.data_dir == DEFAULT_DATA_DIR and c.pin_dir is None
    assert c.policy_wait == 10.0


def test_policy_wait() -> None:
    assert parse_netconf(conf(bpf={"pinDir": "/p", "policyWait": 2.5})).policy_wait == 2.5
    assert parse_netconf(conf(bpf={"pinDir": "/p", "policyWait": 0})).policy_wait == 0.0


@pytest.mark.parametrize("raw, code, msg", [
    (conf(podCIDRs=None), 7,
     'invalid network config field "podCIDRs": must be a non-empty list of CIDRs'),
    (conf(podCIDRs=[]), 7,
     'invalid network config field "podCIDRs": must be a non-empty list of CIDRs'),
    (conf(podCIDRs=["10.244.0.0/24", 5]), 7,
     'invalid network config field "podCIDRs[1]": must be a string, got 5'),
    (conf(podCIDRs=["10.244.0.1/24"]), 7,
     "invalid network config field \"podCIDRs[0]\": '10.244.0.1/24' is not a valid CIDR "
     "(10.244.0.1/24 has host bits set)"),
    (conf(podCIDRs=["10.244.0.0/16", "10.244.1.0/24"]), 7,
     'invalid network config field "podCIDRs[1]": 10.244.1.0/24 overlaps podCIDRs[0] '
     "10.244.0.0/16"),
    (conf(mtu=40), 7, 'invalid network config field "mtu": must be an integer from 68 to '
     "65535, got 40"),
    (conf(mtu="1500"), 7, 'invalid network config field "mtu": must be an integer from 68 to '
     "65535, got '1500'"),
    (conf(mtu=True), 7, 'invalid network config field "mtu": must be an integer from 68 to '
     "65535, got True"),
    (conf(podCIDRs=["fd00::/64"], mtu=1000), 7, 'invalid network config field "mtu": must be '
     "an integer from 1280 to 65535, got 1000"),
    (conf(dataDir="relative/dir"), 7, 'invalid network config field "dataDir": must be an '
     "absolute path, got 'relative/dir'"),
    (conf(bpf={}), 7, 'invalid network config field "bpf.pinDir": missing'),
    (conf(bpf="x"), 7, 'invalid network config field "bpf": must be an object'),
    (conf(bpf={"pinDir": "x"}), 7, 'invalid network config field "bpf.pinDir": must be an '
     "absolute path, got 'x'"),
    (conf(bpf={"pinDir": "/p", "mode": "xdp"}), 2,
     'unsupported network config field "bpf.mode"'),
    (conf(bpf={"pinDir": "/p", "policyWait": -1}), 7, 'invalid network config field '
     '"bpf.policyWait": must be a number of seconds from 0 to 600, got -1'),
    (conf(bpf={"pinDir": "/p", "policyWait": "10s"}), 7, 'invalid network config field '
     "\"bpf.policyWait\": must be a number of seconds from 0 to 600, got '10s'"),
    (conf(name="-bad"), 7, 'invalid network config field "name": must match '
     "^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$, got '-bad'"),
    (conf(name=None), 7, 'invalid network config field "name": must match '
     "^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$, got None"),
    (conf(type=""), 7, "invalid network config field \"type\": must be a non-empty string, "
     "got ''"),
    (conf(cniVersion=None), 7, 'invalid network config field "cniVersion": must be a '
     "non-empty string"),
    (conf(cniVersion="2.0.0"), 1, "incompatible CNI version '2.0.0'"),
    (conf(cniVersion="0.2.0"), 1, "incompatible CNI version '0.2.0'"),
    (conf(podCIDR=["10.0.0.0/24"]), 2, 'unsupported network config field "podCIDR"'),
    (conf(ipam={"type": "host-local"}), 2, 'unsupported network config field "ipam"'),
    (conf(ipMasq=True), 2, 'unsupported network config field "ipMasq"'),
    (conf(dns={"nameservers": ["dns.local"]}), 7, 'invalid network config field '
     "\"dns.nameservers\": 'dns.local' is not an IP address"),
    (conf(dns={"ttl": 5}), 7, 'invalid network config field "dns.ttl": unknown DNS field'),
    (conf(prevResult={"ips": [{"address": "10.0.0.300/32"}]}), 7,
     'invalid network config field "prevResult.ips[0]": \'10.0.0.300/32\' does not appear to '
     "be an IPv4 or IPv6 interface"),
    (conf(prevResult={"interfaces": [], "ips": [{"address": "10.0.0.3/32", "interface": 1}]}),
     7, 'invalid network config field "prevResult.ips[0].interface": index 1 is not in '
     "interfaces"),
    ([1, 2], 7, "invalid network config: must be a JSON object"),
])
def test_bad_config_names_the_field(raw: Any, code: int, msg: str) -> None:
    e = err(raw)
    assert (e.code, e.msg) == (code, msg)


def test_supported_versions_and_generic_fields_accepted() -> None:
    for v in ("0.3.0", "0.3.1", "0.4.0", "1.0.0"):
        assert parse_netconf(conf(cniVersion=v)).cni_version == v
    c = parse_netconf(conf(args={"cni": {}}, runtimeConfig={}, capabilities={}, ipMasq=False,
                           ipam={}))
    assert c.name == "rackroute"


def test_check_needs_prev_result() -> None:
    e = err(conf(), need_prev=True)
    assert (e.code, e.msg) == (7, 'invalid network config field "prevResult": missing '
                                  "(CHECK needs the result of the previous ADD)")
    prev = {"cniVersion": "1.0.0",
            "interfaces": [{"name": "rrabc", "mac": "aa:bb:cc:dd:ee:ff"},
                           {"name": "eth0", "mac": "aa:bb:cc:dd:ee:00", "sandbox": "/n"}],
            "ips": [{"address": "10.244.0.5/32", "gateway": "169.254.1.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]}
    c = parse_netconf(conf(prevResult=prev), need_prev=True)
    assert c.prev_result is not None
    assert c.prev_result.to_json() == {**prev, "dns": {}}


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/var/run/netns/p1",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web-0"}


def env(**over: str | None) -> dict[str, str]:
    out = dict(ENV)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def test_env_parses() -> None:
    e = parse_env(env())
    assert (e.command, e.container_id, e.netns, e.ifname) == ("ADD", "c0ffee",
                                                              "/var/run/netns/p1", "eth0")
    assert e.args == (("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web-0"))
    assert e.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert parse_env({"CNI_COMMAND": "VERSION"}).command == "VERSION"
    # GC and STATUS name no container
    gc = parse_env({"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"})
    assert (gc.command, gc.container_id, gc.path) == ("GC", "", ("/opt/cni/bin",))
    assert parse_env({"CNI_COMMAND": "STATUS"}).command == "STATUS"
    assert parse_env(env(CNI_COMMAND="DEL", CNI_NETNS=None)).netns == ""


@pytest.mark.parametrize("over, msg", [
    ({"CNI_COMMAND": None}, "invalid environment variable CNI_COMMAND: '' is not one of "
     "ADD, DEL, CHECK, GC, STATUS, VERSION"),
    ({"CNI_COMMAND": "gc"}, "invalid environment variable CNI_COMMAND: 'gc' is not one of "
     "ADD, DEL, CHECK, GC, STATUS, VERSION"),
    ({"CNI_CONTAINERID": None}, "invalid environment variable CNI_CONTAINERID: '' must match "
     "^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"),
    ({"CNI_CONTAINERID": "_x"}, "invalid environment variable CNI_CONTAINERID: '_x' must "
     "match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"),
    ({"CNI_IFNAME": "a" * 16}, "invalid environment variable CNI_IFNAME: "
     f"'{'a' * 16}' is not a valid interface name"),
    ({"CNI_IFNAME": "et h0"}, "invalid environment variable CNI_IFNAME: 'et h0' is not a "
     "valid interface name"),
    ({"CNI_IFNAME": ".."}, "invalid environment variable CNI_IFNAME: '..' is not a valid "
     "interface name"),
    ({"CNI_NETNS": None}, "invalid environment variable CNI_NETNS: required for ADD"),
    ({"CNI_COMMAND": "CHECK", "CNI_NETNS": ""}, "invalid environment variable CNI_NETNS: "
     "required for CHECK"),
    ({"CNI_NETNS": "p1"}, "invalid environment variable CNI_NETNS: 'p1' is not an absolute "
     "path"),
    ({"CNI_ARGS": "A=1;B"}, "invalid environment variable CNI_ARGS: 'B' is not KEY=VALUE"),
])
def test_bad_env_is_code_4(over: dict[str, str | None], msg: str) -> None:
    with pytest.raises(CniError) as ei:
        parse_env(env(**over))
    assert (ei.value.code, ei.value.msg) == (4, msg)


def test_gc_valid_attachments() -> None:
    raw = conf(cniVersion="1.1.0")
    raw["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "eth0"},
                                        {"containerID": "c2", "ifname": "net1"}]
    assert parse_netconf(raw).valid_attachments == {("c1", "eth0"), ("c2", "net1")}
    older = conf(cniVersion="1.1.0")
    older["cni.dev/attachments"] = []  # the key libcni also sets
    assert parse_netconf(older).valid_attachments == frozenset()
    assert parse_netconf(conf()).valid_attachments is None
    bad = conf(cniVersion="1.1.0")
    bad["cni.dev/valid-attachments"] = [{"containerID": "c1"}]
    with pytest.raises(CniError) as ei:
        parse_netconf(bad)
    assert ei.value.msg == ('invalid network config field "cni.dev/valid-attachments[0]": '
                            "must be an object with string containerID and ifname")
