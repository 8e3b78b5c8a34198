"""The Speaker contract: one suite that every adapter (fake, GoBGP, ExaBGP) must pass.

A test module subclasses `SpeakerContract` and provides a `speaker` fixture that yields a
started speaker with no established neighbor (peer addresses are unreachable), and may
override `remove_behind_back(speaker, path)` to delete a path inside the speaker daemon
without going through the adapter (the drift test skips when it is not overridden).
"""

from __future__ import annotations

from ipaddress import IPv4Network, ip_address

import pytest

from bgp.speaker import Speaker, sort_paths
from bgp.types import IPV4_UNICAST, Path, PeerSpec, SessionState, path_from_texts

A = path_from_texts("10.200.1.0/24", communities=["65000:100"])
B = path_from_texts("10.200.2.0/24", large_communities=["65000:1:2"])
B2 = path_from_texts("10.200.2.0/24", communities=["65000:7", "no-export"])
C = path_from_texts("198.51.100.7/32", communities=["65000:200"], large_communities=["1:2:3"])
LP = path_from_texts("10.200.3.0/24", local_pref=250)
V6 = path_from_texts("fd00:200::/64", communities=["65000:600"])

PEER1 = PeerSpec(name="tor-a", address=ip_address("192.0.2.1"), peer_asn=65000,
                 families=(IPV4_UNICAST,), passive=True)
PEER2 = PeerSpec(name="tor-b", address=ip_address("192.0.2.2"), peer_asn=65001, passive=True)


class SpeakerContract:
    """Behaviour every Speaker must show; subclasses provide the `speaker` fixture."""

    def test_is_a_speaker(self, speaker: Speaker) -> None:
        assert isinstance(speaker, Speaker)

    def test_starts_empty(self, speaker: Speaker) -> None:
        assert speaker.peers() == []
        assert speaker.advertised() == set()
        assert speaker.received() == set()

    def test_set_paths_announces_all_attributes(self, speaker: Speaker) -> None:
        want = {A, B, C, V6}
        diff = speaker.set_paths(want)
        assert diff.announce == sort_paths(want)
        assert diff.withdraw == ()
        assert speaker.advertised() == want

    def test_local_pref_round_trips(self, speaker: Speaker) -> None:
        speaker.set_paths({LP})
        assert speaker.advertised() == {LP}

    def test_set_paths_sends_only_the_difference(self, speaker: Speaker) -> None:
        speaker.set_paths({A, B})
        diff = speaker.set_paths({B2, C})
        assert diff.announce == sort_paths({B2, C})
        assert diff.withdraw == (A,)
        assert speaker.advertised() == {B2, C}

    def test_set_paths_is_idempotent(self, speaker: Speaker) -> None:
        speaker.set_paths({A, C})
        diff = speaker.set_paths({C, A})
        assert not diff
        assert speaker.advertised() == {A, C}

    def test_withdraw_everything(self, speaker: Speaker) -> None:
        speaker.set_paths({A, B, V6})
        diff = speaker.set_paths(set())
        assert set(diff.withdraw) == {A, B, V6}
        assert speaker.advertised() == set()

    def test_two_paths_for_one_prefix_is_an_error(self, speaker: Speaker) -> None:
        speaker.set_paths({A})
        with pytest.raises(ValueError, match="10.200.2.0/24"):
            speaker.set_paths({B, B2})
        assert speaker.advertised() == {A}

    def test_bulk_paths(self, speaker: Speaker) -> None:
        many = {Path(prefix=ip_network_32(i)) for i in range(2000)}
        speaker.set_paths(many)
        assert speaker.advertised() == many
        half = {p for p in many if int(p.prefix.network_address) % 2 == 0}
        diff = speaker.set_paths(half)
        assert len(diff.withdraw) == 1000 and not diff.announce
        assert speaker.advertised() == half

    def test_peers_add_update_remove(self, speaker: Speaker) -> None:
        diff = speaker.set_peers([PEER1, PEER2])
        assert diff.added == (PEER1.address, PEER2.address)
        got = speaker.peers()
        assert [p.address for p in got] == [PEER1.address, PEER2.address]
        assert all(p.state is not SessionState.ESTABLISHED for p in got)
        assert {p.peer_asn for p in got} == {65000, 65001}

        slower = PeerSpec(**{**PEER1.__dict__, "hold_time": 30, "keepalive": 10})
        diff = speaker.set_peers([slower, PEER2])
        assert diff.updated == (PEER1.address,) and not diff.added and not diff.removed
        assert [p.address for p in speaker.peers()] == [PEER1.address, PEER2.address]

        diff = speaker.set_peers([slower])
        assert diff.removed == (PEER2.address,)
        assert [p.address for p in speaker.peers()] == [PEER1.address]
        assert not speaker.set_peers([slower])

    def test_unestablished_peer_has_no_adj_rib_out(self, speaker: Speaker) -> None:
        speaker.set_peers([PEER1])
        speaker.set_paths({A})
        assert speaker.advertised(PEER1.address) == set()
        assert speaker.received(PEER1.address) == set()

    def test_no_best_changes_without_neighbors(self, speaker: Speaker) -> None:
        assert speaker.best_changes(timeout=0.2) == []

    # -- drift repair ----------------------------------------------------------------
    def remove_behind_back(self, speaker: Speaker, path: Path) -> None:
        """Delete `path` inside the daemon, bypassing the adapter's memory."""
        pytest.skip("this speaker's RIB cannot be changed behind the adapter's back")

    def test_resync_without_drift_sends_nothing(self, speaker: Speaker) -> None:
        speaker.set_peers([PEER1])
        speaker.set_paths({A, B, C, LP, V6})
        assert not speaker.resync()
        assert speaker.advertised() == {A, B, C, LP, V6}

    def test_resync_before_any_path_is_empty(self, speaker: Speaker) -> None:
        assert not speaker.resync()

    def test_resync_repairs_a_path_removed_behind_the_back(self, speaker: Speaker) -> None:
        speaker.set_peers([PEER1])
        speaker.set_paths({A, C, V6})
        self.remove_behind_back(speaker, C)
        assert speaker.advertised() == {A, V6}
        assert not speaker.set_paths({A, C, V6})  # the adapter's memory still has C
        diff = speaker.resync()
        assert diff.announce == (C,) and diff.withdraw == ()
        assert speaker.advertised() == {A, C, V6}
        assert not speaker.resync()


def ip_network_32(i: int) -> IPv4Network:
    return IPv4Network((0x0AC80000 + 0x10000 + i, 32))
