"""The validity window: which local dates are valid at a given instant, and until when.

Pure functions over an injected instant (seconds since the epoch), so midnight, DST changes and
far-away time zones are tested without patching any clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Span:
    """The valid dates at some instant (newest first) and the instant at which they change."""

    dates: tuple[dt.date, ...]
    valid_until: float  # epoch seconds of the next local midnight


def local_date(now: float, zone: ZoneInfo) -> dt.date:
    """The calendar date in ``zone`` at the instant ``now``."""
    return dt.datetime.fromtimestamp(now, zone).date()


def start_of_day(day: dt.date, zone: ZoneInfo) -> float:
    """The first instant (epoch seconds) whose local date in ``zone`` is ``day``.

    Where a DST change skips midnight (clocks jump from 23:59:59 to 01:00), a naive 00:00 does
    not exist; zoneinfo maps it with the offset in force before the jump (fold=0), which is
    exactly the instant of the jump, i.e. the first instant of the new day.
    """
    midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    return midnight.timestamp()


def span_at(now: float, zone: ZoneInfo, days: int) -> Span:
    """The ``days`` local dates valid at ``now``: today first, then the days before."""
    if days < 1:
        raise ValueError("a window has at least one day")
    today = local_date(now, zone)
    dates = tuple(today - i * _ONE_DAY for i in range(days))
    return Span(dates, start_of_day(today + _ONE_DAY, zone))
