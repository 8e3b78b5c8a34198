"""Network policy on real pods: the CNI plugin attaches the pinned policy programs to each
new pod's own interface (in its namespace), bpf/policy.py writes a compiled plan into the
maps, and real connections between the pods are allowed or refused as the policy says:
a TCP port allowed from one pod, refused from another and on another port, ICMP refused,
replies passing, a pod under no policy reached freely. The pods reach each other through
the host's pod programs (forwarding in BPF hands packets straight into the pod), so the
policy holds on that path too. Removing the policy lets everything through again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from bpf.loader import Datapath, DatapathConfig, open_maps, remove_pins
from bpf.mapstore import PinnedMap
from bpf.policy import PolicyMaps
from bpf.progpin import pin_programs, pinned_programs
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey
from controller.cni.bpfattach import _bpf_filter_names
from controller.desired.policy import compile_policies
from controller.model.meta import Meta, frozen_map
from controller.model.policy import Pod, PolicyPeer, PolicyPort, PolicyRule
from tests.unit.policy.test_compile import NAMESPACES, policy, sel

from .conftest import HOST_ADDR, HOST_ADDR6, CniLab, sh

PIN_ROOT = Path(f"/sys/fs/bpf/rackroute-cnipol-{os.getpid()}")
VIP_API, VIP_FRONT = "10.96.44.4", "10.96.44.5"
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(b"ok"); c.close()
"""
UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535); s.sendto(str(len(data)).encode(), peer)
"""
UDP_CLIENT = """
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(1.0)
c.sendto(b"x" * int(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
try:
    print(c.recv(64).decode())
except OSError as e:
    print(type(e).__name__)
"""
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0)
    print(c.recv(2).decode())
except OSError as e:
    print(type(e).__name__)
"""


@pytest.fixture(scope="module")
def pin_dir() -> Iterator[Path]:
    cfg = DatapathConfig("cnipol", pin_root=PIN_ROOT, network_policy=True)
    dp = Datapath(cfg)
    try:
        dp.load(("pod", "policy"))
        pin_programs(dp)
        yield cfg.pin_dir
    finally:
        dp.close()
        remove_pins(cfg)
        if PIN_ROOT.is_dir() and not any(PIN_ROOT.iterdir()):
            PIN_ROOT.rmdir()


def connect(pod_ns: str, ip: str, port: int) -> str:
    return sh("ip", "netns", "exec", pod_ns, sys.executable, "-c", CLIENT, ip,
              str(port)).stdout.strip()


def ping(pod_ns: str, ip: str) -> bool:
    return sh("ip", "netns", "exec", pod_ns, "ping", "-c", "1", "-W", "1", ip,
              check=False).returncode == 0


def test_policy_on_real_pods(lab: CniLab, pin_dir: Path) -> None:
    assert {"rr_pol_to_pod", "rr_pol_from_pod"} <= set(pinned_programs(pin_dir))
    sh("ip", "netns", "exec", lab.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", lab.host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    conf = {"pinDir": str(pin_dir)}
    names = {"front": lab.pod(), "api": lab.pod(), "other": lab.pod()}
    ips, ips6 = {}, {}
    for role, ns in names.items():
        res = lab.add(f"pol-{role}", ns, bpf=conf,
                      podCIDRs=["10.244.0.0/24", "fd00:244::/64"])
        addrs = [a["address"].split("/")[0] for a in res["ips"]]
        ips[role] = next(a for a in addrs if ":" not in a)
        ips6[role] = next(a for a in addrs if ":" in a)
    # the policy programs sit on the pods' own interfaces
    from pyroute2 import IPRoute

    with IPRoute(netns=names["api"], flags=0) as ipr:
        idx = ipr.link_lookup(ifname="eth0")[0]
        ingress = [n for n in _bpf_filter_names(ipr, idx, 0xFFFFFFF2) if n]
        egress = [n for n in _bpf_filter_names(ipr, idx, 0xFFFFFFF3) if n]
        assert ingress == ["rr_pol_to_pod"] and egress == ["rr_pol_from_pod"]
    servers = [subprocess.Popen(["ip", "netns", "exec", names[r], sys.executable, "-c",
                                 SERVER, str(port)])
               for r in ("api", "front") for port in (8080, 9090)]
    pm = PolicyMaps(PinnedMap.open(str(pin_dir / "rr_pol_eps")),
                    PinnedMap.open(str(pin_dir / "rr_pol")),
                    PinnedMap.open(str(pin_dir / "rr_pol_node")))
    try:
        time.sleep(0.5)
        # before any policy: everything passes
        assert connect(names["other"], ips["api"], 9090) == "ok"
        pods = [Pod(Meta("Pod", role, "web", labels=frozen_map({"app": role})), "n1",
                    (ip_address(ip), ip_address(ips6[role]))) for role, ip in ips.items()]
        api_policy = policy("api", "web", sel(app="api"), ingress=[PolicyRule(
            (PolicyPeer(pod_selector=sel(app="front")),), (PolicyPort("TCP", 8080),))])
        plan = compile_policies([api_policy], pods, NAMESPACES, "n1")
        assert pm.sync(plan.endpoints) == []
        assert connect(names["front"], ips["api"], 8080) == "ok"  # reply passes too
        # over IPv6 as well (neighbour discovery into the isolated pod passes)
        assert connect(names["front"], ips6["api"], 8080) == "ok"
        assert connect(names["other"], ips6["api"], 8080) == "TimeoutError"
        assert connect(names["front"], ips["api"], 9090) == "TimeoutError"
        assert connect(names["other"], ips["api"], 8080) == "TimeoutError"
        assert not ping(names["front"], ips["api"])  # tcp/8080 only
        # the node (the kubelet's probes) reaches the isolated pod once its addresses are
        # known as the node's
        assert connect(lab.host, ips["api"], 9090) == "TimeoutError"
        assert pm.sync_node([ip_address(HOST_ADDR), ip_address(HOST_ADDR6)]) == []
        assert connect(lab.host, ips["api"], 9090) == "ok"
        # api is not isolated for egress, front not at all: api reaches front freely
        assert connect(names["api"], ips["front"], 9090) == "ok"
        assert ping(names["other"], ips["front"])
        # two pods of the node both under policy: other may send to api:8080, but api
        # takes front only; other's decision does not stand for api's
        other_out = policy("other-out", "web", sel(app="other"), egress=[PolicyRule(
            (PolicyPeer(pod_selector=sel(app="api")),), (PolicyPort("TCP", 8080),))])
        front_out = policy("front-out", "web", sel(app="front"), egress=[PolicyRule(
            (PolicyPeer(pod_selector=sel(app="api")),), (PolicyPort("TCP", 8080),))])
        plan = compile_policies([api_policy, other_out, front_out], pods, NAMESPACES, "n1")
        assert pm.sync(plan.endpoints) == []
        assert connect(names["other"], ips["api"], 8080) == "TimeoutError"
        assert connect(names["front"], ips["api"], 8080) == "ok"
        # a service balanced by the pod programs: egress is decided on its backend (the
        # service address is in no policy); front may reach api:8080 behind it, not
        # front:9090 behind the other; api is not egress-isolated and reaches both
        svc_maps = open_maps(DatapathConfig("cnipol", pin_root=PIN_ROOT))
        try:
            table = {ServiceKey(ip_address(VIP_API), 80, Proto.TCP):
                     Service((Backend(ip_address(ips["api"]), 8080),)),
                     ServiceKey(ip_address(VIP_FRONT), 80, Proto.TCP):
                     Service((Backend(ip_address(ips["front"]), 9090),))}
            assert not Syncer(svc_maps).sync(table).errors
        finally:
            for mp in (svc_maps.svc, svc_maps.backend, svc_maps.maglev, svc_maps.vips,
                       svc_maps.ranges):
                mp.close()  # type: ignore[union-attr]
        assert connect(names["front"], VIP_API, 80) == "ok"
        assert connect(names["api"], VIP_FRONT, 80) == "ok"
        assert connect(names["front"], VIP_FRONT, 80) == "ok"  # itself: always allowed
        assert connect(names["other"], VIP_FRONT, 80) == "TimeoutError"  # other-out
        assert connect(names["other"], VIP_API, 80) == "TimeoutError"  # api's ingress
        # a datagram larger than the MTU crosses in fragments, the later ones without
        # ports: they pass as their first fragment did (allowed from front on udp/5353)
        udp_in = policy("api-udp", "web", sel(app="api"), ingress=[PolicyRule(
            (PolicyPeer(pod_selector=sel(app="front")),), (PolicyPort("UDP", 5353),))])
        plan = compile_policies([api_policy, udp_in], pods, NAMESPACES, "n1")
        assert pm.sync(plan.endpoints) == []
        servers.append(subprocess.Popen(["ip", "netns", "exec", names["api"],
                                         sys.executable, "-c", UDP_SERVER, "5353"]))
        time.sleep(0.3)

        def udp(src: str, size: int) -> str:
            return sh("ip", "netns", "exec", names[src], sys.executable, "-c", UDP_CLIENT,
                      ips["api"], "5353", str(size)).stdout.strip()

        assert udp("front", 100) == "100"
        assert udp("front", 4000) == "4000"  # three fragments
        assert udp("other", 4000) == "TimeoutError"
        # the policy gone: api open again
        assert pm.sync({}) == []
        assert connect(names["other"], ips["api"], 8080) == "ok"
        assert ping(names["front"], ips["api"])
    finally:
        for s in servers:
            s.kill()
            s.wait(5)
        for port in (pm.eps, pm.rules, pm.node):
            port.close()  # type: ignore[union-attr]


def test_policy_alone_on_pods_whose_veths_carry_no_program(
        lab: CniLab, pin_dir: Path, tmp_path: Path) -> None:
    """Without per-packet LB and with kernel host routing the agent leaves the pods' veths
    bare, yet enforces policy: its conflist says bpf.podPrograms false, and ADD attaches
    the policy programs to the new pod's own interface and nothing to its host veth;
    CHECK passes; with nothing pinned (no agent yet) ADD is still refused."""
    from pyroute2 import IPRoute

    from controller.cni.netsetup import host_ifname

    conf = {"pinDir": str(pin_dir), "podPrograms": False}
    pod = lab.pod()
    res = lab.add("polonly-0", pod, bpf=conf)
    host = host_ifname("polonly-0", "eth0")
    for where in ("ingress", "egress"):
        shown = sh("ip", "netns", "exec", lab.host, "tc", "filter", "show", "dev", host,
                   where).stdout
        assert "bpf" not in shown, (where, shown)
    with IPRoute(netns=pod, flags=0) as ipr:
        idx = ipr.link_lookup(ifname="eth0")[0]
        assert [n for n in _bpf_filter_names(ipr, idx, 0xFFFFFFF2) if n] == ["rr_pol_to_pod"]
        assert [n for n in _bpf_filter_names(ipr, idx, 0xFFFFFFF3) if n] == ["rr_pol_from_pod"]
    ok = lab.call("CHECK", "polonly-0", pod, prev=res, bpf=conf)
    assert (ok.rc, ok.out) == (0, None), ok.stderr
    assert lab.call("DEL", "polonly-0", pod, bpf=conf).rc == 0
    missing = lab.call("ADD", "polonly-1", lab.pod(),
                       bpf={"pinDir": str(tmp_path / "nopins"), "podPrograms": False})
    assert missing.rc != 0 and missing.out["code"] == 103, missing
