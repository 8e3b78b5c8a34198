"""The ExaBGP adapter's acknowledgement handling against a scripted relay (no exabgp).

ExaBGP interleaves JSON events with the `done` acknowledgements on one stream; events that
arrive while a send holds the adapter's lock must not stop the acknowledgements behind them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path as FsPath

import pytest

from bgp.exabgp.adapter import ExabgpSpeaker
from bgp.speaker import SpeakerError

EVENT = json.dumps({"type": "update", "neighbor": {
    "address": {"peer": "10.55.0.1"},
    "message": {"update": {"attribute": {"origin": "igp"}, "announce": {
        "ipv4 unicast": {"10.55.0.1": [{"nlri": "10.100.0.1/32"}]}}}}}})


@pytest.fixture
def wired(tmp_path: FsPath) -> Iterator[tuple[ExabgpSpeaker, socket.socket]]:
    s = ExabgpSpeaker(tmp_path, ack_timeout=2.0)
    ours, relay = socket.socketpair()
    s._conn = ours
    threads = [threading.Thread(target=s._read_loop, args=(ours,), daemon=True),
               threading.Thread(target=s._event_loop, daemon=True)]
    for t in threads:
        t.start()
    try:
        yield s, relay
    finally:
        s._stopping.set()
        relay.close()
        ours.close()
        for t in threads:
            t.join(2)


def serve(relay: socket.socket, reply: Callable[[int], list[str]]) -> threading.Thread:
    """Answer each command line with reply(command index)'s lines."""
    def run() -> None:
        with relay.makefile("rb") as f:
            for k, _ in enumerate(f):
                relay.sendall("".join(x + "\n" for x in reply(k)).encode())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_events_between_acks_do_not_block_a_send(
        wired: tuple[ExabgpSpeaker, socket.socket]) -> None:
    s, relay = wired
    serve(relay, lambda k: [EVENT, "done"])  # like the ToR echoing each UPDATE back
    with s._lock:  # as set_paths holds it; an ack waited out would raise SpeakerError
        s._send([f"announce route 10.100.0.{i}/32 next-hop self" for i in range(100)])
    assert s._stale_acks == 0
    # the events are still handled, once the lock is free
    assert s.best_changes(timeout=2.0)


def test_late_acks_of_a_failed_send_are_not_counted_for_the_next(
        wired: tuple[ExabgpSpeaker, socket.socket]) -> None:
    s, relay = wired
    s.ack_timeout = 0.3
    release = threading.Event()

    def reply(k: int) -> list[str]:
        if k < 2:  # the first send's two acks come late; the first one is an error
            release.wait(5)
            return ["error" if k == 0 else "done"]
        return ["done"]

    serve(relay, reply)
    with s._lock, pytest.raises(SpeakerError, match="acknowledge"):
        s._send(["announce a", "announce b"])
    release.set()
    with s._lock:
        s._send(["announce c"])  # must not take the late "error" as its answer
