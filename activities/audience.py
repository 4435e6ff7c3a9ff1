"""Audience planning: compile the campaign's segment, freeze the recipients, cut batches a
page at a time, and record the rest of a cancelled run."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.lookups import campaign_spec, pinned_config
from activities.names import LIST_BATCHES, PLAN_AUDIENCE, SKIP_REMAINING
from activities.pooled import PooledActivities
from core.campaigns.spec import CampaignSpec, experiment_assignment
from core.content.channels import message_key
from core.customers.segments import SegmentError, compile_segment
from core.infra.db import BULK_STATEMENT_TIMEOUT_SECONDS, TenantConn, tenant_tx
from core.infra.telemetry import tag_current_span
from core.optimisation.send_times import assign_run_send_times
from core.runs.models import (
    AudiencePlan,
    BatchPage,
    BatchPageInput,
    Counts,
    PlanAudienceInput,
    SkipRemainingInput,
    Wave,
)
from core.runs.policies import quiet_hours_for, wave_instant
from core.tenants.config_schema import TenantConfig

# Batch boundaries of one page: every batch_size-th customer id of the frozen audience from the
# cursor on, in id order; one more than asked for, which is the next page's cursor.
_BATCH_STARTS_SQL = """
SELECT customer_id FROM (
    SELECT customer_id, row_number() OVER (ORDER BY customer_id) AS n FROM (
        SELECT customer_id FROM run_recipients
        WHERE tenant_id = $1 AND run_id = $2::uuid AND ($3::bigint IS NULL OR customer_id >= $3)
          AND send_after IS NOT DISTINCT FROM $6::timestamptz
        ORDER BY customer_id LIMIT $4
    ) page
) numbered WHERE (n - 1) % $5 = 0 ORDER BY customer_id
"""
# A page of recipients after the cursor, and which of their channels have no ledger row yet.
_SKIP_PAGE = 5_000
_RECIPIENT_PAGE_SQL = """
SELECT customer_id FROM run_recipients
WHERE tenant_id = $1 AND run_id = $2::uuid AND customer_id > $3
ORDER BY customer_id LIMIT $4
"""
_MISSING_SQL = """
SELECT r.customer_id, ch.channel
FROM run_recipients r CROSS JOIN unnest($5::text[]) AS ch(channel)
WHERE r.tenant_id = $1 AND r.run_id = $2::uuid AND r.customer_id > $3 AND r.customer_id <= $4
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.tenant_id = r.tenant_id AND d.run_id = r.run_id
                    AND d.customer_id = r.customer_id AND d.channel = ch.channel)
ORDER BY r.customer_id, ch.channel
"""
_SKIP_SQL = """
INSERT INTO deliveries (tenant_id, run_id, customer_id, channel, variant, status, reason, idempotency_key)
SELECT $1, $2::uuid, c, ch, v, 'skipped', $3, k
FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[]) AS t(c, ch, v, k)
ON CONFLICT (tenant_id, run_id, customer_id, channel) DO NOTHING
"""
_TIME_ZONES_SQL = """
SELECT DISTINCT c.time_zone FROM run_recipients r
JOIN customers c ON c.tenant_id = r.tenant_id AND c.id = r.customer_id
WHERE r.tenant_id = $1 AND r.run_id = $2::uuid
"""
_SET_WAVES_SQL = """
UPDATE run_recipients r SET send_after = w.at
FROM customers c, unnest($3::text[], $4::timestamptz[]) AS w(tz, at)
WHERE r.tenant_id = $1 AND r.run_id = $2::uuid
  AND c.tenant_id = r.tenant_id AND c.id = r.customer_id AND c.time_zone = w.tz
"""
_WAVES_SQL = """
SELECT send_after, count(*) AS n FROM run_recipients
WHERE tenant_id = $1 AND run_id = $2::uuid
GROUP BY send_after ORDER BY send_after NULLS FIRST
"""
_REASON_COUNTS_SQL = """
SELECT channel, variant, count(*) AS n FROM deliveries
WHERE tenant_id = $1 AND run_id = $2::uuid AND status = 'skipped' AND reason = $3
GROUP BY channel, variant
"""


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def resolve_segment(spec: CampaignSpec) -> dict[str, Any]:
    """An inline segment as is; a segment name becomes a reference the compiler resolves."""
    return {"segment": spec.segment} if isinstance(spec.segment, str) else spec.segment


async def run_waves(conn: TenantConn, inp: PlanAudienceInput) -> list[Wave]:
    """The run's recipients grouped by the instant they may be sent from, in order."""
    return [
        Wave(at=r["send_after"], recipients=r["n"], batches=-(-r["n"] // inp.batch_size))
        for r in await conn.fetch(_WAVES_SQL, inp.tenant, inp.run_id)
    ]


async def assign_waves(conn: TenantConn, inp: PlanAudienceInput, spec: CampaignSpec, config: TenantConfig) -> None:
    """Give each recipient the instant it may be sent from, by its time zone: the campaign's
    local send time, moved past the tenant's quiet hours when the run uses a quiet channel."""
    quiet = quiet_hours_for(config.policies.quiet_hours, list(spec.channels))
    now = inp.now or dt.datetime.now(dt.UTC)
    if spec.send_time is not None:  # each recipient's best local hour (core/optimisation/send_times.py)
        await assign_run_send_times(
            conn, inp.tenant, inp.run_id, spec.send_time, now=now, quiet=quiet,
            default_zone=config.brand.default_time_zone,
        )  # fmt: skip
        return
    if spec.local_send_time is None and quiet is None:
        return
    zones, instants = [], []
    for row in await conn.fetch(_TIME_ZONES_SQL, inp.tenant, inp.run_id):
        zone = row["time_zone"] if _known_zone(row["time_zone"]) else config.brand.default_time_zone
        at = wave_instant(now, zone, local_time=spec.local_send_time, passed=spec.if_local_time_passed, quiet=quiet)
        if at > now:
            zones.append(row["time_zone"])
            instants.append(at)
    if zones:
        await conn.execute(_SET_WAVES_SQL, inp.tenant, inp.run_id, zones, instants)


class AudienceActivities(PooledActivities):
    """Audience planning: freeze recipients, page batch boundaries, skip the rest on cancel."""

    @activity.defn(name=PLAN_AUDIENCE)
    async def plan_audience(self, inp: PlanAudienceInput) -> AudiencePlan:
        """Freeze the run's audience and plan its local-time waves."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        config = await pinned_config(self.pool, inp.tenant, inp.config_version)
        # Freezing the audience is one statement over all the tenant's customers (a million in
        # benchmarks/million.py): the bulk limit, not the per-query one.
        async with tenant_tx(self.pool, inp.tenant, statement_timeout=BULK_STATEMENT_TIMEOUT_SECONDS) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
            try:
                compiled = compile_segment(resolve_segment(spec), config.segments, first_param=3)
            except SegmentError as exc:
                raise ApplicationError(f"segment does not compile: {exc}", non_retryable=True) from exc
            # Freeze once: a retried plan must not re-evaluate against customers that changed since.
            frozen = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM run_recipients WHERE tenant_id = $1 AND run_id = $2::uuid)",
                inp.tenant,
                inp.run_id,
            )
            if not frozen:
                await conn.execute(
                    f"""INSERT INTO run_recipients (tenant_id, run_id, customer_id)
                        SELECT c.tenant_id, $2::uuid, c.id FROM customers c
                        WHERE c.tenant_id = $1 AND ({compiled.where})""",
                    inp.tenant,
                    inp.run_id,
                    *compiled.params,
                )
                await assign_waves(conn, inp, spec, config)
            waves = await run_waves(conn, inp)
        planned = sum(w.recipients for w in waves)
        return AudiencePlan(planned=planned, batches=sum(w.batches for w in waves), waves=waves)

    @activity.defn(name=LIST_BATCHES)
    async def list_batches(self, inp: BatchPageInput) -> BatchPage:
        """The next `max_batches` batch boundaries of the frozen audience from the cursor on."""
        tag_current_span(tenant=inp.tenant, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            rows = await conn.fetch(
                _BATCH_STARTS_SQL,
                inp.tenant,
                inp.run_id,
                inp.first_id,
                inp.batch_size * inp.max_batches + 1,
                inp.batch_size,
                inp.wave_at,
            )
        starts = [r["customer_id"] for r in rows]
        if len(starts) > inp.max_batches:
            return BatchPage(starts=starts[: inp.max_batches], next_first_id=starts[inp.max_batches])
        return BatchPage(starts=starts)

    @activity.defn(name=SKIP_REMAINING)
    async def skip_remaining(self, inp: SkipRemainingInput) -> Counts:
        """Give every (recipient, channel) of the run without a ledger row a `skipped` row for
        `inp.reason`, with the variant the recipient was assigned; returns the ledger's counts of
        that reason, so a retried call reports the same numbers."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
        config = await pinned_config(self.pool, inp.tenant, inp.config_version)
        variant_of = experiment_assignment(spec, config, inp.tenant, inp.campaign_id, inp.experiment).ledger_variant

        channels = [*spec.channels, *([inp.fallback] if inp.fallback else [])]
        cursor = -(2**63)
        while True:
            async with tenant_tx(self.pool, inp.tenant) as conn:
                ids = [
                    r["customer_id"]
                    for r in await conn.fetch(_RECIPIENT_PAGE_SQL, inp.tenant, inp.run_id, cursor, _SKIP_PAGE)
                ]
                if not ids:
                    break
                missing = await conn.fetch(_MISSING_SQL, inp.tenant, inp.run_id, cursor, ids[-1], channels)
                if missing:
                    await conn.execute(
                        _SKIP_SQL,
                        inp.tenant,
                        inp.run_id,
                        inp.reason,
                        [r["customer_id"] for r in missing],
                        [r["channel"] for r in missing],
                        [variant_of(r["customer_id"]) for r in missing],
                        [message_key(inp.tenant, inp.run_id, r["customer_id"], r["channel"]) for r in missing],
                    )
            cursor = ids[-1]
            activity.heartbeat(cursor)
        counts = Counts()
        async with tenant_tx(self.pool, inp.tenant) as conn:
            for r in await conn.fetch(_REASON_COUNTS_SQL, inp.tenant, inp.run_id, inp.reason):
                counts.tally("skipped", inp.reason, r["variant"], r["channel"], r["n"])
        return counts
