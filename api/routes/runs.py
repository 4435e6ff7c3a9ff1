"""Runs: start a campaign run (a CampaignRunWorkflow on the tenant's queue), list and watch
runs, page through their ledger, and pause, resume or cancel them."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from opentelemetry import trace
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.cursors import decode_cursor, encode_cursor
from api.deps import PoolDep, TemporalDep, TenantDep
from api.routes.campaigns import parse_campaign_id
from api.schemas import Delivery, DeliveryPage, Run, RunCounts, RunPage, RunStarted, RunSummary
from core.campaigns import CampaignSpec
from core.config_store import get_config
from core.db import tenant_tx
from core.runs import TERMINAL_STATUSES, CampaignRunInput, Counts, RescheduleInput, RunProgress, RunStatus
from core.temporal import campaign_search_attributes, run_workflow_id, task_queue_for
from core.tenant_config import ChannelName
from workflows.campaign_run import RUN_STATE_CONFLICT, CampaignRunWorkflow

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["runs"])

_FROM_TEMPORAL = {
    WorkflowExecutionStatus.FAILED: RunStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED: RunStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: RunStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: RunStatus.CANCELLED,
}
_LEDGER_COUNTS_SQL = """
SELECT channel, variant, status, reason, count(*) AS n
FROM deliveries WHERE tenant_id = $1 AND run_id = $2 GROUP BY 1, 2, 3, 4
"""
_RUN_COLUMNS = (
    "id, campaign_id, workflow_id, status, config_version, planned, send_at, created_at, started_at, finished_at, error"
)
_LIST_RUNS_SQL = f"""
SELECT {_RUN_COLUMNS} FROM runs
WHERE tenant_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::uuid IS NULL OR campaign_id = $3)
  AND (created_at, id) < ($4::timestamptz, $5::uuid)
ORDER BY created_at DESC, id DESC
LIMIT $6
"""
_DELIVERIES_SQL = """
SELECT customer_id, channel, variant, status, reason, address, idempotency_key, provider_message_id,
       created_at, updated_at
FROM deliveries
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
_NEWEST = (dt.datetime(9999, 1, 1, tzinfo=dt.UTC), uuid.UUID(int=0))
_FIRST_DELIVERY = (-(2**63), "")
# How long a control call waits for the worker to accept it, and a cancel for the run to end.
_ACCEPT_TIMEOUT = 15.0
_CANCEL_WAIT = 30.0
_QUERY_TIMEOUT = dt.timedelta(seconds=2)


@router.post("/campaigns/{campaign_id}/runs", status_code=202, response_model=RunStarted)
async def start_run(tenant: TenantDep, campaign_id: str, pool: PoolDep, temporal: TemporalDep) -> RunStarted:
    cid = parse_campaign_id(campaign_id)
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow(
            "SELECT definition, status FROM campaigns WHERE tenant_id = $1 AND id = $2", tenant, cid
        )
    if row is None:
        raise HTTPException(404, f"campaign '{campaign_id}' not found")
    if row["status"] == "archived":
        raise HTTPException(409, f"campaign '{campaign_id}' is archived; it cannot start new runs")
    if await get_config(pool, tenant) is None:
        raise HTTPException(409, f"tenant '{tenant}' has no configuration yet")
    spec = CampaignSpec.model_validate(row["definition"])
    run_id = str(uuid.uuid4())
    workflow_id = run_workflow_id(tenant, str(cid), run_id)
    trace.get_current_span().set_attributes(
        {"pennant.tenant": tenant, "pennant.campaign": str(cid), "pennant.run": run_id}
    )
    async with tenant_tx(pool, tenant) as conn:
        await conn.execute(
            """INSERT INTO runs (tenant_id, id, campaign_id, workflow_id, send_at)
               VALUES ($1, $2, $3, $4, $5)""",
            tenant,
            uuid.UUID(run_id),
            cid,
            workflow_id,
            spec.send_at,
        )
    try:
        await temporal.start_workflow(
            CampaignRunWorkflow.run,
            CampaignRunInput(tenant=tenant, campaign_id=str(cid), run_id=run_id, send_at=spec.send_at),
            id=workflow_id,
            task_queue=task_queue_for(tenant),
            search_attributes=campaign_search_attributes(tenant, str(cid)),
            static_summary=f"{spec.name} · {tenant}",
            static_details=f"campaign {cid}, run {run_id}, channels {', '.join(spec.channels)}",
        )
    except RPCError as exc:
        async with tenant_tx(pool, tenant) as conn:
            await conn.execute("DELETE FROM runs WHERE tenant_id = $1 AND id = $2", tenant, uuid.UUID(run_id))
        raise HTTPException(503, f"could not start the run on Temporal: {exc.message}") from exc
    return RunStarted(run_id=run_id, workflow_id=workflow_id, status=RunStatus.SCHEDULED)


@router.get("/runs", response_model=RunPage)
async def list_runs(
    tenant: TenantDep,
    pool: PoolDep,
    status: RunStatus | None = None,
    campaign_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> RunPage:
    """Runs newest first, optionally of one status or campaign. Statuses are the runs' rows,
    which the workflows keep current."""
    after = _NEWEST
    if cursor is not None:
        position = decode_cursor(cursor, {"created_at", "id"})
        try:
            after = (dt.datetime.fromisoformat(position["created_at"]), uuid.UUID(position["id"]))
        except (TypeError, ValueError):
            decode_cursor("", {"created_at", "id"})  # raises the cursor's 422
    async with tenant_tx(pool, tenant) as conn:
        rows = await conn.fetch(_LIST_RUNS_SQL, tenant, status, campaign_id, *after, limit + 1)
    items = [_summary(dict(r)) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor({"created_at": last["created_at"].isoformat(), "id": str(last["id"])})
    return RunPage(items=items, next_cursor=next_cursor)


def _summary(row: dict[str, Any]) -> RunSummary:
    return RunSummary(**{**row, "id": str(row["id"]), "campaign_id": str(row["campaign_id"])})


async def _ledger_counts(conn: Any, tenant: str, run_id: uuid.UUID, planned: int | None) -> RunCounts:
    counts = Counts()
    for r in await conn.fetch(_LEDGER_COUNTS_SQL, tenant, run_id):
        counts.tally(r["status"], r["reason"], r["variant"], r["channel"], r["n"])
    return RunCounts.of(counts, planned)


def parse_run_id(run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(run_id)
    except ValueError:
        raise HTTPException(404, f"run '{run_id}' not found") from None


async def _run_row(pool: PoolDep, tenant: str, run_id: str) -> dict[str, Any]:
    rid = parse_run_id(run_id)
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow("SELECT * FROM runs WHERE tenant_id = $1 AND id = $2", tenant, rid)
    if row is None:
        raise HTTPException(404, f"run '{run_id}' not found")
    return dict(row)


async def _live_progress(temporal: Client, workflow_id: str) -> tuple[str | None, RunProgress | None]:
    """(status if the workflow ended without its own bookkeeping, live progress if it runs)."""
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe(rpc_timeout=_QUERY_TIMEOUT)
    except RPCError:
        return None, None
    if desc.status in _FROM_TEMPORAL:  # terminated, timed out, failed or cancelled from outside
        return _FROM_TEMPORAL[desc.status], None
    if desc.status != WorkflowExecutionStatus.RUNNING:
        return None, None
    try:
        return None, await handle.query(CampaignRunWorkflow.progress, rpc_timeout=_QUERY_TIMEOUT)
    except RPCError:  # no worker to answer right now: the ledger still tells
        return None, None


@router.get("/runs/{run_id}", response_model=Run)
async def get_run(tenant: TenantDep, run_id: str, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Status and counts: from the workflow's progress query while the run is live, from the
    ledger once it has finished (or when the workflow cannot answer)."""
    row = await _run_row(pool, tenant, run_id)
    status = row["status"]
    progress: RunProgress | None = None
    if status not in TERMINAL_STATUSES:
        ended, progress = await _live_progress(temporal, row["workflow_id"])
        if ended is not None:
            status = ended
        elif progress is not None and progress.status not in TERMINAL_STATUSES:
            status = progress.status
        else:
            progress = None  # finishing right now: its row is about to say so, the ledger is complete
    if progress is not None:
        counts = RunCounts.of(progress.counts, progress.planned if progress.planned is not None else row["planned"])
    else:
        async with tenant_tx(pool, tenant) as conn:
            counts = await _ledger_counts(conn, tenant, row["id"], row["planned"])
    return Run(
        id=str(row["id"]),
        campaign_id=str(row["campaign_id"]),
        workflow_id=row["workflow_id"],
        status=status,
        config_version=row["config_version"],
        counts=counts,
        send_at=row["send_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        counts_source="workflow" if progress is not None else "ledger",
        batches_total=progress.batches_total if progress is not None else None,
        batches_done=progress.batches_done if progress is not None else None,
    )


@router.get("/runs/{run_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    tenant: TenantDep,
    run_id: str,
    pool: PoolDep,
    status: Literal["sent", "failed", "skipped"] | None = None,
    reason: str | None = None,
    channel: ChannelName | None = None,
    variant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> DeliveryPage:
    """The run's ledger in (customer, channel) order, one page at a time."""
    row = await _run_row(pool, tenant, run_id)
    after: tuple[int, str] = _FIRST_DELIVERY
    if cursor is not None:
        position = decode_cursor(cursor, {"customer_id", "channel"})
        if not isinstance(position["customer_id"], int) or not isinstance(position["channel"], str):
            decode_cursor("", {"customer_id", "channel"})  # raises the cursor's 422
        after = (position["customer_id"], position["channel"])
    async with tenant_tx(pool, tenant) as conn:
        rows = await conn.fetch(_DELIVERIES_SQL, tenant, row["id"], *after, status, reason, channel, variant, limit + 1)
    items = [Delivery(**dict(r)) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor({"customer_id": last["customer_id"], "channel": last["channel"]})
    return DeliveryPage(items=items, next_cursor=next_cursor)


async def _control(tenant: str, run_id: str, action: str, pool: PoolDep, temporal: Client, arg: Any = None) -> Run:
    row = await _run_row(pool, tenant, run_id)
    if row["status"] in TERMINAL_STATUSES:
        raise HTTPException(409, f"cannot {action} a run that is {row['status']}")
    update = {
        "pause": CampaignRunWorkflow.pause,
        "resume": CampaignRunWorkflow.resume,
        "cancel": CampaignRunWorkflow.cancel,
        "reschedule": CampaignRunWorkflow.reschedule,
    }[action]
    args = [] if arg is None else [arg]
    handle = temporal.get_workflow_handle(row["workflow_id"])
    try:
        try:
            # Accepted means the validator passed; a refusal arrives as the update's failure.
            accepted = await asyncio.wait_for(
                handle.start_update(update, *args, wait_for_stage=WorkflowUpdateStage.ACCEPTED),  # type: ignore[call-overload]
                _ACCEPT_TIMEOUT,
            )
        except TimeoutError:
            raise HTTPException(503, f"the run's worker did not take the {action} in time; try again") from None
        try:
            # Pause and resume finish at once; a cancel once running batches are done and the
            # rest is recorded. A slow cancel carries on after this answer.
            await asyncio.wait_for(accepted.result(), _CANCEL_WAIT)
        except TimeoutError:
            pass
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == RUN_STATE_CONFLICT:
            raise HTTPException(409, cause.message) from exc
        raise
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise HTTPException(503, f"could not {action} the run on Temporal: {exc.message}") from exc
        # The workflow has ended: between reading the row and the update, or from outside
        # (terminated in the Temporal UI), which get_run reports as the run's status.
        status = (await get_run(tenant, run_id, pool, temporal)).status
        raise HTTPException(409, f"cannot {action} a run that is {status}") from exc
    return await get_run(tenant, run_id, pool, temporal)


@router.post("/runs/{run_id}:pause", response_model=Run)
async def pause_run(tenant: TenantDep, run_id: str, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Start no new batch (running batches finish). 409 unless the run is scheduled or running."""
    return await _control(tenant, run_id, "pause", pool, temporal)


@router.post("/runs/{run_id}:resume", response_model=Run)
async def resume_run(tenant: TenantDep, run_id: str, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Carry on a paused run. 409 unless the run is paused."""
    return await _control(tenant, run_id, "resume", pool, temporal)


@router.post("/runs/{run_id}:cancel", response_model=Run)
async def cancel_run(tenant: TenantDep, run_id: str, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Start no new batch, let running ones finish, record every recipient never attempted as
    skipped (reason `cancelled`); the run ends `cancelled`. Works while it waits for its send
    time too. 409 once the run has finished."""
    return await _control(tenant, run_id, "cancel", pool, temporal)


@router.post("/runs/{run_id}:reschedule", response_model=Run)
async def reschedule_run(
    tenant: TenantDep, run_id: str, change: RescheduleInput, pool: PoolDep, temporal: TemporalDep
) -> Run:
    """Move the send time of a run still waiting for it; a time in the past sends now.
    409 once the run has started delivering."""
    return await _control(tenant, run_id, "reschedule", pool, temporal, change)
