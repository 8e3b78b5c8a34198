"""The network policy programs (bpf/src/policy.c), compiled and loaded with real maps that
bpf/policy.py fills from a compiled plan, run on packets with BPF_PROG_TEST_RUN: a new
flow passes where an entry allows its protocol and port and is dropped elsewhere, for
ingress and egress, IPv4 and IPv6, TCP, UDP and ICMP; the replies of a flow that passed
pass whatever the other direction's policy; a pod under no policy is untouched; the
endpoint ids survive a resync, and a pod leaving policy is let go."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from bpf.libbpf import percpu_lookup, prog_test_run
from bpf.loader import Datapath, DatapathConfig
from bpf.mapstore import PinnedMap
from bpf.policy import PolicyMaps, read_drops, read_stats
from bpf.sync import Syncer
from bpf.table import Backend, Proto, Service, ServiceKey
from controller.desired.policy import EndpointPolicy, compile_policies
from controller.model.policy import IPBlock, Pod, PolicyPeer, PolicyPort, PolicyRule
from tests.unit.policy.test_compile import NAMESPACES, pod, policy, sel

from .test_checksums import packet as tcp_packet
from .test_checksums import parse

TC_ACT_OK, TC_ACT_SHOT = 0, 2
PIN_ROOT = Path(f"/sys/fs/bpf/rackroute-poltest-{os.getpid()}")

FRONT = pod("front", "web", "10.0.1.10", app="front")
API = pod("api", "web", "10.0.1.11", app="api")
VAULT = pod("vault", "web", "10.0.1.12", app="vault")
V6 = pod("v6", "web", "fd00:1::12", app="v6")
PROBE = pod("probe", "ops", "10.0.3.30", node="n2", app="probe")
PODS = [FRONT, API, VAULT, V6, PROBE]
POLICIES = [
    # api: only front, on tcp/8080, or anything by ICMP from front
    policy("api", "web", sel(app="api"), ingress=[
        PolicyRule((PolicyPeer(pod_selector=sel(app="front")),), (PolicyPort("TCP", 8080),))]),
    # front: out to api (anything) and to udp/53 anywhere
    policy("front", "web", sel(app="front"), egress=[
        PolicyRule((PolicyPeer(pod_selector=sel(app="api")),)),
        PolicyRule(None, (PolicyPort("UDP", 53),))]),
    # vault: isolated both ways; out to 192.0.2.0/24 on tcp/443 only, nothing in
    policy("vault", "web", sel(app="vault"), ingress=[], egress=[
        PolicyRule((PolicyPeer(ip_block=IPBlock(ip_network("192.0.2.0/24"))),),
                   (PolicyPort("TCP", 443),))]),
    # v6: in from fd00::/64 only
    policy("v6", "web", sel(app="v6"), ingress=[
        PolicyRule((PolicyPeer(ip_block=IPBlock(ip_network("fd00::/64"))),))]),
]


def packet(src: str, dst: str, proto: str = "tcp", sport: int = 40000,
           dport: int = 80, icmp_type: int | None = None, flags: int = 0x02,
           ext: tuple[int, ...] = (), frag: tuple[int, int, bool] | None = None) -> bytes:
    """An Ethernet frame; ext: IPv6 extension headers (their types) before the transport
    header, 8 bytes each (a fragment header: an atomic fragment); frag: a fragment (id,
    offset in 8-byte units, more fragments), a later one (offset > 0) without its
    transport header (an IPv6 one with a fragment header)."""
    s, d = ip_address(src), ip_address(dst)
    if proto == "icmp":
        echo = 8 if s.version == 4 else 128
        l4 = bytes([echo if icmp_type is None else icmp_type, 0]) + bytes(6)
        num = 1 if s.version == 4 else 58
    elif proto == "gre":
        l4, num = bytes(8), 47
    elif proto == "udp":
        l4 = struct.pack("!HHHH", sport, dport, 8, 0)
        num = 17
    else:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)
        num = 6
    ident, off = 1, 0
    if frag is not None:
        ident, units, more = frag
        off = units | (0x2000 if more else 0)
        if units:
            l4 = bytes(range(16))  # the middle of the packet's payload
        if s.version == 6:
            ext = (*ext, 44)
    if s.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, off, 64, num, 0,
                         s.packed, d.packed)
        eth_type = b"\x08\x00"
    else:
        chain = b""
        for i, typ in enumerate(ext):
            nxt = ext[i + 1] if i + 1 < len(ext) else num
            if typ == 44:
                fo = (off & 0x1fff) << 3 | (1 if off & 0x2000 else 0)
                chain += struct.pack("!BBHI", nxt, 0, fo, ident)
            else:
                chain += bytes([nxt, 0]) + b"\x01\x04" + bytes(4)
        first = ext[0] if ext else num
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(chain) + len(l4), first, 64, s.packed,
                         d.packed) + chain
        eth_type = b"\x86\xdd"
    return b"\x02" * 6 + b"\x04" * 6 + eth_type + ip + l4 + bytes(16)


@pytest.fixture(scope="module")
def progs() -> Iterator[tuple[dict[str, int], PolicyMaps, Path]]:
    cfg = DatapathConfig("pol", pin_root=PIN_ROOT, network_policy=True)
    dp = Datapath(cfg)
    maps: list[PinnedMap] = []
    try:
        dp.load(("policy",))
        for name in ("rr_pol_eps", "rr_pol", "rr_pol_node", "rr_pol_drops"):
            maps.append(PinnedMap.open(str(cfg.pin_dir / name)))
        yield dp.fds, PolicyMaps(maps[0], maps[1], maps[2], maps[3]), cfg.pin_dir
    finally:
        for pm in maps:
            pm.close()
        dp.close()
        shutil.rmtree(PIN_ROOT, ignore_errors=True)


def plan(pods: list[Pod] = PODS) -> dict[str, EndpointPolicy]:
    return dict(compile_policies(POLICIES, pods, NAMESPACES, "n1").endpoints)


def verdict(fds: dict[str, int], prog: str, pkt: bytes) -> int:
    return prog_test_run(fds[prog], pkt, 1)[0]


def test_policy_decisions(progs: tuple[dict[str, int], PolicyMaps, Path]) -> None:
    fds, maps, pin_dir = progs
    assert maps.sync(plan()) == []
    to_pod, from_pod = "rr_pol_to_pod", "rr_pol_from_pod"
    # ingress of api: front on tcp/8080 only
    assert verdict(fds, to_pod, packet("10.0.1.10", "10.0.1.11", dport=8080)) == TC_ACT_OK
    assert verdict(fds, to_pod, packet("10.0.1.10", "10.0.1.11", dport=9090)) == TC_ACT_SHOT
    assert verdict(fds, to_pod, packet("10.0.3.30", "10.0.1.11", dport=8080)) == TC_ACT_SHOT
    assert verdict(fds, to_pod, packet("10.0.1.10", "10.0.1.11", "icmp")) == TC_ACT_SHOT
    # api's reply to front's connection: passes (api is not egress-isolated anyway)
    assert verdict(fds, from_pod, packet("10.0.1.11", "10.0.1.10", sport=8080,
                                         dport=40000)) == TC_ACT_OK
    # egress of front: to api anything, udp/53 anywhere, nothing else
    assert verdict(fds, from_pod, packet("10.0.1.10", "10.0.1.11", "udp", dport=7)) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.1.10", "10.0.1.11", "icmp")) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.1.10", "198.51.100.1", "udp",
                                         dport=53)) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.1.10", "198.51.100.1", dport=53)) == TC_ACT_SHOT
    # both ends under policy on this node: front may send api anything, api takes
    # tcp/8080 only; front's decision does not stand for api's (nor api's for front's)
    assert verdict(fds, from_pod, packet("10.0.1.10", "10.0.1.11", sport=40100,
                                         dport=9090)) == TC_ACT_OK
    assert verdict(fds, to_pod, packet("10.0.1.10", "10.0.1.11", sport=40100,
                                       dport=9090)) == TC_ACT_SHOT
    assert verdict(fds, to_pod, packet("10.0.1.10", "10.0.1.11", sport=40101,
                                       dport=8080)) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.1.10", "10.0.1.11", sport=40101,
                                         dport=8080)) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.1.11", "10.0.1.10", sport=8080,
                                         dport=40101)) == TC_ACT_OK  # api's reply leaves
    assert verdict(fds, to_pod, packet("10.0.1.11", "10.0.1.10", sport=8080,
                                       dport=40101)) == TC_ACT_OK  # and reaches front
    # vault: out to 192.0.2.0/24 tcp/443; its reply comes back in although nothing may
    # come in; a new connection in is dropped
    assert verdict(fds, from_pod, packet("10.0.1.12", "192.0.2.5", sport=41000,
                                         dport=443)) == TC_ACT_OK
    assert verdict(fds, to_pod, packet("192.0.2.5", "10.0.1.12", sport=443,
                                       dport=41000)) == TC_ACT_OK
    assert verdict(fds, to_pod, packet("192.0.2.5", "10.0.1.12", sport=443,
                                       dport=41001)) == TC_ACT_SHOT
    assert verdict(fds, from_pod, packet("10.0.1.12", "192.0.2.5", dport=80)) == TC_ACT_SHOT
    assert verdict(fds, from_pod, packet("10.0.1.12", "192.0.3.5", dport=443)) == TC_ACT_SHOT
    # IPv6: v6 takes anything from fd00::/64
    assert verdict(fds, to_pod, packet("fd00::5", "fd00:1::12", "udp", dport=9)) == TC_ACT_OK
    assert verdict(fds, to_pod, packet("fd00::5", "fd00:1::12", "icmp")) == TC_ACT_OK
    assert verdict(fds, to_pod, packet("fd01::5", "fd00:1::12", dport=22)) == TC_ACT_SHOT
    # IPv6 extension headers are walked to the transport header: the port decides, as
    # without them; a packet whose transport is not found is refused where isolated
    for ext in ((60,), (0, 43), (44,), (0, 60, 60, 43, 60)):
        assert verdict(fds, to_pod, packet("fd01::5", "fd00:1::12", dport=22,
                                           ext=ext)) == TC_ACT_SHOT, ext
        assert verdict(fds, to_pod, packet("fd00::5", "fd00:1::12", "udp", dport=9,
                                           ext=ext)) == TC_ACT_OK, ext
    assert verdict(fds, to_pod, packet("fd00::5", "fd00:1::12", dport=22,
                                       ext=(60,) * 7)) == TC_ACT_SHOT  # too many
    assert verdict(fds, to_pod, packet("fd01::5", "fd00:1::99", dport=22,
                                       ext=(60,) * 7)) == TC_ACT_OK  # under no policy
    # ICMP errors and IPv6 neighbour discovery pass whatever the policy (path MTU, ND);
    # echo does not (above)
    assert verdict(fds, to_pod, packet("10.0.3.30", "10.0.1.11", "icmp",
                                       icmp_type=3)) == TC_ACT_OK  # unreachable / frag
    assert verdict(fds, to_pod, packet("fe80::1", "fd00:1::12", "icmp",
                                       icmp_type=135)) == TC_ACT_OK  # neighbour solicit
    assert verdict(fds, to_pod, packet("fd01::5", "fd00:1::12", "icmp",
                                       icmp_type=2)) == TC_ACT_OK  # packet too big
    assert verdict(fds, to_pod, packet("fd01::5", "fd00:1::12", "icmp")) == TC_ACT_SHOT
    assert verdict(fds, from_pod, packet("10.0.1.12", "10.0.1.1", "icmp",
                                         icmp_type=3)) == TC_ACT_OK
    # the node: its traffic to and from its pods always passes (the kubelet's probes);
    # a pod sending from the node's address is spoofing
    assert maps.sync_node([ip_address("10.0.1.1"), ip_address("fd00:1::1")]) == []
    assert verdict(fds, to_pod, packet("10.0.1.1", "10.0.1.12", dport=8080)) == TC_ACT_OK
    assert verdict(fds, to_pod, packet("fd00:1::1", "fd00:1::12", dport=22)) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.1.12", "10.0.1.1", dport=10250)) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.1.1", "10.0.3.30", dport=80)) == TC_ACT_SHOT
    # a pod reaching itself through a service (the service loopback source); a protocol
    # policy does not cover
    assert verdict(fds, to_pod, packet("169.254.42.1", "10.0.1.12", dport=80)) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.1.12", "169.254.42.1", sport=80,
                                         dport=40000)) == TC_ACT_OK  # its reply
    assert verdict(fds, to_pod, packet("10.0.3.30", "10.0.1.12", "gre")) == TC_ACT_OK
    assert maps.sync_node([ip_address("10.0.1.1")]) == []  # fd00:1::1 no longer the node's
    assert verdict(fds, to_pod, packet("fd00:1::1", "fd00:1::12", dport=23)) == TC_ACT_SHOT
    # a pod under no policy, and no IP at all: untouched
    assert verdict(fds, to_pod, packet("10.0.3.30", "10.0.1.99", dport=22)) == TC_ACT_OK
    assert verdict(fds, from_pod, packet("10.0.3.30", "10.0.1.11", dport=22)) == TC_ACT_OK
    arp = b"\xff" * 6 + b"\x04" * 6 + b"\x08\x06" + bytes(28)
    assert verdict(fds, to_pod, arp) == TC_ACT_OK
    stats = PinnedMap.open(str(pin_dir / "rr_pol_stats"))
    try:
        dropped = sum(int.from_bytes(v, "little")
                      for v in percpu_lookup(stats.fd, struct.pack("=I", 1), 8))
    finally:
        stats.close()
    assert dropped >= 8  # the drops above, counted
    counts = read_stats(pin_dir)  # as the agent's metrics read them
    assert counts["dropped"] == dropped and counts["new"] >= 8 and counts["passed"] >= 3
    # and per endpoint (the spoofing pod is no endpoint: counted in all only)
    per_ep = read_drops(pin_dir)
    ids = maps.last_ids
    assert per_ep[ids["web/api"]] == 4 and per_ep[ids["web/vault"]] == 3
    assert sum(per_ep.values()) == dropped - 1


def test_a_closed_connection_is_forgotten_and_its_tuple_decided_anew(
        progs: tuple[dict[str, int], PolicyMaps, Path]) -> None:
    """A connection that passed keeps passing after the policy changed (as in the
    kernel's conntrack); once it has ended (FIN or RST), a new connection reusing its
    tuple (a client port used again) meets the policy of the day."""
    fds, maps, _ = progs
    assert maps.sync(plan()) == []
    out = "rr_pol_from_pod"
    syn, ack, fin, rst = 0x02, 0x10, 0x11, 0x04

    def go(sport: int, flags: int) -> int:
        return verdict(fds, out, packet("10.0.1.12", "192.0.2.5", sport=sport, dport=443,
                                        flags=flags))

    for sport in (42000, 42001, 42002):
        assert go(sport, syn) == TC_ACT_OK  # vault may reach 192.0.2.0/24 on tcp/443
    # vault now allowed nothing out
    shut = [p_ for p_ in POLICIES if p_.meta.name != "vault"] + [
        policy("vault", "web", sel(app="vault"), ingress=[], egress=[])]
    assert maps.sync(dict(compile_policies(shut, PODS, NAMESPACES, "n1").endpoints)) == []
    assert go(42000, ack) == TC_ACT_OK  # established: goes on
    assert go(42000, fin) == TC_ACT_OK  # its end passes
    assert go(42000, ack) == TC_ACT_OK  # and what follows the FIN, for a while
    assert go(42000, syn) == TC_ACT_SHOT  # a new connection on its tuple: refused
    assert go(42001, rst) == TC_ACT_OK
    assert go(42001, syn) == TC_ACT_SHOT
    assert go(42002, syn) == TC_ACT_OK  # never ended: a SYN is a retransmission


def test_later_fragments_are_decided_with_their_first_fragments_ports(
        progs: tuple[dict[str, int], PolicyMaps, Path]) -> None:
    """A fragmented packet's later fragments carry no ports: they are decided with those
    of their packet's first fragment, IPv4 and IPv6 (a large UDP answer into a pod
    isolated both ways: its first fragment is the reply of the pod's query, and so are the
    others); a later fragment whose first was never seen is refused where isolated."""
    fds, maps, _ = progs
    assert maps.sync(plan()) == []
    out, into = "rr_pol_from_pod", "rr_pol_to_pod"
    # vault asks 192.0.2.5 on tcp/443 (allowed), the answer comes back in fragments
    assert verdict(fds, out, packet("10.0.1.12", "192.0.2.5", sport=43000,
                                    dport=443)) == TC_ACT_OK
    answer = {"sport": 443, "dport": 43000, "flags": 0x10}
    assert verdict(fds, into, packet("192.0.2.5", "10.0.1.12", frag=(7, 0, True),
                                     **answer)) == TC_ACT_OK
    assert verdict(fds, into, packet("192.0.2.5", "10.0.1.12", frag=(7, 185, True),
                                     **answer)) == TC_ACT_OK
    assert verdict(fds, into, packet("192.0.2.5", "10.0.1.12", frag=(7, 370, False),
                                     **answer)) == TC_ACT_OK
    assert verdict(fds, into, packet("192.0.2.5", "10.0.1.12", frag=(8, 185, False),
                                     **answer)) == TC_ACT_SHOT  # no first fragment seen
    # IPv6: v6 takes anything from fd00::/64, nothing from elsewhere
    assert verdict(fds, into, packet("fd00::5", "fd00:1::12", "udp", dport=9,
                                     frag=(9, 0, True))) == TC_ACT_OK
    assert verdict(fds, into, packet("fd00::5", "fd00:1::12", "udp", dport=9,
                                     frag=(9, 160, False))) == TC_ACT_OK
    assert verdict(fds, into, packet("fd01::5", "fd00:1::12", "udp", dport=9,
                                     frag=(9, 160, False))) == TC_ACT_SHOT


def test_policy_maps_shows_what_the_maps_hold(
        progs: tuple[dict[str, int], PolicyMaps, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """`rackroute policy-maps` decodes the pinned maps back into what was compiled: each
    endpoint's addresses and, per isolated direction, its entries; and the counters."""
    import json

    from controller.cli import main
    from controller.cli_policy import entries_doc

    fds, maps, pin_dir = progs
    compiled = plan()
    assert maps.sync(compiled) == []
    api = maps.ids(compiled)["web/api"]
    refused = read_drops(pin_dir).get(api, 0) + 1
    assert verdict(fds, "rr_pol_to_pod", packet("10.0.3.30", "10.0.1.11",
                                                dport=8080)) == TC_ACT_SHOT
    assert main(["policy-maps", "--pin-root", str(pin_dir.parent), "--instance",
                 pin_dir.name, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ids = maps.ids(compiled)
    want = sorted(({"endpoint": ids[k], "addresses": [str(a) for a in ep.ips],
                    "ingress": entries_doc(ep.ingress), "egress": entries_doc(ep.egress)}
                   for k, ep in compiled.items()), key=lambda d: d["endpoint"])
    assert [{k: v for k, v in d.items() if k != "dropped"} for d in doc["endpoints"]] == want
    drops = read_drops(pin_dir)
    assert [d["dropped"] for d in doc["endpoints"]] == [drops.get(d["endpoint"], 0)
                                                        for d in want]
    assert doc["endpoints"][0] == {**doc["endpoints"][0], "endpoint": api,
                                   "dropped": refused}
    assert set(doc["packets"]) == {"passed", "dropped", "new"}
    assert main(["policy-maps", "--pin-root", str(pin_dir.parent), "--instance",
                 pin_dir.name]) == 0
    text = capsys.readouterr().out
    assert f"endpoint {api}: 10.0.1.11, {refused} packets refused" in text
    assert "tcp/8080" in text
    assert "packets: " in text
    assert main(["policy-maps", "--pin-root", str(pin_dir.parent), "--instance",
                 "nothing-here"]) == 2
    assert "is the agent running with --network-policy" in capsys.readouterr().err


def test_resync_keeps_ids_and_a_pod_leaving_policy_is_let_go(
        progs: tuple[dict[str, int], PolicyMaps, Path]) -> None:
    fds, maps, pin_dir = progs
    assert maps.sync(plan()) == []
    before = maps.ids(plan())
    assert maps.sync(plan()) == [] and maps.ids(plan()) == before
    # api gone from the cluster: its entries go, its address is under no policy
    without = [p for p in PODS if p is not API]
    assert maps.sync(plan(without)) == []
    assert verdict(fds, "rr_pol_to_pod", packet("10.0.3.30", "10.0.1.11",
                                                dport=9999)) == TC_ACT_OK
    assert read_drops(pin_dir, [before["web/api"]]) == {before["web/api"]: 0}  # zeroed
    ids = maps.ids(plan(without))
    assert all(ids[k] == before[k] for k in ids)  # the others keep theirs
    assert maps.sync({}) == []
    assert list(maps.eps.items()) == [] and list(maps.rules.items()) == []


def test_egress_to_a_service_is_decided_on_its_backend() -> None:
    """A pod's new flow to a service address passes its own interface (the address is no
    peer of any policy) and is decided by the pod program on the backend it picks: front
    may reach api, so the service of api answers it; vault may not, so its SYNs are
    dropped (each of them: nothing of the refused flow is remembered); a pod under no
    policy is balanced as always."""
    cfg = DatapathConfig("polsvc", pin_root=PIN_ROOT, network_policy=True,
                         max_services=64, max_backends=64, max_tables=64, ct_size=4096)
    dp = Datapath(cfg)
    maps: list[PinnedMap] = []
    try:
        dp.load(("pod", "policy"))
        for name in ("rr_pol_eps", "rr_pol", "rr_pol_node"):
            maps.append(PinnedMap.open(str(cfg.pin_dir / name)))
        pm = PolicyMaps(maps[0], maps[1], maps[2])
        assert pm.sync(plan()) == []
        vip = "10.96.5.5"
        table = {ServiceKey(ip_address(vip), 80, Proto.TCP):
                 Service((Backend(ip_address("10.0.1.11"), 8080),))}
        assert not Syncer(dp.maps()).sync(table).errors
        from_pod, lb = dp.fds["rr_pol_from_pod"], dp.fds["rr_pod_ingress"]

        def balanced(src: str, sport: int) -> str | None:
            ret, _, out = prog_test_run(lb, tcp_packet(src, vip, 6, sport, 80, b"",
                                                       flags=0x02))
            return parse(out)[1] if ret == TC_ACT_OK else None

        # the pods' own interfaces let both go (to a service: the backend decides)
        assert prog_test_run(from_pod, packet("10.0.1.10", vip, sport=41000))[0] == TC_ACT_OK
        assert prog_test_run(from_pod, packet("10.0.1.12", vip, sport=41001))[0] == TC_ACT_OK
        # ... but not what is no service (a port the address does not serve)
        assert prog_test_run(from_pod, packet("10.0.1.12", vip, sport=41002,
                                              dport=81))[0] == TC_ACT_SHOT
        # the pod program: front reaches api through the service, vault never
        assert balanced("10.0.1.10", 41000) == "10.0.1.11"
        assert balanced("10.0.1.12", 41001) is None
        assert balanced("10.0.1.12", 41001) is None  # its retransmission too
        # counted for vault: the port no service has (its interface), and both SYNs here
        assert read_drops(cfg.pin_dir)[pm.ids(plan())["web/vault"]] == 3
        assert balanced("10.0.1.99", 41003) == "10.0.1.11"  # under no policy
        # vault allowed to api on 8080 (the backend's port, not the service's): balanced
        allow = policy("vault-api", "web", sel(app="vault"), egress=[PolicyRule(
            (PolicyPeer(pod_selector=sel(app="api")),), (PolicyPort("TCP", 8080),))])
        more = compile_policies([*POLICIES, allow], PODS, NAMESPACES, "n1").endpoints
        assert pm.sync(dict(more)) == []
        assert balanced("10.0.1.12", 41004) == "10.0.1.11"
    finally:
        for m_ in maps:
            m_.close()
        dp.close()
        shutil.rmtree(cfg.pin_dir, ignore_errors=True)
