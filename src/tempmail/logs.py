"""Logging to stderr: one line per event with a UTC timestamp and the level name."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging API
        del datefmt
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def configure(level: str = "info", environ: Mapping[str, str] = os.environ) -> None:
    """Send tempmail's log records to stderr at ``level`` (debug, info, warning, error).

    Under systemd, with stderr connected to the journal, the journal stamps each line: ours
    would be a second timestamp on every line, so it is left out there.
    """
    handler = logging.StreamHandler(sys.stderr)
    fields = "%(levelname)s %(name)s: %(message)s"
    stamped = not _stderr_is_the_journal(environ)
    handler.setFormatter(_UTCFormatter(f"%(asctime)s {fields}" if stamped else fields))
    root = logging.getLogger("tempmail")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def set_level(level: str) -> None:
    """Change tempmail's log level (debug, info, warning, error), e.g. after a reload."""
    logging.getLogger("tempmail").setLevel(level.upper())


def _stderr_is_the_journal(environ: Mapping[str, str]) -> bool:
    """Whether stderr is connected to systemd's journal.

    systemd puts stderr's device and inode in $JOURNAL_STREAM (systemd.exec(5)); they are
    compared with stderr itself, as systemd advises, because the variable is inherited by
    processes whose stderr goes elsewhere.
    """
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):  # no stderr, or one without a descriptor (captured)
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))
