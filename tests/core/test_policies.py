"""Quiet hours and local-time waves, across zones and daylight-saving changes."""

from __future__ import annotations

import datetime as dt

import pytest

from core.runs.policies import in_quiet_hours, local_send_instant, quiet_hours_end, wave_instant
from core.tenants.config_schema import QuietHours

UTC = dt.UTC
NIGHT = QuietHours(start="21:00", end="08:00")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    """A UTC instant."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("instant", "zone", "quiet"),
    [
        (utc(2026, 6, 1, 2, 0), "America/New_York", True),  # 22:00 EDT
        (utc(2026, 6, 1, 12, 0), "America/New_York", False),  # 08:00 EDT: the window has ended
        (utc(2026, 6, 1, 0, 59), "America/New_York", False),  # 20:59 EDT
        (utc(2026, 6, 1, 1, 0), "America/New_York", True),  # 21:00 EDT
        (utc(2026, 6, 1, 12, 0), "Asia/Tokyo", True),  # 21:00 JST
    ],
)
def test_quiet_hours_in_the_recipients_local_time(instant: dt.datetime, zone: str, quiet: bool) -> None:
    assert in_quiet_hours(instant, zone, NIGHT) is quiet


def test_a_daytime_window_does_not_span_midnight() -> None:
    lunch = QuietHours(start="12:00", end="13:00")
    assert in_quiet_hours(utc(2026, 6, 1, 12, 30), "UTC", lunch)
    assert not in_quiet_hours(utc(2026, 6, 1, 23, 30), "UTC", lunch)
    assert quiet_hours_end(utc(2026, 6, 1, 12, 30), "UTC", lunch) == utc(2026, 6, 1, 13, 0)


def test_a_message_due_in_quiet_hours_waits_for_their_end() -> None:
    # 23:30 in Los Angeles (PDT, UTC-7) → 08:00 the next local morning = 15:00 UTC.
    assert quiet_hours_end(utc(2026, 6, 2, 6, 30), "America/Los_Angeles", NIGHT) == utc(2026, 6, 2, 15, 0)
    # 03:00 local, after midnight: the same local morning.
    assert quiet_hours_end(utc(2026, 6, 2, 10, 0), "America/Los_Angeles", NIGHT) == utc(2026, 6, 2, 15, 0)
    # Outside quiet hours nothing moves.
    assert quiet_hours_end(utc(2026, 6, 2, 18, 0), "America/Los_Angeles", NIGHT) == utc(2026, 6, 2, 18, 0)


def test_quiet_hours_end_across_the_autumn_daylight_saving_change() -> None:
    # New York falls back on 2026-11-01 at 02:00 EDT → 01:00 EST. 23:00 EDT on Oct 31 is
    # 03:00 UTC Nov 1; the window ends at 08:00 EST = 13:00 UTC (not 12:00 as in summer).
    assert quiet_hours_end(utc(2026, 11, 1, 3, 0), "America/New_York", NIGHT) == utc(2026, 11, 1, 13, 0)


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        # 10:00 local in each zone on a summer day, seen from 06:00 UTC.
        (utc(2026, 6, 1, 6, 0), "America/New_York", utc(2026, 6, 1, 14, 0)),
        (utc(2026, 6, 1, 6, 0), "America/Los_Angeles", utc(2026, 6, 1, 17, 0)),
        (utc(2026, 6, 1, 6, 0), "Europe/London", utc(2026, 6, 1, 9, 0)),
        # Tokyo's 10:00 has passed (15:00 JST): next day.
        (utc(2026, 6, 1, 6, 0), "Asia/Tokyo", utc(2026, 6, 2, 1, 0)),
        # Spring forward in New York on 2026-03-08: 10:00 is EDT (UTC-4), the day before EST.
        (utc(2026, 3, 7, 6, 0), "America/New_York", utc(2026, 3, 7, 15, 0)),
        (utc(2026, 3, 8, 6, 0), "America/New_York", utc(2026, 3, 8, 14, 0)),
        # Fall back in London on 2026-10-25: 10:00 GMT = 10:00 UTC, the day before BST 09:00 UTC.
        (utc(2026, 10, 24, 6, 0), "Europe/London", utc(2026, 10, 24, 9, 0)),
        (utc(2026, 10, 25, 6, 0), "Europe/London", utc(2026, 10, 25, 10, 0)),
    ],
)
def test_local_time_waves_across_zones_and_dst(now: dt.datetime, zone: str, expected: dt.datetime) -> None:
    assert local_send_instant(now, zone, dt.time(10, 0)) == expected


def test_passed_local_time_policy() -> None:
    now = utc(2026, 6, 1, 6, 0)  # 15:00 in Tokyo
    assert local_send_instant(now, "Asia/Tokyo", dt.time(10, 0), "send_now") == now
    assert local_send_instant(now, "Asia/Tokyo", dt.time(10, 0), "next_day") == utc(2026, 6, 2, 1, 0)


def test_a_wall_time_inside_the_spring_forward_gap_fires_after_the_gap() -> None:
    # 02:30 does not exist in New York on 2026-03-08; it fires at 03:30 EDT = 07:30 UTC.
    assert local_send_instant(utc(2026, 3, 8, 5, 0), "America/New_York", dt.time(2, 30)) == utc(2026, 3, 8, 7, 30)


def test_wave_combines_local_time_and_quiet_hours() -> None:
    early = QuietHours(start="20:00", end="09:00")
    # 07:00 local send time falls in quiet hours → moved to 09:00 local.
    got = wave_instant(utc(2026, 6, 1, 6, 0), "America/New_York", local_time=dt.time(7, 0), quiet=early)
    assert got == utc(2026, 6, 1, 13, 0)
    assert wave_instant(utc(2026, 6, 1, 18, 0), "America/New_York") == utc(2026, 6, 1, 18, 0)
