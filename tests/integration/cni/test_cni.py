"""rackroute-cni end to end: ADD/CHECK/DEL against real namespaces, double DEL, ADD
twice, concurrent ADDs, dual stack, and rollback of a failed ADD."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from typing import Any

from controller.cni.netsetup import host_ifname
from controller.kernel.routes import RTPROT_RACKROUTE

from .conftest import HOST_ADDR, HOST_ADDR6, CniLab, ns_json, sh


def links(ns: str) -> dict[str, dict[str, Any]]:
    return {ln["ifname"]: ln for ln in ns_json(ns, "link", "show")}


def host_routes(lab: CniLab, dst: str) -> list[dict[str, Any]]:
    fam = "-6" if ":" in dst else "-4"
    return [r for r in ns_json(lab.host, fam, "route", "show", "proto", "all")
            if r.get("dst") == dst]


def test_add_builds_a_routed_veth(lab: CniLab) -> None:
    pod = lab.pod()
    res = lab.add("web-0", pod)
    host = host_ifname("web-0", "eth0")
    assert len(host) == 13 and host.startswith("rr")
    assert res["cniVersion"] == "1.0.0"
    hl, pl = links(lab.host)[host], links(pod)["eth0"]
    assert res["interfaces"] == [
        {"name": host, "mac": hl["address"]},
        {"name": "eth0", "mac": pl["address"], "sandbox": lab.netns_path(pod)}]
    assert res["ips"] == [{"address": "10.244.0.1/32", "gateway": "169.254.1.1",
                           "interface": 1}]
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    assert res["dns"] == {}
    assert pl["mtu"] == 1400 and hl["mtu"] == 1400
    addrs = ns_json(pod, "-4", "addr", "show", "dev", "eth0")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [("10.244.0.1", 32)]
    default = [r for r in ns_json(pod, "-4", "route") if r["dst"] == "default"]
    assert default and default[0]["gateway"] == "169.254.1.1" and default[0]["dev"] == "eth0"
    routes = host_routes(lab, "10.244.0.1")
    assert routes and routes[0]["dev"] == host
    assert routes[0]["protocol"] in (str(RTPROT_RACKROUTE), RTPROT_RACKROUTE)
    assert sh("ip", "netns", "exec", lab.host, "sysctl", "-n",
              f"net.ipv4.conf.{host}.proxy_arp").stdout.strip() == "1"
    ping = sh("ip", "netns", "exec", pod, "ping", "-c", "2", "-W", "2", HOST_ADDR, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_check_passes_then_fails_when_the_pod_route_is_gone(lab: CniLab) -> None:
    pod = lab.pod()
    res = lab.add("web-1", pod)
    ok = lab.call("CHECK", "web-1", pod, prev=res)
    assert (ok.rc, ok.out) == (0, None), ok.stderr
    sh("ip", "-n", pod, "route", "del", "default")
    bad = lab.call("CHECK", "web-1", pod, prev=res)
    assert bad.rc != 0
    assert set(bad.out) == {"cniVersion", "code", "msg", "details"}
    assert bad.out["code"] == 104 and bad.out["msg"] == "pod network check failed"
    assert bad.out["details"] == "route 0.0.0.0/0 via 169.254.1.1 dev eth0 is missing in " \
        + lab.netns_path(pod)


def test_check_notices_a_missing_host_route_and_a_gone_netns(lab: CniLab) -> None:
    pod = lab.pod()
    res = lab.add("web-2", pod)
    sh("ip", "-n", lab.host, "route", "del", "10.244.0.1/32")
    bad = lab.call("CHECK", "web-2", pod, prev=res)
    assert bad.out["code"] == 104
    assert "host route 10.244.0.1/32" in bad.out["details"]
    sh("ip", "netns", "del", pod)
    gone = lab.call("CHECK", "web-2", pod, prev=res)
    assert gone.rc != 0 and gone.out["code"] in (3, 104)


def test_del_removes_everything_and_is_idempotent(lab: CniLab) -> None:
    pod = lab.pod()
    lab.add("web-3", pod)
    host = host_ifname("web-3", "eth0")
    d = lab.call("DEL", "web-3", pod)
    assert (d.rc, d.out) == (0, None), d.stderr
    assert host not in links(lab.host)
    assert "eth0" not in links(pod)
    assert host_routes(lab, "10.244.0.1") == []
    assert list((lab.data_dir / "ips").iterdir()) == []
    assert json.loads((lab.data_dir / "index.json").read_text())["owners"] == {}
    again = lab.call("DEL", "web-3", pod)
    assert (again.rc, again.out) == (0, None)
    no_netns = lab.call("DEL", "web-3", None)
    assert no_netns.rc == 0


def test_del_of_unknown_container_and_of_a_vanished_netns(lab: CniLab) -> None:
    pod = lab.pod()
    never = lab.call("DEL", "never-added", pod)
    assert (never.rc, never.out) == (0, None), never.stderr
    lab.add("web-4", pod)
    sh("ip", "netns", "del", pod)  # the runtime tore the sandbox down first
    gone = lab.call("DEL", "web-4", pod)
    assert gone.rc == 0, gone.out
    assert host_ifname("web-4", "eth0") not in links(lab.host)
    assert list((lab.data_dir / "ips").iterdir()) == []
    # the address is free again (after the round-robin cursor wraps, it is reused)
    assert lab.add("web-5", lab.pod())["ips"][0]["address"] == "10.244.0.2/32"


def test_add_twice_is_an_error_and_keeps_the_first(lab: CniLab) -> None:
    pod = lab.pod()
    first = lab.add("web-6", pod)
    second = lab.call("ADD", "web-6", pod)
    assert second.rc != 0
    assert second.out["code"] == 101 and second.out["msg"] == "container already added"
    ok = lab.call("CHECK", "web-6", pod, prev=first)
    assert ok.rc == 0, ok.out


def test_failed_add_rolls_back(lab: CniLab) -> None:
    pod = lab.pod()
    sh("ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    r = lab.call("ADD", "web-7", pod)
    assert r.rc != 0 and r.out["code"] == 102
    assert r.out["details"] == f"interface eth0 already exists in {lab.netns_path(pod)}"
    assert host_ifname("web-7", "eth0") not in links(lab.host)
    assert list((lab.data_dir / "ips").iterdir()) == []


def test_pool_exhausted(lab: CniLab) -> None:
    a, b = lab.pod(), lab.pod()
    lab.add("only", a, podCIDRs=["10.244.0.0/32"])
    r = lab.call("ADD", "more", b, podCIDRs=["10.244.0.0/32"])
    assert r.rc != 0 and r.out["code"] == 100
    assert r.out["msg"] == "pod address pool exhausted"
    assert "10.244.0.0/32" in r.out["details"]


def test_ten_concurrent_adds_get_distinct_addresses(lab: CniLab) -> None:
    pods = [lab.pod() for _ in range(10)]
    procs = [subprocess.Popen(lab.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=lab.env("ADD", f"par-{i}", pod))
             for i, pod in enumerate(pods)]
    outs = [p.communicate(lab.stdin(), timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, [o[0] + o[1] for o in outs]
    ips = [json.loads(o[0])["ips"][0]["address"] for o in outs]
    assert len(set(ips)) == 10
    for pod, ip in zip(pods, ips, strict=True):
        got = ns_json(pod, "-4", "addr", "show", "dev", "eth0")[0]["addr_info"]
        assert f"{got[0]['local']}/32" == ip
    assert len([n for n in links(lab.host) if n.startswith("rr")]) == 10


def test_dual_stack(lab: CniLab) -> None:
    pod = lab.pod()
    res = lab.add("ds-0", pod, podCIDRs=["10.244.0.0/24", "fd00:244::/64"])
    assert [ip["address"] for ip in res["ips"]] == ["10.244.0.1/32", "fd00:244::1/128"]
    assert res["routes"][1] == {"dst": "::/0", "gw": "fe80::1"}
    assert host_routes(lab, "fd00:244::1")[0]["dev"] == host_ifname("ds-0", "eth0")
    for target in (HOST_ADDR, HOST_ADDR6):
        ping = sh("ip", "netns", "exec", pod, "ping", "-c", "1", "-W", "2", target,
                  check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    ok = lab.call("CHECK", "ds-0", pod, prev=res, podCIDRs=["10.244.0.0/24", "fd00:244::/64"])
    assert ok.rc == 0, ok.out


def test_older_config_version_gets_its_result_shape(lab: CniLab) -> None:
    pod = lab.pod()
    res = lab.add("old-0", pod, cniVersion="0.4.0")
    assert res["cniVersion"] == "0.4.0"
    assert res["ips"][0] == {"version": "4", "address": "10.244.0.1/32",
                             "gateway": "169.254.1.1", "interface": 1}
    ok = lab.call("CHECK", "old-0", pod, prev=res, cniVersion="0.4.0")
    assert ok.rc == 0, ok.out


def test_runtime_style_proc_netns_path(lab: CniLab) -> None:
    """Runtimes often pass /proc/<pid>/ns/net of the sandbox's pause process."""
    sandbox = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        nspath = f"/proc/{sandbox.pid}/ns/net"
        for _ in range(100):  # wait until unshare has exec'd sleep in the new netns
            if os.readlink(nspath) != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.02)
        env = {**lab.env("ADD", "pause-0", None), "CNI_NETNS": nspath}
        p = subprocess.run(lab.argv(), input=lab.stdin(), capture_output=True, text=True,
                           env=env, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        res = json.loads(p.stdout)
        assert res["interfaces"][1]["sandbox"] == nspath
        ping = subprocess.run(["nsenter", f"--net={nspath}", "ping", "-c", "1", "-W", "2",
                               HOST_ADDR], capture_output=True, text=True, timeout=30)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        env["CNI_COMMAND"] = "DEL"
        d = subprocess.run(lab.argv(), input=lab.stdin(), capture_output=True, text=True,
                           env=env, timeout=60)
        assert d.returncode == 0, d.stdout
        assert host_ifname("pause-0", "eth0") not in links(lab.host)
    finally:
        sandbox.kill()
        sandbox.wait(10)


def test_gc_releases_what_the_runtime_no_longer_knows(lab: CniLab) -> None:
    """GC (spec 1.1.0) with the still-valid attachments: a leaked one (its DEL never came)
    loses its address, its host veth and its pod record; the valid one keeps all three,
    and a second GC changes nothing. STATUS answers 0 (no datapath asked for)."""
    from controller.cni import podrecords

    pods = {cid: lab.pod() for cid in ("gc-keep", "gc-leak")}
    addrs = {cid: lab.add(cid, pod)["ips"][0]["address"].split("/")[0]
             for cid, pod in pods.items()}
    for cid in pods:
        podrecords.write_record(lab.data_dir, cid, "eth0", "web", cid, "",
                                [ipaddress.ip_address(addrs[cid])])
    valid = {"cni.dev/valid-attachments": [{"containerID": "gc-keep", "ifname": "eth0"}]}
    for _ in range(2):
        r = lab.call("GC", "unused", None, cniVersion="1.1.0", **valid)
        assert r.rc == 0 and r.out is None, (r.out, r.stderr)
        links = sh("ip", "-n", lab.host, "-o", "link").stdout
        assert host_ifname("gc-keep", "eth0") in links
        assert host_ifname("gc-leak", "eth0") not in links
        assert sorted(p.name for p in (lab.data_dir / "ips").iterdir()) == [addrs["gc-keep"]]
        assert sorted(p.name for p in (lab.data_dir / "pods").glob("*.json")) == [
            "gc-keep-eth0.json"]
    assert f"event=cni_gc gc-keep/eth0: released {addrs['gc-keep']}" in \
        lab.call("GC", "unused", None, cniVersion="1.1.0", **{
            "cni.dev/valid-attachments": []}).stderr  # and now the other, on request
    assert list((lab.data_dir / "ips").iterdir()) == []
    assert lab.call("STATUS", "unused", None, cniVersion="1.1.0").rc == 0


def test_a_pod_record_goes_once_its_sandbox_network_is_gone(lab: CniLab) -> None:
    """A sandbox whose netns went without a DEL (a crashed runtime or node) takes its host
    veth with it; the agent's side of the pod records (asked in the plugin's namespace,
    as the agent runs) then removes its record, and keeps the live pod's."""
    from controller.cni import podrecords
    from controller.cni.netsetup import host_veth_present
    from controller.lab.netns import entered, wait_for

    pods = {cid: lab.pod() for cid in ("rec-live", "rec-lost")}
    for cid, pod in pods.items():
        ip = lab.add(cid, pod)["ips"][0]["address"].split("/")[0]
        podrecords.write_record(lab.data_dir, cid, "eth0", "web", cid, "",
                                [ipaddress.ip_address(ip)])

    def present(r: podrecords.PodRecord) -> bool:
        return host_veth_present(r.container_id, r.ifname)

    d = podrecords.PodRecordDir(lab.data_dir, present)
    assert not host_veth_present("rec-live", "eth0")  # not in this test's namespace
    with entered(lab.host):
        assert [r.key for r in d.records()[0]] == ["rec-live-eth0", "rec-lost-eth0"]
        sh("ip", "netns", "del", pods["rec-lost"])
        lab.pods.remove(pods["rec-lost"])
        wait_for(lambda: not host_veth_present("rec-lost", "eth0"), 10, 0.05,
                 "the lost sandbox's host veth gone with its netns")
        assert [r.key for r in d.records()[0]] == ["rec-live-eth0"]
    assert sorted(p.name for p in (lab.data_dir / "pods").iterdir()) == ["rec-live-eth0.json"]
