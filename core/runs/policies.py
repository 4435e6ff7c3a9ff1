"""Send-time policies in the recipient's local time: quiet hours and local-time waves.

Pure functions over instants and IANA zones, so they are easy to test across daylight-saving
changes and can run inside activities (the workflow only sees the resulting instants).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal
from zoneinfo import ZoneInfo

from core.tenants.config_schema import QuietHours

PassedPolicy = Literal["send_now", "next_day"]


def _at_local(day: dt.date, time: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The instant `time` on `day` in `zone`. A wall time skipped by a spring-forward gap maps
    to the instant the same number of minutes after the gap starts (fold=0 semantics), i.e.
    02:30 on the changeover day fires at 03:30 daylight time."""
    return dt.datetime.combine(day, time, tzinfo=zone).astimezone(dt.UTC)


def in_quiet_hours(instant: dt.datetime, zone_name: str, quiet: QuietHours) -> bool:
    """Whether `local` (the recipient's wall-clock time) falls in the quiet window."""
    start, end = quiet.bounds()
    local = instant.astimezone(ZoneInfo(zone_name)).time()
    if start < end:
        return start <= local < end
    return local >= start or local < end  # the window spans midnight


def quiet_hours_end(instant: dt.datetime, zone_name: str, quiet: QuietHours) -> dt.datetime:
    """`instant` itself when outside quiet hours, else the first instant after they end."""
    if not in_quiet_hours(instant, zone_name, quiet):
        return instant
    zone = ZoneInfo(zone_name)
    _, end = quiet.bounds()
    local = instant.astimezone(zone)
    candidate = _at_local(local.date(), end, zone)
    if candidate <= instant:
        candidate = _at_local(local.date() + dt.timedelta(days=1), end, zone)
    return candidate


def local_send_instant(
    now: dt.datetime, zone_name: str, local_time: dt.time, passed: PassedPolicy = "next_day"
) -> dt.datetime:
    """When to send "at `local_time` in the recipient's zone", seen from `now`.

    Today's `local_time` if it is still ahead; otherwise now (`send_now`) or tomorrow's
    (`next_day`).
    """
    zone = ZoneInfo(zone_name)
    today = now.astimezone(zone).date()
    instant = _at_local(today, local_time, zone)
    if instant >= now:
        return instant
    if passed == "send_now":
        return now
    return _at_local(today + dt.timedelta(days=1), local_time, zone)


def wave_instant(
    now: dt.datetime,
    zone_name: str,
    *,
    local_time: dt.time | None = None,
    passed: PassedPolicy = "next_day",
    quiet: QuietHours | None = None,
) -> dt.datetime:
    """The instant a recipient in `zone_name` may be sent to: the local send time (or now),
    moved past quiet hours when it falls inside them."""
    instant = local_send_instant(now, zone_name, local_time, passed) if local_time else now
    return quiet_hours_end(instant, zone_name, quiet) if quiet else instant


def quiet_hours_for(quiet: QuietHours | None, channels: list[str]) -> QuietHours | None:
    """The tenant's quiet hours when they apply to any of a run's `channels`, else None."""
    return quiet if quiet is not None and set(quiet.channels) & set(channels) else None
