"""`send_time: optimal` on the time-skipping server: customers with a known habit (the local hour
they open and click in) are planned into the wave of that hour, the run's timers fire at those
instants and each batch goes no earlier than its wave; quiet hours win over a habit inside them,
and customers without history get the fallback local time."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
from temporalio.testing import WorkflowEnvironment

from core.campaigns.spec import CampaignSpec
from core.infra.settings import Settings
from core.optimisation.send_times import OptimalSendTime
from core.tenants.config_schema import Policies, QuietHours
from tests.helpers.engagement_history import seed_hour_habits, set_time_zones
from tests.helpers.run_history import fired_timers, scheduled_batches
from tests.helpers.runs import direct_run
from tests.helpers.tenants import store_tenant

UTC = dt.UTC
ZONES = ["America/New_York", "Europe/Berlin", "Asia/Tokyo"]
QUIET = QuietHours(start="21:00", end="08:00", channels=["email"])
CUSTOMERS = 48
WITH_HISTORY = 36  # customers 1..36 have a habit; 37..48 have none


def _habit_hour(customer: int) -> int:
    """Customers 1-30 open between 09:00 and 19:00; 31-36 at 22:00 or 23:00 (inside quiet hours)."""
    return 9 + (customer * 7) % 11 if customer <= 30 else 22 + customer % 2


def _expected(start: dt.datetime, zone_name: str, hour: int) -> dt.datetime:
    """The instant of `hour` local within 24 hours of `start`, moved to 08:00 when quiet."""
    zone = ZoneInfo(zone_name)
    local = start.astimezone(zone)
    if local.hour == hour:
        instant = start
    else:
        day = local.date() + dt.timedelta(days=1 if hour < local.hour else 0)
        instant = dt.datetime.combine(day, dt.time(hour), zone).astimezone(UTC)
    if hour >= 21 or hour < 8:
        morning = instant.astimezone(zone).date() + dt.timedelta(days=1 if hour >= 21 else 0)
        instant = dt.datetime.combine(morning, dt.time(8), zone).astimezone(UTC)
    return instant


async def test_optimal_send_times_land_in_each_customers_wave_and_quiet_hours_win(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    start = dt.datetime.combine((now + dt.timedelta(days=2)).date(), dt.time(5, 30), UTC)
    slug = await store_tenant(pool, "stime-", customers=CUSTOMERS, policies=Policies(quiet_hours=QUIET))
    await set_time_zones(pool, slug, ZONES)
    zone_of = {c: ZONES[(c - 1) % len(ZONES)] for c in range(1, CUSTOMERS + 1)}
    habits = {c: (zone_of[c], _habit_hour(c)) for c in range(1, WITH_HISTORY + 1)}
    await seed_hour_habits(pool, slug, start, habits)

    spec = CampaignSpec(
        name="Best hour",
        channels=["email"],
        variants=[{"key": "A", "template": "weekly_deals"}],
        send_time=OptimalSendTime(within_hours=24, fallback_local_time=dt.time(10, 0)),
    )
    await env.sleep(start - now)  # skip the test server's clock to the start instant
    async with direct_run(env, pool, settings, slug, spec) as (run_id, handle):
        result = await handle.result()
    assert result.status == "completed" and result.planned == CUSTOMERS and result.counts.sent == CUSTOMERS

    planned = {
        r["customer_id"]: r["send_after"] or start
        for r in await pool.fetch(
            "SELECT customer_id, send_after FROM run_recipients WHERE tenant_id = $1 AND run_id = $2::uuid",
            slug,
            run_id,
        )
    }
    hit = [
        c for c, (zone, hour) in habits.items() if abs((planned[c] - _expected(start, zone, hour)).total_seconds()) < 1
    ]
    share = len(hit) / len(habits)
    print(
        f"\nsend-time optimisation: {len(hit)}/{len(habits)} customers with history planned at their hour ({share:.0%})"
    )
    assert share >= 0.9, sorted(set(habits) - set(hit))

    # Quiet hours win: a 22:00 or 23:00 habit goes at 08:00 local, and nobody is planned inside them.
    for c in range(31, WITH_HISTORY + 1):
        assert planned[c].astimezone(ZoneInfo(zone_of[c])).time() == dt.time(8, 0), (c, planned[c])
    for c, at in planned.items():
        local = at.astimezone(ZoneInfo(zone_of[c])).time()
        assert dt.time(8, 0) <= local < dt.time(21, 0), (c, at)
    # No history: the fallback local time.
    for c in range(WITH_HISTORY + 1, CUSTOMERS + 1):
        assert planned[c].astimezone(ZoneInfo(zone_of[c])).time() == dt.time(10, 0), (c, planned[c])
    # Within the window of 24 hours, but for quiet hours, which may move a habit past it.
    assert all(start <= at <= start + dt.timedelta(hours=24) for c, at in planned.items() if not 31 <= c <= 36)

    # The run delivers those waves: one timer per future wave, each batch no earlier than its wave.
    waves = sorted({at for at in planned.values() if at > start})
    fired = await fired_timers(handle)
    assert len(fired) == len(waves) and all(abs((f - w).total_seconds()) < 2 for f, w in zip(fired, waves, strict=True))
    batches = [(at, inp.get("wave_at")) for at, inp in await scheduled_batches(handle)]
    assert {dt.datetime.fromisoformat(w) for _, w in batches if w} == set(waves)
    for scheduled, wave in batches:
        if wave:
            assert scheduled >= dt.datetime.fromisoformat(wave) - dt.timedelta(seconds=1), (wave, scheduled)
