"""Leftover speaker processes: only a live process whose command line names our file is
stopped; stale or reused PIDs are left alone and the pid file is removed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bgp.pidfile import kill_recorded, recorded_pid


def sleeper(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])


def test_kills_only_the_recorded_process_with_our_marker(tmp_path: Path) -> None:
    ours, other = sleeper(str(tmp_path / "ours.conf")), sleeper("somebody-else")
    try:
        pf = tmp_path / "x.pid"
        pf.write_text(str(other.pid))
        assert recorded_pid(pf, str(tmp_path / "ours.conf")) is None
        assert kill_recorded(pf, str(tmp_path / "ours.conf")) is None
        assert other.poll() is None and not pf.exists()  # not ours: untouched
        pf.write_text(str(ours.pid))
        assert recorded_pid(pf, str(tmp_path / "ours.conf")) == ours.pid
        assert kill_recorded(pf, str(tmp_path / "ours.conf"), graceful=True) == ours.pid
        assert ours.wait(5) is not None and not pf.exists()
    finally:
        for p in (ours, other):
            if p.poll() is None:
                p.kill()
            p.wait(5)


def test_missing_or_garbage_pid_file(tmp_path: Path) -> None:
    assert kill_recorded(tmp_path / "none.pid", "x") is None
    (tmp_path / "bad.pid").write_text("not a pid")
    assert kill_recorded(tmp_path / "bad.pid", "x") is None
    assert not (tmp_path / "bad.pid").exists()
