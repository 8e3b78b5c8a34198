"""Each speaker against a real FRR ToR: sessions, attributes, changes, withdraws, peers.

Assertions read FRR's JSON (`show bgp ... json`, `show ip route json`) and the ToR's
kernel table.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from bgp.exabgp.adapter import ExabgpSpeaker
from bgp.gobgp.adapter import GobgpSpeaker
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, SessionState, path_from_texts
from controller.lab.frr import Neighbor
from controller.lab.netns import wait_for
from tests.integration.bgp.conftest import TOR_ASN, Topo, global_config, peer_spec, topology

pytestmark = pytest.mark.timeout(90)

POD = path_from_texts("10.244.1.0/24", communities=["65000:100"],
                      large_communities=["65000:1:2"])
LB = path_from_texts("198.51.100.10/32", communities=["65000:200", "no-export"],
                     large_communities=["65000:2:10"])
LB2 = path_from_texts("198.51.100.11/32", communities=["65000:201"])


def kernel_bgp(topo: Topo, family: int = 4) -> dict[str, list[str]]:
    """ToR kernel routes installed by FRR's bgp: prefix -> gateways."""
    out: dict[str, list[str]] = {}
    for r in topo.tor_ns.routes(family):
        if r.get("protocol") != "bgp":
            continue
        dst = str(r["dst"])
        if "/" not in dst:
            dst += "/32" if family == 4 else "/128"
        gws = [str(r["gateway"])] if "gateway" in r else [
            str(h.get("gateway")) for h in r.get("nexthops", [])]  # type: ignore[union-attr]
        out[dst] = gws
    return out


def established(topo: Topo, address: str, timeout: float = 20.0) -> None:
    wait_for(lambda: topo.tor.neighbor_state(address) == "Established", timeout,
             what=f"ToR session with {address}")


def test_paths_reach_tor_table_and_kernel_with_attributes(topo: Topo) -> None:
    node = topo.nodes[0]
    topo.tor_neighbor(node)
    s = topo.make_speaker(node)
    s.start(global_config(node))
    s.set_peers([peer_spec()])
    s.set_paths({POD, LB})
    established(topo, node.addr4)
    wait_for(lambda: {"10.244.1.0/24", "198.51.100.10/32"} <= set(kernel_bgp(topo)), 10,
             what="paths in the ToR kernel")
    assert kernel_bgp(topo)["10.244.1.0/24"] == [node.addr4]

    table = topo.tor.bgp_routes()
    assert table["10.244.1.0/24"][0]["nexthops"][0]["ip"] == node.addr4
    assert table["198.51.100.10/32"][0]["path"] == str(node.asn)
    pod = topo.tor.bgp_route_detail("10.244.1.0/24")["paths"][0]
    assert pod["community"]["string"] == "65000:100"
    assert pod["largeCommunity"]["string"] == "65000:1:2"
    lb = topo.tor.bgp_route_detail("198.51.100.10/32")["paths"][0]
    assert set(lb["community"]["string"].split()) == {"65000:200", "no-export"}
    assert lb["largeCommunity"]["string"] == "65000:2:10"
    assert {"10.244.1.0/24", "198.51.100.10/32"} <= topo.tor.installed_bgp()

    # the speaker reports the session and what it sent
    st = wait_for(lambda: [p for p in s.peers() if p.state is SessionState.ESTABLISHED], 10,
                  what="speaker sees Established")
    assert st[0].address == ip_address("10.55.0.1") and st[0].peer_asn == TOR_ASN
    assert st[0].established_at is not None and st[0].hold_time == 9


def test_changed_path_set_changes_tor_table_and_withdraws(topo: Topo) -> None:
    node = topo.nodes[0]
    topo.tor_neighbor(node)
    s = topo.make_speaker(node)
    s.start(global_config(node))
    s.set_peers([peer_spec()])
    s.set_paths({POD, LB})
    established(topo, node.addr4)
    wait_for(lambda: "198.51.100.10/32" in kernel_bgp(topo), 10, what="LB route")

    pod2 = path_from_texts("10.244.1.0/24", communities=["65000:111"])
    diff = s.set_paths({pod2, LB2})  # LB withdrawn, LB2 new, POD's community changed
    assert diff.withdraw == (LB,)
    wait_for(lambda: set(kernel_bgp(topo)) == {"10.244.1.0/24", "198.51.100.11/32"}, 10,
             what="ToR kernel follows the new path set")
    wait_for(lambda: topo.tor.bgp_route_detail("10.244.1.0/24")["paths"][0]["community"]
             ["string"] == "65000:111", 10, what="changed community")
    assert "198.51.100.10/32" not in topo.tor.bgp_routes()
    assert s.advertised(ip_address("10.55.0.1")) == {
        path_from_texts("10.244.1.0/24", communities=["65000:111"]),
        path_from_texts("198.51.100.11/32", communities=["65000:201"])}

    s.set_paths(set())
    wait_for(lambda: not kernel_bgp(topo), 10, what="everything withdrawn")
    assert topo.tor.bgp_routes() == {}


def test_removed_peer_is_torn_down(topo: Topo) -> None:
    node = topo.nodes[0]
    topo.tor_neighbor(node)
    s = topo.make_speaker(node)
    s.start(global_config(node))
    s.set_peers([peer_spec()])
    s.set_paths({POD})
    established(topo, node.addr4)
    wait_for(lambda: "10.244.1.0/24" in kernel_bgp(topo), 10, what="POD route")

    diff = s.set_peers([])
    assert diff.removed == (ip_address("10.55.0.1"),)
    wait_for(lambda: topo.tor.neighbor_state(node.addr4) != "Established", 10,
             what="session down at the ToR")
    wait_for(lambda: "10.244.1.0/24" not in kernel_bgp(topo), 10, what="routes gone")
    assert s.peers() == []
    time.sleep(3)  # the ToR keeps retrying; the speaker must not accept it back
    assert topo.tor.neighbor_state(node.addr4) != "Established"


def test_listen_range_speaker_connects_first(topo: Topo) -> None:
    """No per-node config on the ToR: the speaker dials in and `bgp listen range` accepts."""
    node = topo.nodes[1]
    s = topo.make_speaker(node)
    s.start(global_config(node, listen=False))
    s.set_peers([peer_spec(passive=False)])
    s.set_paths({LB2})
    wait_for(lambda: "198.51.100.11/32" in kernel_bgp(topo), 30, what="route via listen range")
    nbrs = topo.tor.neighbors()
    assert nbrs[node.addr4]["bgpState"] == "Established"
    assert nbrs[node.addr4].get("dynamicPeer") is True or "peerGroup" in nbrs[node.addr4]


def test_md5_right_password_establishes_wrong_never_does(topo: Topo) -> None:
    good, bad = topo.nodes
    topo.tor_neighbor(good, password="s3cret-one")
    topo.tor_neighbor(bad, password="s3cret-one")
    sg = topo.make_speaker(good)
    sb = topo.make_speaker(bad)
    sg.start(global_config(good))
    sb.start(global_config(bad))
    sg.set_peers([peer_spec(password="s3cret-one")])
    sb.set_peers([peer_spec(password="wrong-pass")])
    sg.set_paths({POD})
    sb.set_paths({LB})
    established(topo, good.addr4)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert topo.tor.neighbor_state(bad.addr4) != "Established"
        assert all(p.state is not SessionState.ESTABLISHED for p in sb.peers())
        time.sleep(0.25)
    assert "198.51.100.10/32" not in kernel_bgp(topo)
    assert "10.244.1.0/24" in kernel_bgp(topo)
    assert sb.peers()[0].state is not SessionState.ESTABLISHED


def test_ipv6_unicast(topo: Topo) -> None:
    node = topo.nodes[0]
    topo.tor_neighbor(node, address=node.addr6, families=("ipv6",))
    s = topo.make_speaker(node)
    s.start(global_config(node, v6=True))
    s.set_peers([peer_spec("fd55::1", families=(IPV6_UNICAST,))])
    v6 = path_from_texts("fd00:244:1::/64", communities=["65000:600"],
                         large_communities=["65000:6:6"])
    s.set_paths({v6})
    established(topo, node.addr6)
    wait_for(lambda: "fd00:244:1::/64" in kernel_bgp(topo, 6), 10, what="v6 route in kernel")
    assert kernel_bgp(topo, 6)["fd00:244:1::/64"] in ([node.addr6], [f"fe80::{node.idx}"]) or \
        kernel_bgp(topo, 6)["fd00:244:1::/64"][0].startswith("fe80:")
    d = topo.tor.bgp_route_detail("fd00:244:1::/64", "ipv6")["paths"][0]
    assert d["community"]["string"] == "65000:600"
    assert d["largeCommunity"]["string"] == "65000:6:6"
    assert "fd00:244:1::/64" in topo.tor.installed_bgp("ipv6")


def kernel_via6(topo: Topo) -> dict[str, list[str]]:
    """The ToR's IPv4 bgp routes through IPv6 gateways (`via inet6`): prefix -> them."""
    out: dict[str, list[str]] = {}
    for r in topo.tor_ns.routes(4):
        if r.get("protocol") != "bgp":
            continue
        hops = [r, *r.get("nexthops", [])]  # type: ignore[list-item]
        vias = [str(h["via"]["host"]) for h in hops  # type: ignore[index]
                if isinstance(h.get("via"), dict) and h["via"].get("family") == "inet6"]
        if vias:
            out[str(r["dst"])] = vias
    return out


def test_ipv4_over_an_ipv6_session(topo: Topo) -> None:
    """RFC 8950, an IPv6-only underlay: both families over one IPv6 session each way.
    The node's IPv4 pod CIDR reaches the ToR's kernel through the node's IPv6 address,
    and the other node learns it with an IPv6 next hop."""
    n1, n2 = topo.nodes
    both = (IPV4_UNICAST, IPV6_UNICAST)
    speakers = []
    for n in (n1, n2):
        topo.tor_neighbor(n, address=n.addr6, families=("ipv4", "ipv6"),
                          extended_nexthop=True)
        s = topo.make_speaker(n)
        s.start(global_config(n, v6=True))
        s.set_peers([peer_spec("fd55::1", families=both)])
        speakers.append(s)
    s1, s2 = speakers
    s1.set_paths({POD, path_from_texts("fd00:244:1::/64")})
    s2.set_paths({path_from_texts("10.244.2.0/24")})
    established(topo, n1.addr6)
    established(topo, n2.addr6)
    wait_for(lambda: {"10.244.1.0/24", "10.244.2.0/24"} <= kernel_via6(topo).keys(), 15,
             what="the IPv4 pod CIDRs in the ToR's kernel through IPv6 gateways")
    assert kernel_via6(topo)["10.244.1.0/24"] == [n1.addr6]
    assert kernel_via6(topo)["10.244.2.0/24"] == [n2.addr6]
    assert "fd00:244:1::/64" in kernel_bgp(topo, 6)
    d = topo.tor.bgp_route_detail("10.244.1.0/24")["paths"][0]
    assert d["community"]["string"] == "65000:100"  # the path's attributes came along

    def learned() -> list[object]:
        return [r for r in s2.received() if r.prefix == POD.prefix]

    wait_for(learned, 15, what="n2 learns n1's IPv4 pod CIDR over its IPv6 session")
    r = next(r for r in s2.received() if r.prefix == POD.prefix)
    assert r.next_hop is not None and r.next_hop.version == 6, r
    assert r.peer == ip_address("fd55::1")
    assert r.as_path == (TOR_ASN, n1.asn)
    s1.set_paths({path_from_texts("fd00:244:1::/64")})  # the IPv4 one withdrawn
    wait_for(lambda: "10.244.1.0/24" not in kernel_via6(topo), 15,
             what="the withdrawn IPv4 pod CIDR out of the ToR's kernel")
    assert "fd00:244:1::/64" in kernel_bgp(topo, 6)
    assert kernel_via6(topo)["10.244.2.0/24"] == [n2.addr6]


def test_multihop_ebgp_over_loopbacks(topo: Topo) -> None:
    node = topo.nodes[0]
    topo.tor_neighbor(node, address=node.loopback, ebgp_multihop=2, update_source="10.56.0.1")
    s = topo.make_speaker(node)
    s.start(global_config(node))
    s.set_peers([peer_spec("10.56.0.1", local_address=ip_address(node.loopback),
                           ebgp_multihop=2)])
    s.set_paths({POD})
    established(topo, node.loopback)
    wait_for(lambda: "10.244.1.0/24" in kernel_bgp(topo), 10, what="route via multihop")
    assert topo.tor.bgp_routes()["10.244.1.0/24"][0]["nexthops"][0]["ip"] == node.loopback
    assert topo.tor.neighbors()[node.loopback]["hostLocal"] == "10.56.0.1"


def test_ibgp_local_preference(topo: Topo) -> None:
    node = topo.nodes[0]
    topo.tor.add_neighbor(__import__("controller.lab.frr", fromlist=["Neighbor"]).Neighbor(
        address=node.addr4, remote_as="internal", route_reflector_client=True))
    s = topo.make_speaker(node)
    s.start(global_config(node, asn=TOR_ASN))
    s.set_peers([peer_spec()])
    lp = path_from_texts("198.51.100.20/32", communities=["65000:300"], local_pref=250)
    s.set_paths({lp})
    established(topo, node.addr4)
    wait_for(lambda: "198.51.100.20/32" in kernel_bgp(topo), 10, what="iBGP route")
    d = topo.tor.bgp_route_detail("198.51.100.20/32")["paths"][0]
    assert d["locPrf"] == 250
    assert d["community"]["string"] == "65000:300"
    assert s.advertised(ip_address("10.55.0.1")) == {lp}


def test_learned_routes_and_best_path_events(topo: Topo) -> None:
    n1, n2 = topo.nodes
    topo.tor_neighbor(n1)
    topo.tor_neighbor(n2)
    s1 = topo.make_speaker(n1)
    s2 = topo.make_speaker(n2)
    for s, n in ((s1, n1), (s2, n2)):
        s.start(global_config(n))
        s.set_peers([peer_spec()])
    s1.set_paths({POD})
    s2.set_paths({path_from_texts("10.244.2.0/24")})
    established(topo, n1.addr4)
    established(topo, n2.addr4)

    def learned() -> bool:
        return any(r.prefix == POD.prefix for r in s2.received())

    wait_for(learned, 15, what="n2 learns n1's pod CIDR")
    r = next(r for r in s2.received() if r.prefix == POD.prefix)
    assert r.as_path == (TOR_ASN, n1.asn)
    assert r.peer == ip_address("10.55.0.1")
    assert "65000:100" in r.communities
    assert any(x.prefix == POD.prefix for x in s2.received(ip_address("10.55.0.1")))

    events = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            e.prefix == POD.prefix and e.route for e in events):
        events += s2.best_changes(timeout=0.5)
    assert any(e.prefix == POD.prefix and e.route and e.route.as_path == (TOR_ASN, n1.asn)
               for e in events)
    s1.set_paths(set())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            e.prefix == POD.prefix and e.route is None for e in events):
        events += s2.best_changes(timeout=0.5)
    assert any(e.prefix == POD.prefix and e.route is None for e in events)
    assert not learned()


@pytest.fixture
def one_node(kind: str) -> Iterator[Topo]:
    """One node with its speaker and the ToR."""
    with topology(kind, 1) as t:
        yield t


def paths_by_peer(topo: Topo, prefix: str, afi: str = "ipv4") -> dict[str, tuple[str, str]]:
    """The ToR's paths for prefix: neighbor → (communities, large communities)."""
    try:
        d = topo.tor.bgp_route_detail(prefix, afi)
    except Exception:
        return {}
    out = {}
    for p in d.get("paths", []):
        peer = str(p.get("peer", {}).get("peerId"))
        out[peer] = (str(p.get("community", {}).get("string", "")),
                     str(p.get("largeCommunity", {}).get("string", "")))
    return out


def test_per_peer_exports_give_each_neighbor_its_own_paths(one_node: Topo) -> None:
    """Two sessions of one speaker to the ToR (IPv4, and IPv6 carrying both families): each
    neighbor gets only its own paths with its own attributes; a path moved from one to the
    other is withdrawn from the first; no marker community ever leaves (gobgpd); the daemon
    killed, its replacement gives each neighbor its own again; without exports both get
    everything again; a removed neighbor is drained."""
    topo = one_node
    (node,) = topo.nodes
    topo.tor_neighbor(node)
    topo.tor_neighbor(node, address=node.addr6, families=("ipv4", "ipv6"),
                      extended_nexthop=True)
    s = topo.make_speaker(node)
    s.start(global_config(node, v6=True))
    a, b = ip_address("10.55.0.1"), ip_address("fd55::1")
    s.set_peers([peer_spec("10.55.0.1"),
                 peer_spec("fd55::1", name="tor6", families=(IPV4_UNICAST, IPV6_UNICAST))])
    v6 = path_from_texts("fd00:244:1::/64", communities=["65000:600"])
    pod_b = path_from_texts("10.244.1.0/24", communities=["65009:1"])
    lb_b = path_from_texts("198.51.100.10/32", communities=["65009:2"])
    union = {POD, LB, v6}
    s.set_paths(union, {a: [POD, LB], b: [pod_b, v6]})
    established(topo, node.addr4)
    established(topo, node.addr6)
    v4, v6a = node.addr4, node.addr6
    wait_for(lambda: paths_by_peer(topo, "10.244.1.0/24").keys() == {v4, v6a}, 15,
             what="the pod CIDR from both sessions")
    assert paths_by_peer(topo, "10.244.1.0/24") == {v4: ("65000:100", "65000:1:2"),
                                                    v6a: ("65009:1", "")}
    wait_for(lambda: paths_by_peer(topo, "fd00:244:1::/64", "ipv6").keys() == {v6a}, 15,
             what="the IPv6 path from the IPv6 session")
    assert paths_by_peer(topo, "198.51.100.10/32") == {
        v4: ("65000:200 no-export", "65000:2:10")}
    # the LoadBalancer IP moves to the IPv6 session, with another community
    s.set_paths(union, {a: [POD], b: [pod_b, lb_b, v6]})
    wait_for(lambda: paths_by_peer(topo, "198.51.100.10/32") == {v6a: ("65009:2", "")}, 15,
             what="the LoadBalancer IP withdrawn from one session, sent on the other")
    assert paths_by_peer(topo, "10.244.1.0/24") == {v4: ("65000:100", "65000:1:2"),
                                                    v6a: ("65009:1", "")}
    assert {str(p.prefix) for p in s.advertised()} == {"10.244.1.0/24", "198.51.100.10/32",
                                                       "fd00:244:1::/64"}
    assert all(not c.startswith("4294967294:") for p in s.advertised()
               for c in p.large_communities)
    assert {str(p.prefix) for p in s.advertised(a)} == {"10.244.1.0/24"}
    assert {str(p.prefix) for p in s.advertised(b)} == {"10.244.1.0/24", "198.51.100.10/32",
                                                        "fd00:244:1::/64"}
    # the daemon killed: its replacement gets the policy (gobgpd) or each neighbor's own
    # paths (ExaBGP) again
    assert isinstance(s, GobgpSpeaker | ExabgpSpeaker) and s.pid is not None
    os.kill(s.pid, signal.SIGKILL)
    wait_for(lambda: s.restarts >= 1, 10, what="gobgpd replaced")
    established(topo, node.addr4)
    established(topo, node.addr6)
    time.sleep(1.0)
    assert paths_by_peer(topo, "198.51.100.10/32") == {v6a: ("65009:2", "")}
    assert paths_by_peer(topo, "10.244.1.0/24") == {v4: ("65000:100", "65000:1:2"),
                                                    v6a: ("65009:1", "")}
    # no exports: every neighbor gets every path as given
    s.set_paths(union)
    wait_for(lambda: paths_by_peer(topo, "198.51.100.10/32").keys() == {v4, v6a}, 15,
             what="the LoadBalancer IP on both sessions")
    assert paths_by_peer(topo, "10.244.1.0/24") == {v4: ("65000:100", "65000:1:2"),
                                                    v6a: ("65000:100", "65000:1:2")}
    # and back; then the IPv6 neighbor removed: drained (withdrawn, not left stale)
    s.set_paths(union, {a: [POD, LB], b: [pod_b, v6]})
    wait_for(lambda: paths_by_peer(topo, "198.51.100.10/32").keys() == {v4}, 15,
             what="per-peer exports again")
    s.set_peers([peer_spec("10.55.0.1")])
    wait_for(lambda: paths_by_peer(topo, "10.244.1.0/24").keys() == {v4}, 5,
             what="the removed neighbor's paths withdrawn")
    assert paths_by_peer(topo, "fd00:244:1::/64", "ipv6") == {}
    assert paths_by_peer(topo, "10.244.1.0/24") == {v4: ("65000:100", "65000:1:2")}
    assert paths_by_peer(topo, "198.51.100.10/32") == {v4: ("65000:200 no-export", "65000:2:10")}


def test_a_session_that_does_not_come_up_says_why(one_node: Topo) -> None:
    """The ToR's neighbor statement names another ASN for the node: the peer refuses our
    OPEN, and the status says so; an address nobody answers on says there is no TCP
    connection; fixed, the session comes up and the error goes."""
    topo = one_node
    (node,) = topo.nodes
    topo.tor.add_neighbor(Neighbor(address=node.addr4, remote_as="65999"))  # not ours
    s = topo.make_speaker(node)
    s.start(global_config(node))
    s.set_peers([peer_spec(passive=False),
                 peer_spec("10.55.0.99", name="nobody", passive=False)])

    def error(addr: str) -> str:
        st = next((p for p in s.peers() if p.address == ip_address(addr)), None)
        return (st.last_error or "") if st else ""

    # gobgpd counts the NOTIFICATIONs, ExaBGP names the last one
    said = ("the peer refused the session (" if topo.kind == "gobgp"
            else "the session went down: the peer sent a NOTIFICATION: OPEN Message Error / "
            "Bad Peer AS (2/2); check the ASNs")
    wait_for(lambda: error("10.55.0.1").startswith(said), 20, what="the refusal said")
    assert "remote-as 65011" in error("10.55.0.1") or "peerASN" in error("10.55.0.1")
    assert error("10.55.0.99").startswith("no TCP connection with 10.55.0.99 port 179")
    topo.tor.remove_neighbor(node.addr4)
    topo.tor_neighbor(node)
    established(topo, node.addr4)
    wait_for(lambda: error("10.55.0.1") == "", 10, what="the error gone once up")
