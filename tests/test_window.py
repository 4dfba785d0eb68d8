"""The validity window with an injected instant: midnight, DST, far-away zones."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from helpers import at
from tempmail import window

D = dt.date


def span(instant: str, zone: str, days: int = 2) -> window.Span:
    return window.span_at(at(instant), ZoneInfo(zone), days)


def test_today_and_yesterday_by_default() -> None:
    result = span("2026-11-27T12:00:00+00:00", "UTC")
    assert result.dates == (D(2026, 11, 27), D(2026, 11, 26))
    assert result.valid_until == at("2026-11-28T00:00:00+00:00")


def test_midnight_switches_the_day() -> None:
    """One second before midnight is still today; midnight itself is tomorrow."""
    before = span("2026-11-27T23:59:59.999+00:00", "UTC")
    after = span("2026-11-28T00:00:00+00:00", "UTC")
    assert before.dates == (D(2026, 11, 27), D(2026, 11, 26))
    assert after.dates == (D(2026, 11, 28), D(2026, 11, 27))
    assert before.valid_until == at("2026-11-28T00:00:00+00:00")


def test_longer_window_and_single_day() -> None:
    assert span("2026-03-01T10:00:00+00:00", "UTC", 4).dates == (
        D(2026, 3, 1),
        D(2026, 2, 28),
        D(2026, 2, 27),
        D(2026, 2, 26),
    )
    assert span("2026-03-01T10:00:00+00:00", "UTC", 1).dates == (D(2026, 3, 1),)
    with pytest.raises(ValueError, match="at least one day"):
        span("2026-03-01T10:00:00+00:00", "UTC", 0)


def test_zones_far_from_utc() -> None:
    """At one instant, Kiritimati (UTC+14) and Pago Pago (UTC-11) are on different dates."""
    instant = "2026-11-27T11:00:00+00:00"
    assert span(instant, "Pacific/Kiritimati").dates[0] == D(2026, 11, 28)  # 01:00 local
    assert span(instant, "Pacific/Pago_Pago").dates[0] == D(2026, 11, 27)  # 00:00 local
    assert span(instant, "Pacific/Kiritimati").valid_until == at("2026-11-28T10:00:00+00:00")
    assert span(instant, "Pacific/Pago_Pago").valid_until == at("2026-11-28T11:00:00+00:00")


def test_spring_forward_day_is_23_hours() -> None:
    """Berlin, 2026-03-29: 02:00 becomes 03:00; the day still ends at local midnight."""
    result = span("2026-03-29T01:30:00+01:00", "Europe/Berlin")
    assert result.dates[0] == D(2026, 3, 29)
    assert result.valid_until == at("2026-03-30T00:00:00+02:00")
    assert result.valid_until - at("2026-03-29T00:00:00+01:00") == 23 * 3600


def test_fall_back_day_is_25_hours() -> None:
    """Berlin, 2026-10-25: 03:00 becomes 02:00; the repeated hour is still the 25th."""
    first = span("2026-10-25T02:30:00+02:00", "Europe/Berlin")
    repeated = span("2026-10-25T02:30:00+01:00", "Europe/Berlin")
    assert first.dates == repeated.dates == (D(2026, 10, 25), D(2026, 10, 24))
    assert first.valid_until == at("2026-10-26T00:00:00+01:00")
    assert first.valid_until - at("2026-10-25T00:00:00+02:00") == 25 * 3600


def test_midnight_that_does_not_exist() -> None:
    """Santiago, 2026-09-06: clocks jump from 23:59:59 to 01:00; the day starts at the jump."""
    before = span("2026-09-05T23:59:00-04:00", "America/Santiago")
    assert before.valid_until == at("2026-09-06T01:00:00-03:00")
    after = span("2026-09-06T01:00:00-03:00", "America/Santiago")
    assert after.dates[0] == D(2026, 9, 6)


def test_midnight_that_happens_twice() -> None:
    """Havana, 2026-11-01: 01:00 becomes 00:00; the new day starts at the first midnight."""
    before = span("2026-10-31T23:30:00-04:00", "America/Havana")
    assert before.valid_until == at("2026-11-01T00:00:00-04:00")
    during_repeat = span("2026-11-01T00:30:00-05:00", "America/Havana")
    assert during_repeat.dates[0] == D(2026, 11, 1)


def test_hour_repeated_before_midnight() -> None:
    """Santiago, 2026-04-04: 24:00 becomes 23:00; the repeated 23:xx is still the 4th."""
    repeated = span("2026-04-04T23:30:00-04:00", "America/Santiago")
    assert repeated.dates[0] == D(2026, 4, 4)
    assert repeated.valid_until == at("2026-04-05T00:00:00-04:00")


@pytest.mark.parametrize(
    "zone",
    [
        "UTC",
        "Europe/Berlin",
        "America/Santiago",
        "America/Havana",
        "Asia/Beirut",
        "Pacific/Kiritimati",
        "Pacific/Chatham",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
    ],
)
def test_every_hour_of_a_year(zone: str) -> None:
    """For each hour of 2026: today is the local date, and it ends exactly at valid_until."""
    tz = ZoneInfo(zone)
    instant = at("2026-01-01T00:17:00+00:00")
    for _ in range(366 * 24):
        result = window.span_at(instant, tz, 2)
        today = window.local_date(instant, tz)
        assert result.dates == (today, today - dt.timedelta(days=1))
        assert instant < result.valid_until
        assert window.local_date(result.valid_until - 0.001, tz) == today
        assert window.local_date(result.valid_until, tz) == today + dt.timedelta(days=1)
        instant += 3600
