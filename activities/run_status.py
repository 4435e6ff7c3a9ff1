"""The run's row in PostgreSQL: status, pinned config version, planned count, timestamps."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.names import MARK_RUN
from core.db import tenant_tx
from core.runs import MarkRunInput
from core.telemetry import tag_current_span

_MARK_RUN_SQL = """
UPDATE runs SET
    status = $3,
    config_version = coalesce($4, config_version),
    planned = coalesce($5, planned),
    error = coalesce($6, error),
    started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
    finished_at = CASE WHEN $3 IN ('completed', 'cancelled', 'failed') THEN now() ELSE finished_at END
WHERE tenant_id = $1 AND id = $2::uuid
"""


class RunStatusActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name=MARK_RUN)
    async def mark_run(self, inp: MarkRunInput) -> None:
        tag_current_span(tenant=inp.tenant, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            await conn.execute(
                _MARK_RUN_SQL, inp.tenant, inp.run_id, inp.status, inp.config_version, inp.planned, inp.error
            )
