"""Structured logging: one event per line, key=value, never secrets."""

from __future__ import annotations

import logging
import sys


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=... logger=... <message>`; messages are themselves key=value."""

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        line = (
            f"ts={ts} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        )
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
