"""Local-time waves and quiet hours on the time-skipping server: each time-zone group gets its
own durable timer and is delivered at the right instant, across a daylight-saving change."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from core.campaigns.spec import CampaignSpec
from core.infra.settings import Settings
from core.runs.models import RunProgress
from core.tenants.config_schema import Policies, QuietHours
from tests.helpers.run_history import fired_timers, scheduled_batches
from tests.helpers.runs import direct_run
from tests.helpers.tenants import store_tenant
from workflows.campaign_run import CampaignRunWorkflow

UTC = dt.UTC
ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Tokyo"]


def _us_spring_forward_after(now: dt.datetime) -> dt.date:
    """The next second Sunday of March (US daylight saving starts at 02:00 local) after `now`."""
    for year in (now.year, now.year + 1):
        first = dt.date(year, 3, 1)
        day = first + dt.timedelta(days=(6 - first.weekday()) % 7 + 7)
        if dt.datetime.combine(day, dt.time(4, 0), UTC) > now:
            return day
    raise AssertionError("unreachable")


async def _tenant(pool: asyncpg.Pool, policies: Policies) -> str:
    slug = await store_tenant(pool, "waves-", customers=40, policies=policies)
    # Ten customers in each zone, all reachable by email.
    await pool.execute(
        """UPDATE customers SET time_zone = ($2::text[])[1 + (id - 1) % 4], consent_email = true,
                                locale = 'en-US'
           WHERE tenant_id = $1""",
        slug,
        ZONES,
    )
    return slug


async def _run_at(
    env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings, slug: str, start: dt.datetime, spec: CampaignSpec
) -> tuple[WorkflowHandle[CampaignRunWorkflow, RunProgress], RunProgress]:
    now = await env.get_current_time()
    assert start > now
    await env.sleep(start - now)  # skip the test server's clock to the start instant
    async with direct_run(env, pool, settings, slug, spec) as (_, handle):
        result: RunProgress = await handle.result()
    return handle, result


async def _batch_starts(handle: WorkflowHandle[Any, Any]) -> dict[str, list[dt.datetime]]:
    """When each deliver_batch was scheduled, by the customers' wave (`wave_at` of its input)."""
    out: dict[str, list[dt.datetime]] = {}
    for at, inp in await scheduled_batches(handle):
        out.setdefault(inp.get("wave_at") or "now", []).append(at)
    return out


async def test_local_time_waves_fire_at_ten_in_each_zone_across_spring_forward(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    day = _us_spring_forward_after(await time_skipping_env.get_current_time())
    start = dt.datetime.combine(day, dt.time(5, 0), UTC)  # 00:00 EST, two hours before the change
    slug = await _tenant(pool, Policies(consent_required={"email": True}))
    spec = CampaignSpec(
        name="Ten o'clock local",
        channels=["email"],
        variants=[{"key": "A", "template": "weekly_deals"}],
        local_send_time=dt.time(10, 0),
        if_local_time_passed="next_day",
    )
    handle, result = await _run_at(time_skipping_env, pool, settings, slug, start, spec)
    assert result.status == "completed" and result.planned == 40 and result.counts.sent == 40

    next_day = day + dt.timedelta(days=1)
    expected = sorted(
        [
            dt.datetime.combine(day, dt.time(10, 0), UTC),  # London: 10:00 GMT
            dt.datetime.combine(day, dt.time(14, 0), UTC),  # New York: 10:00 EDT (after the change)
            dt.datetime.combine(day, dt.time(17, 0), UTC),  # Los Angeles: 10:00 PDT (its change at 02:00 PST)
            dt.datetime.combine(next_day, dt.time(1, 0), UTC),  # Tokyo: 10:00 JST had passed → next day
        ]
    )
    fired = await fired_timers(handle)
    assert [abs((f - e).total_seconds()) < 2 for f, e in zip(fired, expected, strict=True)] == [True] * 4, fired
    starts = await _batch_starts(handle)
    assert len(starts) == 4 and "now" not in starts
    for wave, when in starts.items():
        wave_at = dt.datetime.fromisoformat(wave)
        assert all(w >= wave_at for w in when), (wave, when)


async def test_quiet_hours_defer_exactly_the_recipients_inside_them(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    now = await time_skipping_env.get_current_time()
    day = (now + dt.timedelta(days=2)).date()
    # 05:00 UTC in late autumn or any season: 00:00/01:00 in New York, 21:00/22:00 in Los
    # Angeles, 05:00/06:00 in London (all inside 21:00-08:00) and 14:00 in Tokyo (outside).
    start = dt.datetime.combine(day, dt.time(5, 0), UTC)
    quiet = QuietHours(start="21:00", end="08:00", channels=["email"])
    slug = await _tenant(pool, Policies(quiet_hours=quiet))
    spec = CampaignSpec(
        name="Quiet",
        channels=["email"],
        variants=[{"key": "A", "template": "weekly_deals"}],
    )
    handle, result = await _run_at(time_skipping_env, pool, settings, slug, start, spec)
    assert result.status == "completed" and result.counts.sent == 40

    starts = await _batch_starts(handle)
    assert starts["now"] and all(t < start + dt.timedelta(minutes=1) for t in starts["now"]), "Tokyo goes at once"
    deferred = sorted(dt.datetime.fromisoformat(w) for w in starts if w != "now")
    assert len(deferred) == 3
    for wave in deferred:  # each deferred wave starts when it is 08:00 in one of the quiet zones
        local_times = {wave.astimezone(ZoneInfo(z)).time() for z in ZONES[:3]}
        assert dt.time(8, 0) in local_times, (wave, local_times)
    fired = await fired_timers(handle)
    assert len(fired) == 3 and all(abs((f - d).total_seconds()) < 2 for f, d in zip(fired, deferred, strict=True))
