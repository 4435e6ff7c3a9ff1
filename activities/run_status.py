"""The run's row in PostgreSQL: status, pinned config version, planned count, timestamps."""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.names import MARK_RUN, REGISTER_RUN
from core.db import tenant_tx
from core.runs import TERMINAL_STATUSES, MarkRunInput
from core.schedules import RegisterRunInput
from core.telemetry import tag_current_span

_MARK_RUN_SQL = """
UPDATE runs SET
    status = $3,
    config_version = coalesce($4, config_version),
    planned = coalesce($5, planned),
    error = coalesce($6, error),
    send_at = coalesce($7, send_at),
    started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
    finished_at = CASE WHEN $3 = ANY($8::text[]) THEN now() ELSE finished_at END
WHERE tenant_id = $1 AND id = $2::uuid
  -- A finished run stays finished, whatever write arrives late.
  AND status <> ALL($8::text[])
"""


class RunStatusActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name=MARK_RUN)
    async def mark_run(self, inp: MarkRunInput) -> None:
        tag_current_span(tenant=inp.tenant, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            await conn.execute(
                _MARK_RUN_SQL,
                inp.tenant,
                inp.run_id,
                inp.status,
                inp.config_version,
                inp.planned,
                inp.error,
                inp.send_at,
                sorted(TERMINAL_STATUSES),
            )

    @activity.defn(name=REGISTER_RUN)
    async def register_run(self, inp: RegisterRunInput) -> None:
        """Record a scheduled occurrence as a run (idempotent: a retry finds the row there)."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            status = await conn.fetchval(
                "SELECT status FROM campaigns WHERE tenant_id = $1 AND id = $2::uuid", inp.tenant, inp.campaign_id
            )
            if status is None or status == "archived":
                raise ApplicationError(
                    f"campaign {inp.campaign_id} is {'archived' if status else 'gone'}; not starting a run",
                    non_retryable=True,
                )
            await conn.execute(
                """INSERT INTO runs (tenant_id, id, campaign_id, workflow_id)
                   VALUES ($1, $2::uuid, $3::uuid, $4) ON CONFLICT DO NOTHING""",
                inp.tenant,
                inp.run_id,
                inp.campaign_id,
                inp.workflow_id,
            )
