"""The thread plumbing both speaker adapters share: the background threads that supervise
a daemon and talk to it, started together and stopped together, with one lock for the
adapter's state and one event that tells the threads to end."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


class Supervised:
    """Mixed into an adapter: _lock guards its state, _stopping ends its threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def _spawn_threads(self, targets: Iterable[tuple[Callable[[], None], str]]) -> None:
        """Start one daemon thread per (target, name); the caller holds _lock."""
        self._stopping.clear()
        for target, name in targets:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _end_threads(self, under_lock: Callable[[], None]) -> None:
        """Tell the threads to end, run under_lock (stop or let go of the daemon, clear
        the state) while holding _lock, then wait for the threads."""
        self._stopping.set()
        with self._lock:
            under_lock()
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads.clear()
