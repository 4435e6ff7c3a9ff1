"""Send-time optimisation: each recipient's best local hour, learnt from their own human opens
and clicks with the tenant-wide hour pattern as the prior, turned into the local-time waves a
run already delivers (activities/audience.py) and previewed before a run.

The model, per recipient: every human open or click of the last LOOKBACK_DAYS counts in the
local hour (the recipient's time zone) it happened, weighted 0.5 ** (age / HALF_LIFE_DAYS) so
recent habits count more. The tenant's weighted counts per hour (plus one per hour, so no hour
is impossible) normalised to a distribution are the prior; a recipient's score for hour h is
their own weighted count in h plus PRIOR_STRENGTH times the prior's share of h (the posterior
mean of a Dirichlet-multinomial up to a constant). A recipient with one event stays close to the
tenant pattern, one with many follows their own. The best hour among those that come round
within `within_hours` wins (ties: the earliest); recipients without any event get the fallback
local time. Quiet hours win over the chosen hour: its instant moves to the end of the quiet
window, as for every other wave. All of it is one SQL statement over the audience.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from core.campaigns.send_time import OptimalSendTime as OptimalSendTime
from core.infra.db import TenantConn
from core.runs.policies import local_send_instant, quiet_hours_end
from core.tenants.config_schema import QuietHours

LOOKBACK_DAYS = 180
HALF_LIFE_DAYS = 30.0
PRIOR_STRENGTH = 2.0
# The candidate "hour" of the fallback local time in the instants table.
FALLBACK = -1


class Candidate(BaseModel):
    """One hour a recipient in `zone` may get: when it comes round, and whether quiet hours moved it."""

    zone: str
    hour: int  # local hour, or FALLBACK
    at: dt.datetime
    quiet_moved: bool = False


def _next_hour(now: dt.datetime, zone: ZoneInfo, hour: int) -> dt.datetime:
    """Now if the local hour is `hour`, else the next local `hour`:00."""
    local = now.astimezone(zone)
    if local.hour == hour:
        return now
    return local_send_instant(now, str(zone), dt.time(hour), "next_day")


def candidates(now: dt.datetime, zones: list[str], opt: OptimalSendTime, quiet: QuietHours | None) -> list[Candidate]:
    """Every local hour that comes round within the window in each zone, plus the fallback time
    (at the window's start when its next occurrence is past the window), moved past quiet hours."""
    end = now + dt.timedelta(hours=opt.within_hours)
    out = []
    for name in zones:
        zone = ZoneInfo(name)
        instants = [(h, _next_hour(now, zone, h)) for h in range(24)]
        fallback = local_send_instant(now, name, opt.fallback_local_time, "next_day")
        instants.append((FALLBACK, fallback if fallback <= end else now))
        for hour, at in instants:
            if at > end:
                continue
            moved = quiet_hours_end(at, name, quiet) if quiet else at
            out.append(Candidate(zone=name, hour=hour, at=moved, quiet_moved=moved != at))
    return out


# The recipients' zones as the model reads them: an unknown zone is the tenant's default.
_ZONES_SQL = """
SELECT DISTINCT CASE WHEN tz.name IS NULL THEN $2 ELSE c.time_zone END AS zone
FROM customers c LEFT JOIN (SELECT name FROM pg_timezone_names) tz ON tz.name = c.time_zone
WHERE c.tenant_id = $1 AND ({audience})
"""
# $1 tenant, $2 now, $3 default zone, $4 lookback days, $5 half-life seconds, $6 prior strength,
# $7-$9 the candidates (zone, hour, instant); the audience's own parameters follow.
_MODEL_SQL = """
WITH zones AS (SELECT name FROM pg_timezone_names),
recips AS (
    SELECT c.id, CASE WHEN tz.name IS NULL THEN $3 ELSE c.time_zone END AS zone
    FROM customers c LEFT JOIN zones tz ON tz.name = c.time_zone
    WHERE c.tenant_id = $1 AND ({audience})
),
weighted AS (
    SELECT e.customer_id AS id,
           extract(hour FROM e.occurred_at AT TIME ZONE coalesce(tz.name, $3))::int AS hour,
           -- float8 throughout: numeric power() and sums cost seconds at a million events
           power(0.5::float8, extract(epoch FROM $2::timestamptz - e.occurred_at)::float8 / $5::float8) AS w
    FROM message_events e
    JOIN customers c ON c.tenant_id = e.tenant_id AND c.id = e.customer_id
    LEFT JOIN zones tz ON tz.name = c.time_zone
    WHERE e.tenant_id = $1 AND e.kind IN ('open', 'click') AND NOT e.machine
      AND e.occurred_at > $2::timestamptz - make_interval(days => $4) AND e.occurred_at <= $2::timestamptz
),
prior AS (
    SELECT h AS hour, (coalesce(sum(w.w), 0) + 1.0::float8) / sum(coalesce(sum(w.w), 0) + 1.0::float8) OVER () AS p
    FROM generate_series(0, 23) AS h LEFT JOIN weighted w ON w.hour = h
    GROUP BY h
),
own AS (
    SELECT w.id, w.hour, sum(w.w) AS w FROM weighted w JOIN recips r ON r.id = w.id GROUP BY w.id, w.hour
),
cand AS (SELECT * FROM unnest($7::text[], $8::int[], $9::timestamptz[]) AS k(zone, hour, at)),
-- An hour without events of the recipient's own scores the prior alone, so of those only the
-- zone's best by the prior can win: scoring it and the recipient's own hours is enough.
zone_best AS (
    SELECT DISTINCT ON (k.zone) k.zone, k.hour, k.at, p.p
    FROM cand k JOIN prior p ON p.hour = k.hour
    WHERE k.hour >= 0
    ORDER BY k.zone, p.p DESC, k.at
),
scored AS (
    SELECT r.id, k.hour, k.at, o.w + $6::float8 * p.p AS score
    FROM own o
    JOIN recips r ON r.id = o.id
    JOIN cand k ON k.zone = r.zone AND k.hour = o.hour
    JOIN prior p ON p.hour = o.hour
    UNION ALL
    SELECT r.id, z.hour, z.at, $6::float8 * z.p
    FROM recips r JOIN zone_best z ON z.zone = r.zone
    WHERE r.id IN (SELECT id FROM own)
),
best AS (SELECT DISTINCT ON (id) id, hour, at FROM scored ORDER BY id, score DESC, at),
chosen AS (
    SELECT r.id, r.zone, coalesce(b.hour, {fallback}) AS hour, coalesce(b.at, f.at) AS at
    FROM recips r
    LEFT JOIN best b ON b.id = r.id
    LEFT JOIN cand f ON f.zone = r.zone AND f.hour = {fallback}
)
"""
_ASSIGN_SQL = """
UPDATE run_recipients r SET send_after = ch.at FROM chosen ch
WHERE r.tenant_id = $1 AND r.run_id = $10::uuid AND r.customer_id = ch.id AND ch.at > $2::timestamptz
"""
_PREVIEW_SQL = "SELECT zone, hour, count(*) AS n FROM chosen GROUP BY zone, hour"
_FIRST_AUDIENCE_PARAM = 10
_SETTINGS = "SET LOCAL work_mem = '64MB'; SET LOCAL jit = off"

# first parameter number -> (a WHERE condition on customers `c`, its parameters from that number on)
Audience = Callable[[int], tuple[str, list[Any]]]


def run_audience(run_id: str) -> Audience:
    """A run's frozen recipients as an Audience."""
    return lambda first: (
        f"c.id IN (SELECT customer_id FROM run_recipients WHERE tenant_id = $1 AND run_id = ${first}::uuid)",
        [run_id],
    )


async def _candidates(
    conn: TenantConn,
    tenant: str,
    audience: Audience,
    now: dt.datetime,
    opt: OptimalSendTime,
    quiet: QuietHours | None,
    default_zone: str,
) -> tuple[list[Candidate], str, list[Any]]:
    """The candidate instants of every zone in the audience, and the model statement with its parameters."""
    # The per-recipient scores are sorted once; keep that sort in memory (rest of the transaction).
    await conn.execute(_SETTINGS)
    where, where_params = audience(3)
    rows = await conn.fetch(_ZONES_SQL.format(audience=where), tenant, default_zone, *where_params)
    found = candidates(now, sorted(r["zone"] for r in rows), opt, quiet)
    where, where_params = audience(_FIRST_AUDIENCE_PARAM)
    params = [
        tenant,
        now,
        default_zone,
        LOOKBACK_DAYS,
        HALF_LIFE_DAYS * 86_400,
        PRIOR_STRENGTH,
        [c.zone for c in found],
        [c.hour for c in found],
        [c.at for c in found],
        *where_params,
    ]
    return found, _MODEL_SQL.format(audience=where, fallback=FALLBACK), params


async def assign_run_send_times(
    conn: TenantConn,
    tenant: str,
    run_id: str,
    opt: OptimalSendTime,
    *,
    now: dt.datetime,
    quiet: QuietHours | None,
    default_zone: str,
) -> None:
    """Give each frozen recipient of the run the instant of its best hour (send_after; left
    null, at once, when that is now), in one statement."""
    _, model, params = await _candidates(conn, tenant, run_audience(run_id), now, opt, quiet, default_zone)
    await conn.execute(model + _ASSIGN_SQL, *params)


class HourCount(BaseModel):
    """Recipients whose best local hour is `hour`."""

    hour: int = Field(ge=0, le=23)
    recipients: int


class WaveCount(BaseModel):
    """Recipients a run started now would send to at `at` (null: at once)."""

    at: dt.datetime | None
    recipients: int


class SendTimePreview(BaseModel):
    """How `send_time: optimal` would spread a campaign's audience if a run started now."""

    recipients: int = Field(description="the campaign's audience now")
    optimised: int = Field(description="recipients with opens or clicks, sent at their best local hour")
    fallback: int = Field(description="recipients with no open or click history, sent at fallback_local_time")
    fallback_local_time: str
    within_hours: int
    quiet_hours_moved: int = Field(description="recipients whose chosen hour fell in quiet hours (moved to their end)")
    hours: list[HourCount] = Field(description="chosen local hours of the optimised recipients, every hour 0-23")
    waves: list[WaveCount] = Field(description="the waves a run started now would have, in order")
    model: dict[str, float] = Field(description="lookback_days, half_life_days and prior_strength of the model")


async def preview_send_times(
    conn: TenantConn,
    tenant: str,
    audience: Audience,
    opt: OptimalSendTime,
    *,
    now: dt.datetime,
    quiet: QuietHours | None,
    default_zone: str,
) -> SendTimePreview:
    """The distribution of chosen hours and the waves of `audience` for a run started `now`."""
    found, model, params = await _candidates(conn, tenant, audience, now, opt, quiet, default_zone)
    by_key = {(c.zone, c.hour): c for c in found}
    hours: Counter[int] = Counter()
    waves: Counter[dt.datetime | None] = Counter()
    fallback = moved = 0
    for r in await conn.fetch(model + _PREVIEW_SQL, *params):
        n = r["n"]
        cand = by_key.get((r["zone"], r["hour"]))
        if r["hour"] == FALLBACK:
            fallback += n
        else:
            hours[r["hour"]] += n
        moved += n if cand and cand.quiet_moved else 0
        waves[cand.at if cand and cand.at > now else None] += n
    total = fallback + sum(hours.values())
    return SendTimePreview(
        recipients=total,
        optimised=total - fallback,
        fallback=fallback,
        fallback_local_time=opt.fallback_local_time.strftime("%H:%M"),
        within_hours=opt.within_hours,
        quiet_hours_moved=moved,
        hours=[HourCount(hour=h, recipients=hours[h]) for h in range(24)],
        waves=[WaveCount(at=at, recipients=waves[at]) for at in sorted(waves, key=lambda a: (a is not None, a or now))],
        model={"lookback_days": LOOKBACK_DAYS, "half_life_days": HALF_LIFE_DAYS, "prior_strength": PRIOR_STRENGTH},
    )
