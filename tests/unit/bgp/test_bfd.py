"""BFD (RFC 5880/5881) without sockets: the packet codec and its checks, two sessions wired
back to back on a hand-driven clock (handshake, Poll/Final, detection), reception rules,
jitter and timer changes."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable

import pytest

from bgp.bfd import (
    BFD_PORT,
    SLOW_TX_US,
    SOURCE_PORTS,
    Diag,
    Packet,
    Session,
    Settings,
    State,
    decode,
    encode,
)

A_DISC, B_DISC = 0x11111111, 0x22222222
DEFAULT = Settings()


def raw(*, vers: int = 1, diag: int = 0, state: int = 3, flags: int = 0, mult: int = 3,
        length: int = 24, my: int = 5, your: int = 7, tx: int = 300_000, rx: int = 300_000,
        echo: int = 0) -> bytes:
    """A packet written field by field, independently of `encode`."""
    return struct.pack("!BBBBIIIII", vers << 5 | diag, state << 6 | flags, mult, length,
                       my, your, tx, rx, echo)


# --- codec -------------------------------------------------------------------------------


def test_constants() -> None:
    assert BFD_PORT == 3784 and SLOW_TX_US == 1_000_000
    assert SOURCE_PORTS.start == 49152 and SOURCE_PORTS.stop == 65536 and 65535 in SOURCE_PORTS


def test_round_trip_with_every_flag() -> None:
    p = Packet(State.INIT, Diag.REVERSE_CONCAT_PATH_DOWN, 255, 0xFFFFFFFF, 1, 123_456, 654_321,
               required_min_echo_rx_us=50_000, poll=True, final=True, cpi=True, demand=True)
    data = encode(p)
    assert len(data) == 24 and data[1] == (2 << 6) | 0x20 | 0x10 | 0x08 | 0x02
    assert decode(data) == p


@pytest.mark.parametrize(("flag", "bit"),
                         [("poll", 0x20), ("final", 0x10), ("cpi", 0x08), ("demand", 0x02)])
def test_each_flag_has_its_own_bit(flag: str, bit: int) -> None:
    p = Packet(State.DOWN, Diag.NONE, 3, 5, 0, SLOW_TX_US, 300_000, **{flag: True})
    assert encode(p)[1] == (1 << 6) | bit
    assert decode(encode(p)) == p


def test_known_packet_byte_for_byte() -> None:
    p = Packet(State.UP, Diag.NEIGHBOR_DOWN, 3, 0x01020304, 0xA0B0C0D0, 300_000, 250_000,
               poll=True)
    # version 1 | diag 3; state Up (3 << 6) | P; mult 3; length 24; then the five words
    expected = bytes.fromhex("23e00318" "01020304" "a0b0c0d0" "000493e0" "0003d090" "00000000")
    assert encode(p) == expected
    assert decode(expected) == p


def test_the_base_packet_of_the_rejection_tests_is_valid() -> None:
    assert decode(raw()) == Packet(State.UP, Diag.NONE, 3, 5, 7, 300_000, 300_000)
    assert decode(raw(length=24) + b"\0\0").my_disc == 5  # trailing bytes beyond Length
    assert decode(raw(length=26) + b"\0\0").my_disc == 5
    assert decode(raw(state=1, your=0)).your_disc == 0  # unknown to a Down peer: fine
    assert decode(raw(state=0, your=0)).state == State.ADMIN_DOWN


@pytest.mark.parametrize(("data", "field"), [
    (raw()[:23], "too short"),
    (b"", "too short"),
    (raw(vers=0), "version"),
    (raw(vers=2), "version"),
    (raw(length=23), "length"),
    (raw(length=25), "length"),
    (raw(flags=0x04), "authentication"),
    (raw(mult=0), "detect mult"),
    (raw(flags=0x01), "multipoint"),
    (raw(my=0), "my discriminator"),
    (raw(state=3, your=0), "your discriminator"),
    (raw(state=2, your=0), "your discriminator"),
    (raw(diag=31), "diag"),
])
def test_decode_rejects_naming_the_field(data: bytes, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        decode(data)


def test_settings_and_discriminator_are_checked() -> None:
    for bad in ({"multiplier": 0}, {"multiplier": 256}, {"min_tx_ms": 0}, {"min_rx_ms": -1}):
        with pytest.raises(ValueError):
            Settings(**bad)
    for disc in (0, 2**32):
        with pytest.raises(ValueError):
            Session(disc, Settings(), 0.0)


# --- two sessions back to back -----------------------------------------------------------


class Link:
    """Sessions a and b wired back to back through the codec, on a clock moved by hand."""

    def __init__(self, a: Settings = DEFAULT, b: Settings = DEFAULT, seed: int = 1) -> None:
        self.now = 0.0
        self.s = {"a": Session(A_DISC, a, 0.0, random.Random(seed)),
                  "b": Session(B_DISC, b, 0.0, random.Random(seed + 1))}
        self.sent: list[tuple[float, str, Packet]] = []
        self.cut: set[str] = set()  # senders whose packets get lost
        self.last_rx = {"a": -1.0, "b": -1.0}
        self.states = {"a": [State.DOWN], "b": [State.DOWN]}

    @property
    def a(self) -> Session:
        return self.s["a"]

    @property
    def b(self) -> Session:
        return self.s["b"]

    def _note(self, name: str) -> None:
        if self.states[name][-1] != self.s[name].state:
            self.states[name].append(self.s[name].state)

    def deliver(self, sender: str, pkts: list[Packet]) -> None:
        queue = [(sender, p) for p in pkts]
        for _ in range(10):  # immediate answers settle within a few packets
            if not queue:
                return
            src, p = queue.pop(0)
            self.sent.append((self.now, src, p))
            if src in self.cut:
                continue
            dst = "b" if src == "a" else "a"
            out = self.s[dst].receive(decode(encode(p)), self.now)
            self.last_rx[dst] = self.now
            self._note(dst)
            queue += [(dst, q) for q in out]
        raise AssertionError(f"endless exchange of immediate packets: {queue}")

    def step(self) -> None:
        """Move to the earliest deadline and run what is due there on both sides."""
        t = min(self.a.next_deadline(), self.b.next_deadline())
        assert self.now <= t < math.inf
        self.now = t
        for name in ("a", "b"):
            s = self.s[name]
            if s.next_deadline() <= t:
                out = s.poll(t)
                assert out, "poll() at next_deadline() must do the work due"
                self._note(name)
                self.deliver(name, out)
                assert s.next_deadline() > t

    def run_until(self, end: float, stop: Callable[[], bool] = lambda: False) -> None:
        while min(self.a.next_deadline(), self.b.next_deadline()) <= end and not stop():
            self.step()
        if not stop():
            self.now = end

    def from_(self, sender: str, since: float = 0.0) -> list[tuple[float, Packet]]:
        return [(t, p) for t, src, p in self.sent if src == sender and t >= since]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def up_link(a: Settings = DEFAULT, b: Settings = DEFAULT) -> Link:
    link = Link(a, b)
    link.run_until(5.0)
    assert link.a.state == link.b.state == State.UP
    assert not any(p.poll or p.final for t, _, p in link.sent if t > 2.0)  # polls are over
    return link


def test_handshake_reaches_up_then_fast_timers_through_poll_final() -> None:
    link = Link()
    link.run_until(0.0)  # everything at t=0 is immediate: a's first Down starts it all
    first = [(src, p.state, p.your_disc) for _, src, p in link.sent[:3]]
    assert first == [("a", State.DOWN, 0), ("b", State.INIT, A_DISC), ("a", State.UP, B_DISC)]
    assert link.states == {"a": [State.DOWN, State.UP], "b": [State.DOWN, State.INIT, State.UP]}
    assert link.a.remote_disc == B_DISC and link.b.remote_disc == A_DISC
    assert link.a.remote_state == link.b.remote_state == State.UP
    assert link.a.diag == link.b.diag == Diag.NONE

    # Slow while not Up; going Up announces the fast rate with P, answered with F.
    assert all(p.desired_min_tx_us == SLOW_TX_US for _, p in link.from_("a")[:1])
    a_up = link.sent[2][2]
    assert a_up.poll and not a_up.final and a_up.desired_min_tx_us == 300_000
    answer = link.sent[3]
    assert answer[1] == "b" and answer[2].final and not answer[2].poll
    link.run_until(5.0)
    b_polls = [t for t, p in link.from_("b") if p.poll]
    a_finals = [t for t, p in link.from_("a") if p.final]
    assert b_polls and a_finals and max(b_polls) <= min(a_finals)  # b's poll answered, then over
    late = link.from_("a", 1.0) + link.from_("b", 1.0)
    assert late and not any(p.poll or p.final for _, p in late)
    for side in ("a", "b"):
        times = [t for t, p in link.from_(side, 1.0)]
        assert all(0.225 <= g <= 0.3 for g in gaps(times)), side
        assert all(p.state == State.UP and p.desired_min_tx_us == 300_000
                   for _, p in link.from_(side, 1.0))


def test_handshake_when_both_down_packets_cross() -> None:
    a, b = Session(A_DISC, Settings(), 0.0), Session(B_DISC, Settings(), 0.0)
    pa, pb = a.poll(0.0), b.poll(0.0)
    ra, rb = a.receive(pb[0], 0.01), b.receive(pa[0], 0.01)
    assert a.state == b.state == State.INIT
    assert len(ra) == len(rb) == 1 and ra[0].state == State.INIT and ra[0].your_disc == B_DISC
    a.receive(rb[0], 0.02)
    b.receive(ra[0], 0.02)
    assert (a.state, b.state) == (State.UP, State.UP)


@pytest.mark.parametrize(("a_set", "b_set", "detect_us"), [
    (Settings(), Settings(), 3 * 300_000),
    (Settings(300, 300, 3), Settings(100, 500, 4), 4 * 500_000),  # b's mult, b's TX
    (Settings(400, 300, 3), Settings(300, 100, 2), 2 * 400_000),  # a's RX is the larger
])
def test_a_silent_peer_is_detected_after_the_detection_time_and_not_before(
        a_set: Settings, b_set: Settings, detect_us: int) -> None:
    link = up_link(a_set, b_set)
    link.cut.add("b")
    last = link.last_rx["a"]
    link.run_until(link.now + 30.0, stop=lambda: link.a.state != State.UP)
    assert link.now == last + detect_us / 1_000_000  # a was Up until exactly then
    assert link.states["a"] == [State.DOWN, State.UP, State.DOWN]
    assert link.a.diag == Diag.DETECT_EXPIRED
    assert link.a.remote_disc == 0 and link.a.remote_state == State.DOWN
    t, down = link.from_("a")[-1]
    assert t == link.now and down.state == State.DOWN and down.diag == Diag.DETECT_EXPIRED
    assert down.your_disc == 0 and down.desired_min_tx_us == SLOW_TX_US
    # b still hears a, and follows it down.
    assert link.b.state == State.DOWN and link.b.diag == Diag.NEIGHBOR_DOWN
    # Until Up again, a tells why it went down; once b is heard again both come back.
    assert all(p.diag == Diag.DETECT_EXPIRED for _, p in link.from_("a", link.now))
    link.cut.clear()
    link.run_until(link.now + 5.0)
    assert (link.a.state, link.b.state) == (State.UP, State.UP)
    assert (link.a.diag, link.b.diag) == (Diag.NONE, Diag.NONE)
    assert link.a.remote_disc == B_DISC


def test_remote_admin_down_takes_an_up_session_down() -> None:
    link = up_link()
    bye = link.b.shutdown(link.now)
    assert bye.state == State.ADMIN_DOWN and bye.diag == Diag.ADMIN_DOWN
    out = link.a.receive(bye, link.now)
    assert link.a.state == State.DOWN and link.a.diag == Diag.NEIGHBOR_DOWN
    assert link.a.remote_state == State.ADMIN_DOWN
    assert len(out) == 1 and out[0].state == State.DOWN and out[0].diag == Diag.NEIGHBOR_DOWN
    # b's slower rate is announced with P; a's one answer carries F and ends that Poll.
    assert bye.poll and out[0].final
    assert link.b.receive(out[0], link.now) == [] and link.b.state == State.ADMIN_DOWN
    # Later AdminDown packets keep a down, without going to Init.
    t = link.b.next_deadline()
    (again,) = link.b.poll(t)
    assert again.state == State.ADMIN_DOWN and not again.poll
    assert link.a.receive(again, t) == []
    assert link.a.state == State.DOWN


def test_packets_for_another_discriminator_are_ignored() -> None:
    link = up_link()
    down = Packet(State.DOWN, Diag.NONE, 3, B_DISC, A_DISC + 1, SLOW_TX_US, 300_000, poll=True)
    assert link.a.receive(down, link.now) == []
    assert link.a.state == State.UP and link.a.remote_disc == B_DISC
    down = Packet(State.DOWN, Diag.NONE, 3, B_DISC, A_DISC, SLOW_TX_US, 300_000)
    assert len(link.a.receive(down, link.now)) == 1
    assert (link.a.state, link.a.diag) == (State.DOWN, Diag.NEIGHBOR_DOWN)


def test_packets_while_admin_down_are_ignored_and_it_never_expires() -> None:
    link = up_link()
    link.a.shutdown(link.now)
    poll = Packet(State.UP, Diag.NONE, 3, B_DISC, A_DISC, 300_000, 300_000, poll=True)
    assert link.a.receive(poll, link.now) == [] and link.a.state == State.ADMIN_DOWN
    init = Packet(State.INIT, Diag.NONE, 3, B_DISC, A_DISC, 300_000, 300_000)
    assert link.a.receive(init, link.now) == [] and link.a.state == State.ADMIN_DOWN
    times = []
    for _ in range(100):  # nothing heard for 100 s: still AdminDown, once a second
        t = link.a.next_deadline()
        out = link.a.poll(t)
        assert [(p.state, p.diag) for p in out] == [(State.ADMIN_DOWN, Diag.ADMIN_DOWN)]
        assert out[0].desired_min_tx_us == SLOW_TX_US
        times.append(t)
    assert times[-1] > link.now + 70 and all(0.75 <= g <= 1.0 for g in gaps(times))


# --- a single session against hand-made packets -------------------------------------------


def periodic(s: Session, count: int) -> tuple[list[float], list[Packet]]:
    times, pkts = [], []
    for _ in range(count):
        t = s.next_deadline()
        out = s.poll(t)
        assert len(out) == 1
        times.append(t)
        pkts += out
    return times, pkts


def test_first_packet_is_down_at_the_slow_rate() -> None:
    s = Session(A_DISC, Settings(200, 100, 4), 10.0)
    assert s.next_deadline() == 10.0
    assert s.poll(10.0) == [Packet(State.DOWN, Diag.NONE, 4, A_DISC, 0, SLOW_TX_US, 200_000)]
    assert s.poll(10.0) == [] and s.next_deadline() > 10.0


@pytest.mark.parametrize(("mult", "low", "high"), [(3, 0.75, 1.0), (1, 0.75, 0.9)])
def test_jitter_keeps_every_gap_within_its_bounds(mult: int, low: float, high: float) -> None:
    s = Session(A_DISC, Settings(multiplier=mult), 0.0, random.Random(7))
    times, _ = periodic(s, 400)
    g = gaps(times)
    assert all(low <= x <= high for x in g)
    assert min(g) < low + 0.02 and max(g) > high - 0.02  # really jittered, across the range


def test_the_interval_is_the_larger_of_our_tx_and_the_remote_rx() -> None:
    s = Session(A_DISC, Settings(), 0.0, random.Random(3))
    s.poll(0.0)
    # Remote AdminDown: we stay Down, so no detection timer gets in the way.
    s.receive(Packet(State.ADMIN_DOWN, Diag.ADMIN_DOWN, 3, 9, 0, SLOW_TX_US, 2_000_000), 0.0)
    times, _ = periodic(s, 100)
    assert all(1.5 <= x <= 2.0 for x in gaps(times))


def test_nothing_periodic_while_the_remote_min_rx_is_zero() -> None:
    s = Session(A_DISC, Settings(), 0.0, random.Random(3))
    assert len(s.poll(0.0)) == 1
    quiet = Packet(State.ADMIN_DOWN, Diag.ADMIN_DOWN, 3, 9, 0, SLOW_TX_US, 0)
    assert len(s.receive(quiet, 0.5)) == 1  # new remote discriminator and timers: told at once
    assert s.next_deadline() == math.inf and s.poll(1000.0) == []
    answer = s.receive(Packet(State.ADMIN_DOWN, Diag.ADMIN_DOWN, 3, 9, 0, SLOW_TX_US, 0,
                              poll=True), 1000.0)
    assert len(answer) == 1 and answer[0].final  # a Poll is still answered
    assert s.next_deadline() == math.inf
    s.receive(Packet(State.ADMIN_DOWN, Diag.ADMIN_DOWN, 3, 9, 0, SLOW_TX_US, 1), 1001.0)
    assert 1001.0 <= s.next_deadline() <= 1001.0 + 1.0 and len(s.poll(s.next_deadline())) == 1


def test_a_poll_gets_one_immediate_final_answer() -> None:
    s = Session(A_DISC, Settings(), 0.0)
    down = Packet(State.DOWN, Diag.NONE, 3, 9, 0, SLOW_TX_US, 300_000)
    out = s.receive(Packet(State.DOWN, Diag.NONE, 3, 9, 0, SLOW_TX_US, 300_000, poll=True), 0.1)
    # A state change (Down -> Init) that answers a Poll: one packet, F set, P clear.
    assert len(out) == 1 and out[0].final and not out[0].poll and out[0].state == State.INIT
    assert s.receive(down, 0.2) == []  # nothing changed, no Poll: nothing to say
    out = s.receive(Packet(State.DOWN, Diag.NONE, 3, 9, 0, SLOW_TX_US, 300_000, poll=True), 0.3)
    assert len(out) == 1 and out[0].final and not out[0].poll


def test_a_state_change_alone_is_sent_at_once() -> None:
    s = Session(A_DISC, Settings(), 0.0)
    s.receive(Packet(State.DOWN, Diag.NONE, 3, 9, 0, SLOW_TX_US, 300_000), 0.1)
    # Same discriminator and timers, no Poll: only the state changes (Init -> Up).
    out = s.receive(Packet(State.INIT, Diag.NONE, 3, 9, A_DISC, SLOW_TX_US, 300_000), 0.2)
    assert [p.state for p in out] == [State.UP]
    assert s.receive(Packet(State.UP, Diag.NONE, 3, 9, A_DISC, SLOW_TX_US, 300_000), 0.3) == []


def test_init_expires_too() -> None:
    s = Session(A_DISC, Settings(), 0.0)
    s.receive(Packet(State.DOWN, Diag.NONE, 2, 9, 0, SLOW_TX_US, 300_000), 0.5)
    assert s.state == State.INIT and s.next_deadline() <= 0.5 + 2 * 1.0
    s.poll(0.5 + 2 * 1.0 - 0.01)
    assert s.state == State.INIT
    out = s.poll(0.5 + 2 * 1.0)
    assert (s.state, s.diag, s.remote_disc) == (State.DOWN, Diag.DETECT_EXPIRED, 0)
    assert [(p.state, p.your_disc) for p in out] == [(State.DOWN, 0)]


def up_session(remote_tx_us: int = 10_000_000) -> Session:
    """A session brought Up by hand-made packets, its Poll Sequence done; the remote sends
    slowly (long detection time) unless told otherwise."""
    s = Session(A_DISC, Settings(), 0.0, random.Random(5))
    out = s.receive(Packet(State.INIT, Diag.NONE, 3, 9, A_DISC, SLOW_TX_US, 300_000), 0.0)
    assert s.state == State.UP and len(out) == 1 and out[0].poll
    assert out[0].desired_min_tx_us == 300_000
    out = s.receive(Packet(State.UP, Diag.NONE, 3, 9, A_DISC, remote_tx_us, 300_000,
                           final=True), 0.0)
    assert len(out) == 1 and not out[0].poll  # remote's timers changed: said at once
    return s


def fin(remote_tx_us: int = 10_000_000) -> Packet:
    return Packet(State.UP, Diag.NONE, 3, 9, A_DISC, remote_tx_us, 300_000, final=True)


def test_poll_bit_on_periodic_packets_until_the_final_arrives() -> None:
    s = Session(A_DISC, Settings(), 0.0, random.Random(5))
    s.receive(Packet(State.INIT, Diag.NONE, 3, 9, A_DISC, SLOW_TX_US, 300_000), 0.0)
    # The peer polls too: our answer carries F only; our own Poll goes on afterwards.
    out = s.receive(Packet(State.UP, Diag.NONE, 3, 9, A_DISC, 300_000, 300_000, poll=True), 0.1)
    assert len(out) == 1 and out[0].final and not out[0].poll
    times, pkts = periodic(s, 2)
    assert all(p.poll and not p.final for p in pkts)
    s.receive(Packet(State.UP, Diag.NONE, 3, 9, A_DISC, 300_000, 300_000, final=True), times[-1])
    _, pkts = periodic(s, 2)
    assert not any(p.poll for p in pkts)


def test_update_starts_a_poll_sequence_with_the_new_values() -> None:
    s = up_session()
    assert s.update(Settings(), 1.0) == []  # the same settings: nothing to announce
    out = s.update(Settings(100, 50, 5), 1.0)
    assert s.settings == Settings(100, 50, 5)
    assert len(out) == 1 and out[0].poll
    assert (out[0].desired_min_tx_us, out[0].required_min_rx_us, out[0].detect_mult) == \
        (50_000, 100_000, 5)
    times, pkts = periodic(s, 3)
    assert all(p.poll and p.desired_min_tx_us == 50_000 for p in pkts)
    # Faster TX counts at once, still bounded by the remote's 300 ms minimum RX.
    assert all(0.225 <= g <= 0.3 for g in gaps([1.0, *times]))
    s.receive(fin(), times[-1])
    _, pkts = periodic(s, 3)
    assert not any(p.poll for p in pkts)


def test_a_slower_tx_takes_effect_only_when_the_poll_is_over() -> None:
    s = up_session()
    out = s.update(Settings(300, 1000, 3), 1.0)
    assert out[0].poll and out[0].desired_min_tx_us == 1_000_000
    times, pkts = periodic(s, 10)
    assert all(p.poll for p in pkts) and all(0.225 <= g <= 0.3 for g in gaps([1.0, *times]))
    s.receive(fin(), times[-1] + 0.2)
    later, _ = periodic(s, 10)
    assert all(0.75 <= g <= 1.0 for g in gaps([times[-1], *later]))


def test_a_shorter_rx_shortens_detection_only_when_the_poll_is_over() -> None:
    s = up_session(remote_tx_us=50_000)  # detection: 3 x max(300 ms, 50 ms) = 0.9 s
    s.receive(Packet(State.UP, Diag.NONE, 3, 9, A_DISC, 50_000, 300_000), 1.0)
    s.update(Settings(100, 300, 3), 1.0)
    s.poll(1.5)
    assert s.state == State.UP  # still 0.9 s, not 3 x 100 ms
    s.receive(fin(remote_tx_us=50_000), 1.6)
    s.poll(1.89)
    assert s.state == State.UP
    s.poll(1.6 + 0.3)
    assert (s.state, s.diag) == (State.DOWN, Diag.DETECT_EXPIRED)


def test_answering_a_fast_pollers_polls_does_not_hold_back_our_own() -> None:
    s = up_session()
    s.update(Settings(300, 300, 5), 1.0)
    poll = Packet(State.UP, Diag.NONE, 3, 9, A_DISC, 10_000_000, 300_000, poll=True)
    ours = [1.0]
    for i in range(1, 30):  # the peer polls every 100 ms; we answer each with F
        t = 1.0 + i / 10
        while s.next_deadline() <= t:
            due = s.next_deadline()
            (p,) = s.poll(due)
            assert p.poll and not p.final
            ours.append(due)
        (answer,) = s.receive(poll, t)
        assert answer.final and not answer.poll
    assert len(ours) > 8 and all(0.225 <= g <= 0.3 for g in gaps(ours))
