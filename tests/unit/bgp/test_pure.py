"""Pure helpers: community parsing, path diffing, peer diffing, batching, log lines."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgp.speaker import (
    batches,
    diff_paths,
    diff_peers,
    index_paths,
    index_peers,
    logfmt,
    sort_paths,
)
from bgp.types import (
    Path,
    PeerSpec,
    community_text,
    community_value,
    large_community_parts,
    path_from_texts,
)


def test_community_values() -> None:
    assert community_value("65000:100") == (65000 << 16) | 100
    assert community_value("no-export") == 0xFFFFFF01
    assert community_value(" NO-ADVERTISE ") == 0xFFFFFF02
    assert community_value("4294967295") == 0xFFFFFFFF
    for bad in ("65536:1", "1:65536", "-1", "4294967296", "a:b"):
        with pytest.raises(ValueError):
            community_value(bad)


@given(st.integers(0, 0xFFFFFFFF))
def test_community_text_round_trips(v: int) -> None:
    assert community_value(community_text(v)) == v


def test_large_communities() -> None:
    assert large_community_parts("65000:1:2") == (65000, 1, 2)
    for bad in ("1:2", "1:2:3:4", "1:2:4294967296"):
        with pytest.raises(ValueError):
            large_community_parts(bad)


def test_path_from_texts_canonicalizes() -> None:
    p = path_from_texts("10.0.0.0/24", communities=["no-export", "65000:1"],
                        large_communities=["065000:01:2"], local_pref=7)
    assert p.communities == {"65535:65281", "65000:1"}
    assert p.large_communities == {"65000:1:2"}
    assert p.local_pref == 7 and p.next_hop is None


def test_diff_paths_replaces_changed_and_withdraws_removed() -> None:
    a = path_from_texts("10.0.1.0/24")
    b = path_from_texts("10.0.2.0/24")
    b2 = path_from_texts("10.0.2.0/24", communities=["1:1"])
    c = path_from_texts("fd00::/64")
    d = diff_paths(index_paths([a, b]), index_paths([b2, c]))
    assert d.announce == (b2, c)
    assert d.withdraw == (a,)
    assert not diff_paths(index_paths([a]), index_paths([a]))


def test_index_paths_rejects_conflicts_but_accepts_duplicates() -> None:
    a = path_from_texts("10.0.1.0/24")
    assert index_paths([a, a]) == {a.prefix: a}
    with pytest.raises(ValueError):
        index_paths([a, path_from_texts("10.0.1.0/24", local_pref=1)])


prefixes = st.one_of(
    st.builds(lambda i, n: ip_network((i, n), strict=False), st.integers(0, 2**32 - 1),
              st.integers(8, 32)),
    st.builds(lambda i, n: ip_network((i, n), strict=False), st.integers(0, 2**128 - 1),
              st.integers(16, 128)),
)
paths = st.builds(Path, prefix=prefixes, local_pref=st.none() | st.integers(0, 5))


@given(st.lists(paths), st.lists(paths))
def test_applying_a_diff_reaches_the_desired_state(cur: list[Path], want: list[Path]) -> None:
    current = {p.prefix: p for p in cur}
    desired = {p.prefix: p for p in want}
    d = diff_paths(current, desired)
    state = dict(current)
    for p in d.withdraw:
        del state[p.prefix]
    for p in d.announce:
        state[p.prefix] = p
    assert state == desired
    assert set(d.announce).isdisjoint(current.values())
    assert list(d.announce) == list(sort_paths(d.announce))


def test_diff_peers() -> None:
    p1 = PeerSpec(name="a", address=ip_address("10.0.0.1"), peer_asn=1)
    p2 = PeerSpec(name="b", address=ip_address("fd00::1"), peer_asn=2)
    p1b = PeerSpec(name="a", address=ip_address("10.0.0.1"), peer_asn=1, password="x")
    d = diff_peers(index_peers([p1]), index_peers([p1b, p2]))
    assert d.added == (p2.address,) and d.updated == (p1.address,) and d.removed == ()
    d = diff_peers(index_peers([p1, p2]), index_peers([]))
    assert d.removed == (p1.address, p2.address)
    with pytest.raises(ValueError):
        index_peers([p1, PeerSpec(name="c", address=p1.address, peer_asn=9)])


def test_password_is_not_in_repr() -> None:
    p = PeerSpec(name="a", address=ip_address("10.0.0.1"), peer_asn=1, password="s3cret")
    assert "s3cret" not in repr(p)


def test_batches() -> None:
    ps = [path_from_texts(f"10.0.{i}.0/24") for i in range(5)]
    assert [len(b) for b in batches(ps, 2)] == [2, 2, 1]
    assert list(batches([], 3)) == []


def test_logfmt_quotes() -> None:
    assert logfmt("x", a=1, b="two words", c="") == 'event=x a=1 b="two words" c=""'
