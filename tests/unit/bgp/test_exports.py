"""Per-neighbor exports: the marks gobgpd's paths carry and the grants its policy needs
(bgp.gobgp.exports), and the export maps every speaker checks (bgp.speaker)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from bgp.fake import FakeSpeaker
from bgp.gobgp.exports import NOBODY, grant, marked, unmarked
from bgp.speaker import index_exports, index_paths
from bgp.types import GlobalConfig, PeerSpec, SessionState, path_from_texts

A, B = ip_address("10.55.0.1"), ip_address("fd55::1")
POD = path_from_texts("10.244.1.0/24", communities=["65000:100"])
POD_B = path_from_texts("10.244.1.0/24", communities=["65009:1"])
LB = path_from_texts("198.51.100.10/32", large_communities=["65000:2:10"])
DARK = path_from_texts("198.51.100.11/32")


def test_each_path_carries_one_mark_per_neighbor_that_gets_it() -> None:
    paths = index_paths([POD, LB, DARK])
    out, grants = marked(paths, {A: index_paths([POD, LB]), B: index_paths([POD_B])})
    ga_pod, gb_pod, ga_lb = grant(A, POD), grant(B, POD_B), grant(A, LB)
    assert grants == {ga_pod, gb_pod, ga_lb}
    assert out[POD.prefix].large_communities == {ga_pod.marker, gb_pod.marker}
    assert out[LB.prefix].large_communities == {"65000:2:10", ga_lb.marker}
    assert out[DARK.prefix].large_communities == {NOBODY}  # nobody gets it: marked so
    assert {unmarked(p) for p in out.values()} == {POD, LB, DARK}
    # what a grant gives: the neighbor's own attributes
    assert (gb_pod.peer, gb_pod.communities, gb_pod.large_communities) == (
        "fd55::1", ("65009:1",), ())
    assert ga_pod.marker.startswith("4294967294:") and ga_pod.marker != gb_pod.marker


def test_marks_stay_the_same_from_pass_to_pass_and_change_with_what_is_given() -> None:
    paths = index_paths([POD, LB])
    one, _ = marked(paths, {A: index_paths([POD])})
    two, _ = marked(paths, {A: index_paths([POD])})
    assert one == two  # nothing is sent again for an unchanged plan
    moved, _ = marked(paths, {A: index_paths([POD_B])})  # other attributes: another mark
    assert moved[POD.prefix] != one[POD.prefix]
    assert moved[LB.prefix] == one[LB.prefix]


def test_exports_must_name_prefixes_among_the_paths() -> None:
    paths = index_paths([POD])
    assert index_exports(paths, None) is None
    assert index_exports(paths, {A: [POD_B]}) == {A: {POD.prefix: POD_B}}
    with pytest.raises(ValueError, match="198.51.100.10/32 not among the paths"):
        index_exports(paths, {A: [LB]})
    with pytest.raises(ValueError, match="10.244.1.0/24"):
        index_exports(paths, {A: [POD, POD_B]})  # two paths for one prefix


def test_the_fake_gives_each_neighbor_its_own() -> None:
    sp = FakeSpeaker()
    sp.start(GlobalConfig(65001, ip_address("10.55.0.11")))
    sp.set_peers([PeerSpec("a", A, 65000), PeerSpec("b", B, 65000)])
    for a in (A, B):
        sp.set_state(a, SessionState.ESTABLISHED)
    sp.set_paths([POD, LB], {A: [POD, LB], B: [POD_B]})
    assert sp.advertised(A) == {POD, LB}
    assert sp.advertised(B) == {POD_B}
    assert sp.advertised() == {POD, LB}
    sp.set_paths([POD, LB])
    assert sp.advertised(B) == {POD, LB}
