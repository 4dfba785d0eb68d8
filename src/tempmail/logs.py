"""Logging to stderr: one line per event with a UTC timestamp and the level name."""

from __future__ import annotations

import logging
import sys
import time


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging API
        del datefmt
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def configure(level: str = "info") -> None:
    """Send tempmail's log records to stderr at ``level`` (debug, info, warning, error)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tempmail")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def set_level(level: str) -> None:
    """Change tempmail's log level (debug, info, warning, error), e.g. after a reload."""
    logging.getLogger("tempmail").setLevel(level.upper())
