"""The Speaker contract against the in-memory fake, plus the fake's network-side hooks."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address, ip_network

import pytest

from bgp.fake import FakeSpeaker
from bgp.speaker import Speaker, SpeakerError
from bgp.types import (
    IPV4_UNICAST,
    BestPathEvent,
    GlobalConfig,
    Path,
    Route,
    SessionState,
)
from tests.unit.bgp.contract import PEER1, PEER2, V6, A, SpeakerContract

CONFIG = GlobalConfig(asn=65011, router_id=ip_address("10.99.0.1"))


@pytest.fixture(params=["fake"])
def speaker(request: pytest.FixtureRequest) -> Iterator[Speaker]:
    s = FakeSpeaker()
    s.start(CONFIG)
    yield s
    s.stop()


class TestFakeContract(SpeakerContract):
    def remove_behind_back(self, speaker: Speaker, path: Path) -> None:
        assert isinstance(speaker, FakeSpeaker)
        speaker.drift_remove(path.prefix)


def test_requires_start() -> None:
    s = FakeSpeaker()
    with pytest.raises(SpeakerError):
        s.set_paths({A})


def test_established_peer_gets_paths_of_its_families() -> None:
    s = FakeSpeaker()
    s.start(CONFIG)
    s.set_peers([PEER1, PEER2])
    s.set_paths({A, V6})
    s.set_state(PEER1.address, SessionState.ESTABLISHED)
    s.set_state(PEER2.address, SessionState.ESTABLISHED)
    assert s.advertised(PEER1.address) == {A}  # PEER1 is ipv4 only
    assert s.advertised(PEER2.address) == {A, V6}
    st = {p.address: p for p in s.peers()}
    assert st[PEER1.address].advertised == {IPV4_UNICAST: 1}
    assert st[PEER1.address].established_at is not None


def test_best_path_events_follow_local_pref_then_as_path() -> None:
    s = FakeSpeaker()
    s.start(CONFIG)
    s.set_peers([PEER1, PEER2])
    s.set_state(PEER1.address, SessionState.ESTABLISHED)
    s.set_state(PEER2.address, SessionState.ESTABLISHED)
    pfx = ip_network("10.1.2.0/24")
    r1 = Route(prefix=pfx, peer=PEER1.address, as_path=(65000, 65012))
    r2 = Route(prefix=pfx, peer=PEER2.address, as_path=(65001,))
    s.inject(r1)
    assert s.best_changes() == [BestPathEvent(pfx, r1)]
    s.inject(r2)  # shorter AS path wins
    assert s.best_changes() == [BestPathEvent(pfx, r2)]
    s.withdraw_received(PEER2.address, pfx)
    assert s.best_changes() == [BestPathEvent(pfx, r1)]
    s.set_state(PEER1.address, SessionState.IDLE)  # session loss drops its routes
    assert s.best_changes(timeout=0.1) == [BestPathEvent(pfx, None)]
    assert s.received() == set()


def test_inject_from_down_peer_is_refused() -> None:
    s = FakeSpeaker()
    s.start(CONFIG)
    s.set_peers([PEER1])
    with pytest.raises(SpeakerError):
        s.inject(Route(prefix=ip_network("10.1.0.0/16"), peer=PEER1.address))


def test_records_each_diff() -> None:
    s = FakeSpeaker()
    s.start(CONFIG)
    s.set_paths({A})
    s.set_paths({A})
    s.set_paths(set())
    assert [(d.announce, d.withdraw) for d in s.sent] == [((A,), ()), ((), (A,))]
