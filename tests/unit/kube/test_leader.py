"""Leader election over a Lease, on the in-memory API with clocks the test moves."""

from __future__ import annotations

from controller.leader import LEASE, LeaderElector
from controller.sources.kubeapi import Obj, Resource
from controller.sources.kubefake import FakeKubeAPI


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pair(api: FakeKubeAPI, clock: Clock) -> tuple[LeaderElector, LeaderElector]:
    def make(identity: str) -> LeaderElector:
        return LeaderElector(api, "rr", identity, duration=15, renew_deadline=10, retry=2,
                             wall=clock, mono=clock)
    return make("a"), make("b")


def holder(api: FakeKubeAPI) -> str:
    return str(api.get(LEASE, "rackroute-operator", "rr")["spec"].get("holderIdentity") or "")


def test_one_leads_the_other_waits_and_takes_over_when_renewals_stop() -> None:
    api, clock = FakeKubeAPI(), Clock()
    a, b = pair(api, clock)
    assert a.step() and a.is_leader()
    assert not b.step() and not b.is_leader()
    for _ in range(10):  # a renews every 2 s: b never takes over
        clock.t += 2
        assert a.step()
        assert not b.step()
    assert holder(api) == "a"
    # a stops renewing (crashed): b waits out the duration from when it saw the last change
    clock.t += 14
    assert not b.step()
    clock.t += 2
    assert b.step() and b.is_leader()
    lease = api.get(LEASE, "rackroute-operator", "rr")
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("b", 1)
    # a comes back: it sees b's lease and leads no more
    assert not a.step() and not a.is_leader()


def test_a_leader_that_cannot_renew_stops_before_anyone_may_take_over() -> None:
    api, clock = FakeKubeAPI(), Clock()
    a, _ = pair(api, clock)
    assert a.step()
    api.installed = set()  # the API server answers 404 to everything: renewals fail
    clock.t += 9
    assert a.step()  # still within the renew deadline
    clock.t += 2
    assert not a.step() and not a.is_leader()  # 11 s > 10 s deadline < 15 s duration


def test_release_hands_over_at_once() -> None:
    api, clock = FakeKubeAPI(), Clock()
    a, b = pair(api, clock)
    assert a.step()
    assert not b.step()
    a.release()
    assert not a.is_leader() and holder(api) == ""
    assert b.step()


class Racing(FakeKubeAPI):
    """Lets a rival write the Lease between a candidate's read and its write."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: LeaderElector | None = None

    def merge_patch(self, res: Resource, name: str, patch: Obj, namespace: str = "",
                    sub: str = "") -> Obj:
        rival, self.rival = self.rival, None
        if rival is not None:
            assert rival.step()
        return super().merge_patch(res, name, patch, namespace, sub)


def test_of_two_racing_for_an_expired_lease_one_wins() -> None:
    api, clock = Racing(), Clock()
    a, b = pair(api, clock)
    c = LeaderElector(api, "rr", "c", duration=15, renew_deadline=10, wall=clock, mono=clock)
    assert c.step()
    assert not a.step() and not b.step()
    clock.t += 16  # c is gone; a and b both see the lease expired
    api.rival = b  # b writes between a's read and a's write
    assert not a.step()  # a's write carries the old resourceVersion: 409
    assert b.is_leader() and holder(api) == "b"
