"""A minimal inotify watcher (Linux, through libc): wake up as soon as a file changes.

The files source uses it to react to a manifest or status write within milliseconds
instead of at the next poll; where inotify is unavailable it falls back to polling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
from collections.abc import Iterable
from pathlib import Path

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE


class Watcher:
    """Watches directories (not recursively: pass each one)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd: int = fd
        self._watched: set[Path] = set()

    def watch(self, dirs: Iterable[Path]) -> None:
        """Add directories not watched yet (missing ones are skipped)."""
        for d in dirs:
            if d in self._watched or not d.is_dir():
                continue
            if self._add(self.fd, os.fsencode(d), MASK) >= 0:
                self._watched.add(d)

    def wait(self, timeout: float) -> bool:
        """True when something changed within `timeout` seconds (events are drained)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        os.close(self.fd)
