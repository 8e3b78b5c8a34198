"""BFD (Bidirectional Forwarding Detection) for single-hop and multihop sessions, without
any I/O.

Asynchronous mode of RFC 5880 with no authentication, no Demand mode and no Echo function,
for single-hop IPv4/IPv6 sessions (RFC 5881) and multihop ones (RFC 5883: destination port
MULTIHOP_PORT, the received TTL checked against the hops allowed, `Settings.hops`). It
follows RFC 5880 sections 4.1 (control
packet format), 6.2 and 6.8.6 (state machine, reception), 6.5 and 6.8.3 (timer changes
through Poll Sequences), 6.8.4 (detection time) and 6.8.7 (periodic transmission with
jitter). Another process owns the UDP sockets (destination port BFD_PORT, source port from
SOURCE_PORTS, TTL 255 per RFC 5881): it feeds received bytes through `decode` and
`Session.receive`, calls `Session.poll` at `Session.next_deadline()` and sends whatever
packets they return. Times are `time.monotonic()` seconds, always passed in by the caller.
"""

from __future__ import annotations

import enum
import math
import random
import struct
from dataclasses import dataclass

from bgp.types import IPAddress

BFD_PORT = 3784
MULTIHOP_PORT = 4784
SOURCE_PORTS = range(49152, 65536)
SLOW_TX_US = 1_000_000

_VERSION = 1
_FORMAT = struct.Struct("!BBBBIIIII")
_LENGTH = _FORMAT.size  # 24: the mandatory section
_P, _F, _C, _A, _D, _M = 0x20, 0x10, 0x08, 0x04, 0x02, 0x01


class State(enum.IntEnum):
    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3


class Diag(enum.IntEnum):
    NONE = 0
    DETECT_EXPIRED = 1
    ECHO_FAILED = 2
    NEIGHBOR_DOWN = 3
    FORWARDING_RESET = 4
    PATH_DOWN = 5
    CONCAT_PATH_DOWN = 6
    ADMIN_DOWN = 7
    REVERSE_CONCAT_PATH_DOWN = 8


@dataclass(frozen=True)
class Packet:
    """The mandatory section of a BFD Control packet; intervals in microseconds."""

    state: State
    diag: Diag
    detect_mult: int
    my_disc: int
    your_disc: int
    desired_min_tx_us: int
    required_min_rx_us: int
    required_min_echo_rx_us: int = 0
    poll: bool = False
    final: bool = False
    cpi: bool = False  # C bit
    demand: bool = False  # D bit


def encode(p: Packet) -> bytes:
    """The 24 bytes of `p` (version 1, no authentication section)."""
    flags = ((_P if p.poll else 0) | (_F if p.final else 0) | (_C if p.cpi else 0)
             | (_D if p.demand else 0))
    return _FORMAT.pack(_VERSION << 5 | p.diag, p.state << 6 | flags, p.detect_mult, _LENGTH,
                        p.my_disc, p.your_disc, p.desired_min_tx_us, p.required_min_rx_us,
                        p.required_min_echo_rx_us)


def decode(data: bytes) -> Packet:
    """Parse and check a received packet (RFC 5880 6.8.6); ValueError names the failed check."""
    if len(data) < _LENGTH:
        raise ValueError(f"packet too short: {len(data)} bytes, need {_LENGTH}")
    b0, b1, mult, length, my, your, tx, rx, echo = _FORMAT.unpack_from(data)
    if b0 >> 5 != _VERSION:
        raise ValueError(f"version {b0 >> 5}, expected {_VERSION}")
    if not _LENGTH <= length <= len(data):
        raise ValueError(f"length field {length} outside {_LENGTH}..{len(data)}")
    if b1 & _A:
        raise ValueError("authentication (A bit) set, but no authentication is configured")
    if mult == 0:
        raise ValueError("detect mult is 0")
    if b1 & _M:
        raise ValueError("multipoint (M bit) set")
    if my == 0:
        raise ValueError("my discriminator is 0")
    state = State(b1 >> 6)
    if your == 0 and state not in (State.DOWN, State.ADMIN_DOWN):
        raise ValueError(f"your discriminator is 0 in state {state.name}")
    try:
        diag = Diag(b0 & 0x1F)
    except ValueError:
        raise ValueError(f"diag {b0 & 0x1F} is reserved") from None
    return Packet(state, diag, mult, my, your, tx, rx, echo, poll=bool(b1 & _P),
                  final=bool(b1 & _F), cpi=bool(b1 & _C), demand=bool(b1 & _D))


@dataclass(frozen=True)
class Settings:
    """What we ask for: our minimum RX and desired TX intervals and our detect multiplier;
    and how the peer is reached: `hops` 1 is single hop (RFC 5881), more is multihop (RFC
    5883) with packets from `local` (None: the address the kernel picks towards the peer),
    which must be the address the peer's session names, as the BGP session's own."""

    min_rx_ms: int = 300
    min_tx_ms: int = 300
    multiplier: int = 3
    hops: int = 1
    local: IPAddress | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_rx_ms * 1000 < 2**32 or not 0 < self.min_tx_ms * 1000 < 2**32:
            raise ValueError(f"BFD intervals out of range: {self}")
        if not 1 <= self.multiplier <= 255:
            raise ValueError(f"BFD multiplier must be 1..255: {self}")
        if not 1 <= self.hops <= 255:
            raise ValueError(f"BFD hops must be 1..255: {self}")

    @property
    def multihop(self) -> bool:
        return self.hops > 1

    def min_ttl(self) -> int:
        """The lowest TTL / hop limit a packet from the peer may arrive with (it sends
        255): 255 single hop (RFC 5881 5), one less per router allowed between."""
        return 256 - self.hops

    def same_path(self, other: Settings) -> bool:
        """Is other reached the same way (timers aside)?"""
        return (self.hops, self.local) == (other.hops, other.local)


class Session:
    """One BFD session: the state variables of RFC 5880 6.8.1 and its two timers."""

    def __init__(self, local_disc: int, settings: Settings, now: float,
                 rng: random.Random | None = None) -> None:
        if not 0 < local_disc < 2**32:
            raise ValueError(f"local discriminator must be 1..2**32-1, not {local_disc}")
        self._local_disc = local_disc
        self._settings = settings
        self._rng = rng if rng is not None else random.Random()
        self._state = State.DOWN
        self._remote_state = State.DOWN
        self._remote_disc = 0
        self._diag = Diag.NONE
        self._remote_min_rx_us = 1
        self._remote_min_tx_us = 0
        self._remote_detect_mult = 0
        self._polling = False
        self._held: tuple[int, int] | None = None  # (tx, rx) in use when the Poll started
        self._last_rx = now
        self._last_tx = -math.inf  # last transmission that counts as periodic
        self._interval = self._tx_interval()
        self._next_tx = now  # the first Down packet goes out at once

    @property
    def state(self) -> State:
        return self._state

    @property
    def remote_state(self) -> State:
        return self._remote_state

    @property
    def remote_disc(self) -> int:
        return self._remote_disc

    @property
    def diag(self) -> Diag:
        return self._diag

    @property
    def local_disc(self) -> int:
        return self._local_disc

    @property
    def settings(self) -> Settings:
        return self._settings

    def receive(self, pkt: Packet, now: float) -> list[Packet]:
        """Process a decoded packet (RFC 5880 6.8.6); returns the packets to send at once."""
        if pkt.your_disc and pkt.your_disc != self._local_disc:
            return []
        remote = (pkt.my_disc, pkt.required_min_rx_us, pkt.desired_min_tx_us, pkt.detect_mult)
        changed = remote != (self._remote_disc, self._remote_min_rx_us, self._remote_min_tx_us,
                             self._remote_detect_mult)
        (self._remote_disc, self._remote_min_rx_us, self._remote_min_tx_us,
         self._remote_detect_mult) = remote
        self._remote_state = pkt.state
        self._last_rx = now
        if pkt.final and self._polling:
            self._polling, self._held = False, None
        if self._state == State.ADMIN_DOWN:
            self._reschedule(now)
            return []
        before = self._state
        if pkt.state == State.ADMIN_DOWN:
            if self._state != State.DOWN:
                self._set_state(State.DOWN, Diag.NEIGHBOR_DOWN)
        elif self._state == State.DOWN:
            if pkt.state == State.DOWN:
                self._set_state(State.INIT, self._diag)
            elif pkt.state == State.INIT:
                self._set_state(State.UP, Diag.NONE)
        elif self._state == State.INIT:
            if pkt.state in (State.INIT, State.UP):
                self._set_state(State.UP, Diag.NONE)
        elif pkt.state == State.DOWN:
            self._set_state(State.DOWN, Diag.NEIGHBOR_DOWN)
        self._reschedule(now)
        # Answer a Poll, and tell the peer about any change at once rather than at the next
        # periodic packet (a known interop trap with FRR); one packet carries all of it.
        if pkt.poll or changed or self._state != before:
            return [self._send(now, final=pkt.poll)]
        return []

    def poll(self, now: float) -> list[Packet]:
        """Detection-time expiry and the periodic transmission due at `now`."""
        if now >= self._detect_deadline():
            self._remote_disc, self._remote_state = 0, State.DOWN
            self._set_state(State.DOWN, Diag.DETECT_EXPIRED)
            return [self._send(now)]
        if now >= self._next_tx:
            return [self._send(now)]
        return []

    def next_deadline(self) -> float:
        """When `poll` next has work to do (math.inf: never, until something is received)."""
        return min(self._next_tx, self._detect_deadline())

    def update(self, settings: Settings, now: float) -> list[Packet]:
        """Take new timers and multiplier, announced through a Poll Sequence (6.8.3)."""
        if settings == self._settings:
            return []
        before = (self._desired_tx_us(), self._required_rx_us())
        self._settings = settings
        self._start_poll(before)
        self._reschedule(now)
        return [self._send(now)]

    def shutdown(self, now: float) -> Packet:
        """Go AdminDown; the packet announcing it. Periodic AdminDown packets follow."""
        self._set_state(State.ADMIN_DOWN, Diag.ADMIN_DOWN)
        return self._send(now)

    def _desired_tx_us(self) -> int:
        return self._settings.min_tx_ms * 1000 if self._state == State.UP else SLOW_TX_US

    def _required_rx_us(self) -> int:
        return self._settings.min_rx_ms * 1000

    # RFC 5880 6.8.3: while Up, a slower TX or a faster RX takes effect only once the Poll
    # Sequence announcing it is over, so that neither side's detection timer fires early.
    def _tx_in_use_us(self) -> int:
        if self._held is None or self._state != State.UP:
            return self._desired_tx_us()
        return min(self._desired_tx_us(), self._held[0])

    def _rx_in_use_us(self) -> int:
        if self._held is None or self._state != State.UP:
            return self._required_rx_us()
        return max(self._required_rx_us(), self._held[1])

    def _tx_interval(self) -> float | None:
        """Seconds between periodic packets before jitter; None: send none (6.8.7)."""
        if self._remote_min_rx_us == 0:
            return None
        return max(self._tx_in_use_us(), self._remote_min_rx_us) / 1_000_000

    def _detect_deadline(self) -> float:
        if self._state not in (State.INIT, State.UP) or self._remote_detect_mult == 0:
            return math.inf
        detect_us = self._remote_detect_mult * max(self._rx_in_use_us(), self._remote_min_tx_us)
        return self._last_rx + detect_us / 1_000_000

    def _jittered(self, interval: float) -> float:
        # 6.8.7: 0-25 % shorter; with a detect mult of 1, at least 10 % shorter.
        return interval * self._rng.uniform(0.75, 0.9 if self._settings.multiplier == 1 else 1.0)

    def _reschedule(self, now: float) -> None:
        """Move the next periodic packet when the interval changed, counting from the last."""
        interval = self._tx_interval()
        if interval != self._interval:
            self._interval = interval
            self._next_tx = (math.inf if interval is None
                             else max(now, self._last_tx + self._jittered(interval)))

    def _set_state(self, state: State, diag: Diag) -> None:
        before = (self._desired_tx_us(), self._required_rx_us())
        self._state, self._diag = state, diag
        if self._desired_tx_us() != before[0]:
            self._start_poll(before)

    def _start_poll(self, before: tuple[int, int]) -> None:
        if not self._polling:
            self._held = before
        self._polling = True

    def _send(self, now: float, final: bool = False) -> Packet:
        """A packet from the current variables. One without F restarts the periodic timer;
        an answer to a Poll does not, or a peer polling fast could hold back our own Poll."""
        pkt = Packet(self._state, self._diag, self._settings.multiplier, self._local_disc,
                     self._remote_disc, self._desired_tx_us(), self._required_rx_us(),
                     poll=self._polling and not final, final=final)
        if not final:
            self._last_tx = now
            self._interval = self._tx_interval()
            self._next_tx = math.inf if self._interval is None else now + self._jittered(
                self._interval)
        return pkt
