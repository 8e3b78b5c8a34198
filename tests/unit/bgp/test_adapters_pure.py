"""Pure parts of the adapters: ExaBGP config and command rendering, ExaBGP JSON parsing,
GoBGP protobuf conversion, and the RIB-in best-path bookkeeping."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from bgp.exabgp import config as cfg
from bgp.exabgp.adapter import _route
from bgp.ribin import RibIn
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    GlobalConfig,
    PeerSpec,
    Route,
    path_from_texts,
)

G = GlobalConfig(asn=65011, router_id=ip_address("10.55.0.11"), listen_port=179)
PEER = PeerSpec(name="tor", address=ip_address("10.55.0.1"), peer_asn=65000, hold_time=9,
                password="s3cret", ebgp_multihop=3, families=(IPV4_UNICAST,), passive=True)


def test_exabgp_config_has_every_peer_option() -> None:
    text = cfg.render(G, [PEER], ["/usr/bin/python3", "/x/relay.py", "/x/api.sock"])
    assert "run /usr/bin/python3 /x/relay.py /x/api.sock;" in text
    for line in ("neighbor 10.55.0.1 {", "local-as 65011;", "peer-as 65000;",
                 "hold-time 9;", "passive true;", "listen 179;", "local-address 10.55.0.11;",
                 'md5-password "s3cret";', "outgoing-ttl 3;", "manual-eor true;",
                 "ipv4 unicast;", "graceful-restart 120;", "processes [ rackroute ];"):
        assert line in text, line
    assert "ipv6 unicast;" not in text


def test_exabgp_dynamic_asn_and_active_peer() -> None:
    p = PeerSpec(name="x", address=ip_address("fd55::1"), peer_asn=0,
                 families=(IPV6_UNICAST,), graceful_restart=False)
    text = cfg.render(GlobalConfig(asn=1, router_id=ip_address("10.0.0.1")), [p], ["r"])
    assert "peer-as auto;" in text and "passive false;" in text
    assert "listen" not in text and "graceful-restart" not in text
    assert "local-address" not in text  # no IPv6 address known: the kernel picks
    assert "nexthop {" not in text  # no IPv4 over it


def test_exabgp_ipv4_over_an_ipv6_session_asks_for_ipv6_next_hops() -> None:
    """RFC 8950: an IPv6 peer carrying IPv4 unicast gets the nexthop block (ExaBGP then
    sends the extended next hop capability); an IPv4 peer never does."""
    both = (IPV4_UNICAST, IPV6_UNICAST)
    v6 = PeerSpec(name="x", address=ip_address("fd55::1"), peer_asn=1, families=both)
    v4 = PeerSpec(name="y", address=ip_address("10.55.0.1"), peer_asn=1, families=both)
    text = cfg.render(G, [v6], ["r"])
    assert "    nexthop {\n        ipv4 unicast ipv6;\n    }" in text
    assert "nexthop {" not in cfg.render(G, [v4], ["r"])


def test_exabgp_rejects_unquotable_password() -> None:
    bad = PeerSpec(name="x", address=ip_address("10.0.0.1"), peer_asn=1, password='a";b')
    with pytest.raises(ValueError):
        cfg.render(G, [bad], ["r"])


def test_exabgp_environment_disables_drop_and_cli() -> None:
    env = cfg.environment(G)
    assert env["exabgp.daemon.drop"] == "false" and env["exabgp_daemon_drop"] == "false"
    assert env["exabgp_api_cli"] == "false" and env["exabgp_api_ack"] == "true"


def test_exabgp_lines_are_batched_by_attributes() -> None:
    a = [path_from_texts(f"10.{i // 256}.{i % 256}.0/24", communities=["65000:1"])
         for i in range(450)]
    b = path_from_texts("198.51.100.1/32", large_communities=["1:2:3"], local_pref=200)
    lines = cfg.announce_lines([*a, b])
    assert len(lines) == 4  # 200 + 200 + 50 + 1
    assert all(x.startswith("announce attributes next-hop self origin igp") for x in lines)
    assert sum(x.count("/24") for x in lines) == 450
    one = [x for x in lines if "198.51.100.1/32" in x][0]
    assert "local-preference 200" in one and "large-community [ 1:2:3 ]" in one
    w = cfg.withdraw_lines([b], "neighbor 10.0.0.1 ")
    assert w[0].startswith("neighbor 10.0.0.1 withdraw attributes") and w[0].endswith(
        "nlri 198.51.100.1/32")
    assert cfg.eor_line(ip_address("10.0.0.1")) == "neighbor 10.0.0.1 announce eor ipv4 unicast"


def test_exabgp_json_route_parsing() -> None:
    attrs = {"origin": "igp",
             "as-path": {"0": {"element": "as-sequence", "value": [65000, 65011]}},
             "community": [[65000, 100], [65535, 65281]],
             "large-community": [[65000, 1, 2]], "local-preference": 150}
    r = _route(ip_address("10.55.0.1"), "10.244.1.0/24", "10.55.0.1", attrs)
    assert r.as_path == (65000, 65011)
    assert r.communities == {"65000:100", "65535:65281"}
    assert r.large_communities == {"65000:1:2"} and r.local_pref == 150
    assert _route(ip_address("10.0.0.1"), "10.0.0.0/8", "x", {"as-path": [1, 2]}).as_path == (
        1, 2)


def test_exabgp_takes_the_global_of_two_ipv6_next_hops() -> None:
    """FRR sends an IPv6 next hop as global and link-local; ExaBGP lists the NLRI under
    both, in either order: the route keeps the global one (IPv4 over IPv6 too)."""
    from bgp.exabgp.adapter import announced

    for order in ((("fe80::1", "fd55::1")), ("fd55::1", "fe80::1")):
        upd = {"announce": {"ipv4 unicast": {nh: [{"nlri": "10.244.1.0/24"}]
                                             for nh in order}}}
        (r,) = announced(ip_address("fd55::1"), upd)
        assert r.next_hop == ip_address("fd55::1"), order
    upd = {"announce": {"ipv6 unicast": {"fe80::1": [{"nlri": "fd00:1::/64"}]}}}
    assert announced(ip_address("fe80::1"), upd)[0].next_hop == ip_address("fe80::1")


def test_gobgp_path_round_trip() -> None:
    from bgp.gobgp import convert

    for p in (path_from_texts("10.1.0.0/24", communities=["65000:1", "no-export"],
                              large_communities=["1:2:3"], local_pref=200),
              path_from_texts("fd00::/64", communities=["65000:6"]),
              path_from_texts("10.2.0.0/16", next_hop="10.9.9.9")):
        pb = convert.path_pb(p)
        r = convert.route_of_pb(pb)
        assert r is not None and convert.is_local(pb)
        assert convert.path_of_route(r, keep_next_hop=True) == p
    assert convert.path_pb(path_from_texts("10.1.0.0/24"), withdraw=True).is_withdraw


def test_gobgp_peer_conversion_carries_features() -> None:
    from bgp.gobgp import convert

    pb = convert.peer_pb(PEER, 65011, local_restarting=True)
    assert pb.conf.auth_password == "s3cret" and pb.conf.peer_asn == 65000
    assert pb.ebgp_multihop.enabled and pb.ebgp_multihop.multihop_ttl == 3
    assert pb.graceful_restart.notification_enabled and pb.graceful_restart.local_restarting
    assert pb.transport.passive_mode and pb.timers.config.hold_time == 9
    assert [a.config.family.afi for a in pb.afi_safis] == [convert.family_pb(IPV4_UNICAST).afi]


def test_ribin_best_path_events() -> None:
    rib = RibIn()
    pfx = ip_network("10.1.0.0/24")
    a, b = ip_address("10.0.0.1"), ip_address("10.0.0.2")
    ra = Route(prefix=pfx, peer=a, as_path=(1, 2))
    rb = Route(prefix=pfx, peer=b, as_path=(3,))
    assert [e.route for e in rib.update(ra)] == [ra]
    assert [e.route for e in rib.update(rb)] == [rb]
    assert rib.update(Route(prefix=pfx, peer=a, as_path=(1, 2))) == []  # unchanged best
    assert [e.route for e in rib.drop_peer(b)] == [ra]
    assert [e.route for e in rib.withdraw(a, pfx)] == [None]


def test_exabgp_ipv4_self_paths_to_an_ipv6_peer_name_its_ipv6_address() -> None:
    """ExaBGP's "self" of an IPv4 route on an IPv6 session is its router id; the lines
    spell out the session's IPv6 address for that neighbor, keep "self" for the IPv4
    neighbor, and leave paths with their own next hop (and IPv6 ones) in one line for all."""
    both = (IPV4_UNICAST, IPV6_UNICAST)
    g = GlobalConfig(asn=65011, router_id=ip_address("10.55.0.11"),
                     listen_addresses=(ip_address("10.55.0.11"), ip_address("fd55::11")))
    v6 = PeerSpec(name="a", address=ip_address("fd55::1"), peer_asn=1, families=both)
    v4 = PeerSpec(name="b", address=ip_address("10.55.0.1"), peer_asn=1, families=both)
    peers = {v6.address: v6, v4.address: v4}
    own = path_from_texts("10.244.1.0/24")
    fixed = path_from_texts("10.244.9.0/24", next_hop="10.55.0.99")
    six = path_from_texts("fd00:244:1::/64")
    lines = cfg.announce_for(g, peers, [own, fixed, six])
    assert sorted(lines) == sorted([
        "announce attributes next-hop 10.55.0.99 origin igp nlri 10.244.9.0/24",
        "announce attributes next-hop self origin igp nlri fd00:244:1::/64",
        "neighbor 10.55.0.1 announce attributes next-hop self origin igp nlri 10.244.1.0/24",
        "neighbor fd55::1 announce attributes next-hop fd55::11 origin igp nlri 10.244.1.0/24",
    ])
    assert cfg.announce_for(g, peers, [own], only=v4.address) == [
        "neighbor 10.55.0.1 announce attributes next-hop self origin igp nlri 10.244.1.0/24"]
    assert cfg.announce_for(g, peers, [own], only=v6.address) == [
        "neighbor fd55::1 announce attributes next-hop fd55::11 origin igp nlri 10.244.1.0/24"]
    # no IPv6 local address known: ExaBGP's own choice, in one line for all
    bare = GlobalConfig(asn=65011, router_id=ip_address("10.55.0.11"))
    assert cfg.announce_for(bare, peers, [own]) == [
        "announce attributes next-hop self origin igp nlri 10.244.1.0/24"]
