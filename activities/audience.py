"""Audience planning: compile the campaign's segment, freeze the recipients, cut batches."""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.names import PLAN_AUDIENCE
from core.campaigns import CampaignSpec
from core.config_store import get_config
from core.db import tenant_tx
from core.runs import AudiencePlan, PlanAudienceInput
from core.segments import SegmentError, compile_segment
from core.telemetry import tag_current_span

# Batch boundaries: every batch_size-th customer id of the frozen audience, in id order.
_BATCH_STARTS_SQL = """
SELECT customer_id FROM (
    SELECT customer_id, row_number() OVER (ORDER BY customer_id) AS n
    FROM run_recipients WHERE tenant_id = $1 AND run_id = $2::uuid
) numbered WHERE (n - 1) % $3 = 0 ORDER BY customer_id
"""


def resolve_segment(spec: CampaignSpec) -> dict:
    """An inline segment as is; a segment name becomes a reference the compiler resolves."""
    return {"segment": spec.segment} if isinstance(spec.segment, str) else spec.segment


class AudienceActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name=PLAN_AUDIENCE)
    async def plan_audience(self, inp: PlanAudienceInput) -> AudiencePlan:
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        found = await get_config(self.pool, inp.tenant, inp.config_version)
        if found is None:
            raise ApplicationError(f"config version {inp.config_version} not found", non_retryable=True)
        config = found[1]
        async with tenant_tx(self.pool, inp.tenant) as conn:
            row = await conn.fetchrow(
                "SELECT definition FROM campaigns WHERE tenant_id = $1 AND id = $2::uuid",
                inp.tenant,
                inp.campaign_id,
            )
            if row is None:
                raise ApplicationError(f"campaign {inp.campaign_id} not found", non_retryable=True)
            spec = CampaignSpec.model_validate(row["definition"])
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
            planned = await conn.fetchval(
                "SELECT count(*) FROM run_recipients WHERE tenant_id = $1 AND run_id = $2::uuid",
                inp.tenant,
                inp.run_id,
            )
            starts = [r["customer_id"] for r in await conn.fetch(_BATCH_STARTS_SQL, inp.tenant, inp.run_id, inp.batch_size)]
        return AudiencePlan(planned=planned, batch_starts=starts)
