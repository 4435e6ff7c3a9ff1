"""The runs table and reads of the delivery ledger per run: the one place that reads and writes
run rows, for the API and the run activities alike. Functions take a tenant-scoped connection
(core/infra/db.py `tenant_tx`) and return domain objects, or None for a run that does not exist."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, Field

from core.common.ids import as_uuid
from core.infra.db import TenantConn
from core.runs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Counts, MarkRunInput, RunStatus

_COLUMNS = (
    "id, campaign_id, workflow_id, status, config_version, planned, send_at, created_at, started_at, finished_at, error"
)
_LIST_RUNS_SQL = f"""
SELECT {_COLUMNS} FROM runs
WHERE tenant_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::uuid IS NULL OR campaign_id = $3)
  AND (created_at, id) < ($4::timestamptz, $5::uuid)
ORDER BY created_at DESC, id DESC
LIMIT $6
"""
# Returns the status the row had before (no row: the run is finished already, or unknown).
_MARK_RUN_SQL = """
WITH before AS (
    SELECT status FROM runs WHERE tenant_id = $1 AND id = $2::uuid FOR UPDATE
)
UPDATE runs SET
    status = $3,
    config_version = coalesce($4, config_version),
    planned = coalesce($5, planned),
    error = coalesce($6, error),
    send_at = coalesce($7, send_at),
    started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
    finished_at = CASE WHEN $3 = ANY($8::text[]) THEN now() ELSE finished_at END
FROM before
WHERE runs.tenant_id = $1 AND runs.id = $2::uuid
  -- A finished run stays finished, whatever write arrives late.
  AND runs.status <> ALL($8::text[])
RETURNING before.status
"""
_LEDGER_COUNTS_SQL = """
SELECT channel, variant, status, reason, count(*) AS n
FROM deliveries WHERE tenant_id = $1 AND run_id = $2 GROUP BY 1, 2, 3, 4
"""
# Each row with its message's events, gathered in the same statement (one index probe per row).
_DELIVERIES_SQL = """
SELECT customer_id, channel, variant, status, reason, detail, address, idempotency_key, provider_message_id,
       created_at, updated_at, coalesce(e.events, '[]'::jsonb) AS events
FROM deliveries d
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object('kind', m.kind, 'at', m.occurred_at, 'machine', m.machine)
                     ORDER BY m.occurred_at, m.kind) AS events
    FROM message_events m
    WHERE m.tenant_id = d.tenant_id AND m.run_id = d.run_id AND m.customer_id = d.customer_id
      AND m.channel = d.channel
) e ON true
WHERE tenant_id = $1 AND run_id = $2
  AND (customer_id, channel) > ($3::bigint, $4::text)
  AND ($5::text IS NULL OR status = $5)
  AND ($6::text IS NULL OR reason = $6)
  AND ($7::text IS NULL OR channel = $7)
  AND ($8::text IS NULL OR variant = $8)
ORDER BY customer_id, channel
LIMIT $9
"""
# Past any real row: the keyset start of a first page.
NEWEST_RUN = (dt.datetime(9999, 1, 1, tzinfo=dt.UTC), uuid.UUID(int=0))
FIRST_DELIVERY = (-(2**63), "")


class RunRecord(BaseModel):
    """A run's row: its campaign, workflow, status, pinned config version, planned count, times."""

    id: str
    campaign_id: str
    workflow_id: str
    status: RunStatus
    config_version: int | None
    planned: int | None
    send_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the run has ended (completed, cancelled or failed); a finished run stays so."""
        return self.status in TERMINAL_STATUSES


class MessageEvent(BaseModel):
    """Something that happened to a message: an open, click, delivery receipt, bounce, complaint
    or unsubscribe, and whether it was a machine's (scanner, proxy, bot)."""

    kind: str
    at: dt.datetime
    machine: bool


class DeliveryRecord(BaseModel):
    """One ledger row: one message to one recipient on one channel."""

    customer_id: int
    channel: str
    variant: str | None
    status: str
    reason: str | None
    detail: str | None = None  # why it failed, when the reason alone cannot say (render errors)
    address: str | None
    idempotency_key: str
    provider_message_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    events: list[MessageEvent] = Field(default_factory=list, description="the message's events, oldest first")


def _record(row: Any) -> RunRecord:
    return RunRecord(**{**dict(row), "id": str(row["id"]), "campaign_id": str(row["campaign_id"])})


async def get_run(conn: TenantConn, tenant: str, run_id: str | uuid.UUID) -> RunRecord | None:
    """The run, or None (also when `run_id` is not a UUID)."""
    rid = as_uuid(run_id)
    if rid is None:
        return None
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM runs WHERE tenant_id = $1 AND id = $2", tenant, rid)
    return None if row is None else _record(row)


async def list_runs(
    conn: TenantConn,
    tenant: str,
    *,
    status: RunStatus | None = None,
    campaign_id: uuid.UUID | None = None,
    before: tuple[dt.datetime, uuid.UUID] = NEWEST_RUN,
    limit: int,
) -> list[RunRecord]:
    """Up to `limit` runs newest first, older than the keyset position `before` (created_at, id)."""
    rows = await conn.fetch(_LIST_RUNS_SQL, tenant, status, campaign_id, *before, limit)
    return [_record(r) for r in rows]


async def campaign_run_ids(conn: TenantConn, tenant: str, campaign_id: str | uuid.UUID) -> list[str]:
    """The ids of every run of the campaign, oldest first."""
    rows = await conn.fetch(
        "SELECT id FROM runs WHERE tenant_id = $1 AND campaign_id = $2 ORDER BY created_at, id",
        tenant,
        as_uuid(campaign_id),
    )
    return [str(r["id"]) for r in rows]


async def active_runs(conn: TenantConn, tenant: str, campaign_id: str | uuid.UUID) -> list[RunRecord]:
    """The campaign's runs that still read its definition (scheduled, running or paused)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM runs WHERE tenant_id = $1 AND campaign_id = $2 AND status = ANY($3::text[])",
        tenant,
        as_uuid(campaign_id),
        sorted(ACTIVE_STATUSES),
    )
    return [_record(r) for r in rows]


async def insert_run(
    conn: TenantConn,
    tenant: str,
    run_id: str | uuid.UUID,
    campaign_id: str | uuid.UUID,
    workflow_id: str,
    send_at: dt.datetime | None = None,
) -> None:
    """Record a run as scheduled; idempotent, so a retried activity finds its row there."""
    await conn.execute(
        """INSERT INTO runs (tenant_id, id, campaign_id, workflow_id, send_at)
           VALUES ($1, $2::uuid, $3::uuid, $4, $5) ON CONFLICT DO NOTHING""",
        tenant,
        as_uuid(run_id),
        as_uuid(campaign_id),
        workflow_id,
        send_at,
    )


async def delete_run(conn: TenantConn, tenant: str, run_id: str | uuid.UUID) -> None:
    """Forget a run that never started (its workflow could not be started)."""
    await conn.execute("DELETE FROM runs WHERE tenant_id = $1 AND id = $2", tenant, as_uuid(run_id))


async def mark_run(conn: TenantConn, inp: MarkRunInput) -> bool:
    """Set the run's status and whatever else `inp` carries; a finished run is left as it is.
    Whether the status changed (a write that only adds the planned count, say, does not)."""
    before = await conn.fetchval(
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
    return before is not None and before != inp.status


async def ledger_counts(conn: TenantConn, tenant: str, run_id: str | uuid.UUID) -> Counts:
    """The run's ledger rows counted by status, skip reason, variant and channel."""
    counts = Counts()
    for r in await conn.fetch(_LEDGER_COUNTS_SQL, tenant, as_uuid(run_id)):
        counts.tally(r["status"], r["reason"], r["variant"], r["channel"], r["n"])
    return counts


async def list_deliveries(
    conn: TenantConn,
    tenant: str,
    run_id: str | uuid.UUID,
    *,
    after: tuple[int, str] = FIRST_DELIVERY,
    status: str | None = None,
    reason: str | None = None,
    channel: str | None = None,
    variant: str | None = None,
    limit: int,
) -> list[DeliveryRecord]:
    """Up to `limit` ledger rows of the run in (customer, channel) order, after the keyset position
    `after`, optionally only those with the given status, reason, channel and variant."""
    rows = await conn.fetch(_DELIVERIES_SQL, tenant, as_uuid(run_id), *after, status, reason, channel, variant, limit)
    return [DeliveryRecord(**dict(r)) for r in rows]
