"""Runs: start a campaign run (a CampaignRunWorkflow; its work on the tenant's queue), list and watch
runs, page through their ledger, and pause, resume or cancel them."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from opentelemetry import trace
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.cursors import decode_cursor, next_cursor
from api.deps import CampaignDep, PoolDep, RunDep, TemporalDep, TenantDep, get_tenant_config
from api.schemas import Delivery, DeliveryPage, Run, RunCounts, RunPage, RunStarted, RunSummary
from core.experiments import store as experiment_store
from core.experiments.models import ExtendTestInput, PickWinnerInput
from core.infra.db import tenant_tx
from core.infra.temporal import WORKFLOW_QUEUE, campaign_search_attributes, run_workflow_id
from core.runs import store as run_store
from core.runs.models import (
    STORED_STATUSES,
    TERMINAL_STATUSES,
    CampaignRunInput,
    RescheduleInput,
    RunProgress,
    RunStatus,
)
from core.runs.store import RunRecord
from core.tenants.config_schema import ChannelName
from workflows.campaign_run import RUN_STATE_CONFLICT, CampaignRunWorkflow
from workflows.winner_selection import EXPERIMENT_CONFLICT, UNKNOWN_VARIANT

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["runs"])

if TYPE_CHECKING:
    StoredStatus = RunStatus
else:
    # Lists filter on what rows hold: `cancelling` is only ever reported live, never stored.
    StoredStatus = Literal[tuple(s.value for s in STORED_STATUSES)]

_FROM_TEMPORAL = {
    WorkflowExecutionStatus.FAILED: RunStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED: RunStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: RunStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: RunStatus.CANCELLED,
}
# How long a control call waits for the worker to accept it, and a cancel for the run to end.
_ACCEPT_TIMEOUT = 15.0
_CANCEL_WAIT = 30.0
_QUERY_TIMEOUT = dt.timedelta(seconds=2)


@router.post("/campaigns/{campaign_id}/runs", status_code=202, response_model=RunStarted)
async def start_run(tenant: TenantDep, campaign: CampaignDep, pool: PoolDep, temporal: TemporalDep) -> RunStarted:
    """Start a run of the campaign (its activities on the tenant's task queue); 409 when the campaign is archived
    or the tenant has no configuration yet."""
    if not campaign.startable:
        raise HTTPException(409, f"campaign '{campaign.id}' is archived; it cannot start new runs")
    await get_tenant_config(tenant, pool)  # the run pins it; without one it could not plan
    cid, spec = campaign.id, campaign.spec
    run_id = str(uuid.uuid4())
    workflow_id = run_workflow_id(tenant, cid, run_id)
    trace.get_current_span().set_attributes({"pennant.tenant": tenant, "pennant.campaign": cid, "pennant.run": run_id})
    async with tenant_tx(pool, tenant) as conn:
        await run_store.insert_run(conn, tenant, run_id, cid, workflow_id, spec.send_at)
    try:
        await temporal.start_workflow(
            CampaignRunWorkflow.run,
            CampaignRunInput(tenant=tenant, campaign_id=cid, run_id=run_id, send_at=spec.send_at),
            id=workflow_id,
            task_queue=WORKFLOW_QUEUE,
            search_attributes=campaign_search_attributes(tenant, cid),
            static_summary=f"{spec.name} · {tenant}",
            static_details=f"campaign {cid}, run {run_id}, channels {', '.join(spec.channels)}",
        )
    except RPCError as exc:
        async with tenant_tx(pool, tenant) as conn:
            await run_store.delete_run(conn, tenant, run_id)
        raise HTTPException(503, f"could not start the run on Temporal: {exc.message}") from exc
    return RunStarted(run_id=run_id, workflow_id=workflow_id, status=RunStatus.SCHEDULED)


@router.get("/runs", response_model=RunPage)
async def list_runs(
    tenant: TenantDep,
    pool: PoolDep,
    status: StoredStatus | None = None,
    campaign_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> RunPage:
    """Runs newest first, optionally of one status or campaign. Statuses are the runs' rows,
    which the workflows keep current."""
    before = run_store.NEWEST_RUN
    if cursor is not None:
        position = decode_cursor(cursor, {"created_at", "id"})
        try:
            before = (dt.datetime.fromisoformat(position["created_at"]), uuid.UUID(position["id"]))
        except (TypeError, ValueError):
            decode_cursor("", {"created_at", "id"})  # raises the cursor's 422
    async with tenant_tx(pool, tenant) as conn:
        rows = await run_store.list_runs(
            conn, tenant, status=status, campaign_id=campaign_id, before=before, limit=limit + 1
        )
    return RunPage(
        items=[RunSummary(**r.model_dump()) for r in rows[:limit]],
        next_cursor=next_cursor(rows, limit, lambda r: {"created_at": r.created_at.isoformat(), "id": r.id}),
    )


async def _live_progress(temporal: Client, workflow_id: str) -> tuple[RunStatus | None, RunProgress | None]:
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


async def _view(tenant: str, run: RunRecord, pool: PoolDep, temporal: Client) -> Run:
    """The run as GET answers it: live status and counts from its workflow while it runs, else
    from its row and the ledger."""
    status = run.status
    progress: RunProgress | None = None
    if not run.finished:
        ended, progress = await _live_progress(temporal, run.workflow_id)
        if ended is not None:
            status = ended
        elif progress is not None and progress.status not in TERMINAL_STATUSES:
            status = progress.status
        else:
            progress = None  # finishing right now: its row is about to say so, the ledger is complete
    if progress is not None:
        counts = RunCounts.of(progress.counts, progress.planned if progress.planned is not None else run.planned)
    else:
        async with tenant_tx(pool, tenant) as conn:
            counts = RunCounts.of(await run_store.ledger_counts(conn, tenant, run.id), run.planned)
    async with tenant_tx(pool, tenant) as conn:
        experiment = await experiment_store.get(conn, tenant, run.id)
    return Run(
        **run.model_dump(exclude={"status"}),
        status=status,
        counts=counts,
        counts_source="workflow" if progress is not None else "ledger",
        batches_total=progress.batches_total if progress is not None else None,
        batches_done=progress.batches_done if progress is not None else None,
        experiment=experiment,
    )


@router.get("/runs/{run_id}", response_model=Run)
async def get_run(tenant: TenantDep, run: RunDep, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Status and counts: from the workflow's progress query while the run is live, from the
    ledger once it has finished (or when the workflow cannot answer)."""
    return await _view(tenant, run, pool, temporal)


@router.get("/runs/{run_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    tenant: TenantDep,
    run: RunDep,
    pool: PoolDep,
    status: Literal["sent", "failed", "skipped"] | None = None,
    reason: str | None = None,
    channel: ChannelName | None = None,
    variant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> DeliveryPage:
    """The run's ledger in (customer, channel) order, one page at a time."""
    after = run_store.FIRST_DELIVERY
    if cursor is not None:
        position = decode_cursor(cursor, {"customer_id", "channel"})
        if not isinstance(position["customer_id"], int) or not isinstance(position["channel"], str):
            decode_cursor("", {"customer_id", "channel"})  # raises the cursor's 422
        after = (position["customer_id"], position["channel"])
    async with tenant_tx(pool, tenant) as conn:
        rows = await run_store.list_deliveries(
            conn, tenant, run.id, after=after, status=status, reason=reason, channel=channel, variant=variant,
            limit=limit + 1,
        )  # fmt: skip
    return DeliveryPage(
        items=[Delivery(**r.model_dump()) for r in rows[:limit]],
        next_cursor=next_cursor(rows, limit, lambda r: {"customer_id": r.customer_id, "channel": r.channel}),
    )


async def _control(tenant: str, run: RunRecord, action: str, pool: PoolDep, temporal: Client, arg: Any = None) -> Run:
    if run.finished:
        raise HTTPException(409, f"cannot {action} a run that is {run.status}")
    update = {
        "pause": CampaignRunWorkflow.pause,
        "resume": CampaignRunWorkflow.resume,
        "cancel": CampaignRunWorkflow.cancel,
        "reschedule": CampaignRunWorkflow.reschedule,
        "pick-winner": CampaignRunWorkflow.pick_winner,
        "extend-test": CampaignRunWorkflow.extend_test,
    }[action]
    args = [] if arg is None else [arg]
    handle = temporal.get_workflow_handle(run.workflow_id)
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
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            pass  # accepted: it carries on in the workflow, and GET shows where it stands
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type in (RUN_STATE_CONFLICT, EXPERIMENT_CONFLICT):
            raise HTTPException(409, cause.message) from exc
        if isinstance(cause, ApplicationError) and cause.type == UNKNOWN_VARIANT:
            raise HTTPException(422, cause.message) from exc
        # Accepted, then failed inside the workflow: the run's state is the answer, not a 5xx.
        raise HTTPException(409, f"could not {action} the run: {cause or exc}") from exc
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise HTTPException(503, f"could not {action} the run on Temporal: {exc.message}") from exc
        # The workflow has ended: between reading the row and the update, or from outside
        # (terminated in the Temporal UI), which get_run reports as the run's status.
        status = (await _reread(tenant, run, pool, temporal)).status
        raise HTTPException(409, f"cannot {action} a run that is {status}") from exc
    return await _reread(tenant, run, pool, temporal)


async def _reread(tenant: str, run: RunRecord, pool: PoolDep, temporal: Client) -> Run:
    """The run as GET answers it now, after a control call changed it."""
    async with tenant_tx(pool, tenant) as conn:
        current = await run_store.get_run(conn, tenant, run.id)
    return await _view(tenant, current or run, pool, temporal)


@router.post("/runs/{run_id}:pause", response_model=Run)
async def pause_run(tenant: TenantDep, run: RunDep, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Stop sending within about a second (running batches wait between chunks). 409 unless the
    run is scheduled or running."""
    return await _control(tenant, run, "pause", pool, temporal)


@router.post("/runs/{run_id}:resume", response_model=Run)
async def resume_run(tenant: TenantDep, run: RunDep, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Carry on a paused run. 409 unless the run is paused."""
    return await _control(tenant, run, "resume", pool, temporal)


@router.post("/runs/{run_id}:cancel", response_model=Run)
async def cancel_run(tenant: TenantDep, run: RunDep, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Start no new batch and stop the running ones within about a second (what they sent stays
    in the ledger), record every recipient never attempted as skipped (reason `cancelled`);
    the run ends `cancelled`. Works while it waits for its send time too. 409 once finished."""
    return await _control(tenant, run, "cancel", pool, temporal)


@router.post("/runs/{run_id}:reschedule", response_model=Run)
async def reschedule_run(
    tenant: TenantDep, run: RunDep, change: RescheduleInput, pool: PoolDep, temporal: TemporalDep
) -> Run:
    """Move the send time of a run still waiting for it; a time in the past sends now.
    409 once the run has started delivering."""
    return await _control(tenant, run, "reschedule", pool, temporal, change)


@router.post("/runs/{run_id}:pick-winner", response_model=Run)
async def pick_winner(
    tenant: TenantDep, run: RunDep, pick: PickWinnerInput, pool: PoolDep, temporal: TemporalDep
) -> Run:
    """Decide a winner test now, for `variant`: the decision (with the statistics so far) is
    recorded and the rest of the audience gets that variant. 409 unless the run's test is
    waiting for its decision; 422 for a variant the run does not test."""
    return await _control(tenant, run, "pick-winner", pool, temporal, pick)


@router.post("/runs/{run_id}:extend-test", response_model=Run)
async def extend_test(
    tenant: TenantDep, run: RunDep, change: ExtendTestInput, pool: PoolDep, temporal: TemporalDep
) -> Run:
    """Decide a winner test later: `{"by": "2h"}` (or seconds) moves its decision time that much
    further out. 409 unless the run's test is waiting for its decision."""
    return await _control(tenant, run, "extend-test", pool, temporal, change)
