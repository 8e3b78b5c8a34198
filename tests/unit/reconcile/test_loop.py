"""The loop: a reconciler's requeue request gets another pass without any store change."""

from __future__ import annotations

import threading
import time

from controller.reconcile.loop import Loop, PassContext
from controller.store import Snapshot, Store


class Requeuer:
    name = "requeuer"

    def __init__(self) -> None:
        self.passes: list[float] = []

    def reconcile(self, ctx: PassContext) -> None:
        self.passes.append(time.monotonic())
        if len(self.passes) < 3:
            ctx.requeue(0.1)

    def close(self) -> None:
        pass


def test_requeue_runs_passes_without_store_changes() -> None:
    store = Store(Snapshot())
    rec = Requeuer()
    loop = Loop(store, "n1", [rec], resync=60)
    stop = threading.Event()
    store.poke()
    t = threading.Thread(target=loop.run, args=(stop,))
    t.start()
    try:
        deadline = time.monotonic() + 5
        while len(rec.passes) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(5)
    assert len(rec.passes) == 3
    time.sleep(0.3)
    assert len(rec.passes) == 3  # no more requeues asked: no more passes


def test_earliest_requeue_wins() -> None:
    ctx = PassContext(Snapshot(), "n1")
    ctx.requeue(2.0)
    ctx.requeue(0.5)
    ctx.requeue(1.0)
    assert ctx.requeue_after == 0.5
