"""Engagement histories as tests seed them: customers with a known habit (the local hour they
open and click in), written straight to message_events as the tracking endpoints would."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import asyncpg

_INSERT_SQL = """
INSERT INTO message_events (tenant_id, run_id, customer_id, channel, kind, machine, machine_reason, occurred_at)
SELECT $1, $2::uuid, c, 'email', k, m, CASE WHEN m THEN 'scanner:test' END, t
FROM unnest($3::bigint[], $4::text[], $5::boolean[], $6::timestamptz[]) AS e(c, k, m, t)
"""


async def set_time_zones(pool: asyncpg.Pool, slug: str, zones: list[str]) -> None:
    """Customer i lives in zones[(i - 1) % len(zones)], has email consent and an address."""
    await pool.execute(
        """UPDATE customers SET time_zone = ($2::text[])[1 + (id - 1) % cardinality($2::text[])],
                                consent_email = true, email = 'c' || id || '@example.com'
           WHERE tenant_id = $1""",
        slug,
        zones,
    )


async def seed_hour_habits(
    pool: asyncpg.Pool,
    slug: str,
    now: dt.datetime,
    habits: dict[int, tuple[str, int]],
    *,
    events: int = 6,
    noise: int = 2,
    machine: int = 10,
) -> None:
    """For each customer id → (zone, hour): `events` human opens and clicks at that local hour over
    the last weeks, `noise` human ones at other hours (older), and `machine` recent machine opens
    at the opposite hour, which must not count."""
    rows: list[tuple[int, str, bool, dt.datetime]] = []
    for customer, (zone_name, hour) in habits.items():
        zone = ZoneInfo(zone_name)
        today = now.astimezone(zone).date()

        def at(days_ago: int, h: int, minute: int, today: dt.date = today, zone: ZoneInfo = zone) -> dt.datetime:
            return dt.datetime.combine(today - dt.timedelta(days=days_ago), dt.time(h, minute), zone)

        for k in range(events):
            rows.append((customer, "open" if k % 2 else "click", False, at(2 + 4 * k, hour, 5 + k)))
        for j in range(noise):
            rows.append((customer, "open", False, at(30 + 7 * j, (hour + 5 + 7 * j) % 24, 20)))
        for j in range(machine):
            rows.append((customer, "open", True, at(1 + j, (hour + 12) % 24, 1)))
    rows = [r for r in rows if r[3] < now]
    await pool.execute(
        _INSERT_SQL,
        slug,
        uuid.uuid4(),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
