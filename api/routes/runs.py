"""Runs: start a campaign run (a CampaignRunWorkflow; its work on the tenant's queue), list and watch
runs, page through their ledger, and pause, resume or cancel them."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query
from temporalio.client import Client

from api.deps import CampaignDep, PoolDep, RunDep, SettingsDep, TemporalDep, TenantDep
from api.run_pages import deliveries_page, runs_page
from api.schemas import DeliveryPage, Run, RunPage, RunStarted
from core.campaigns import service as campaign_service
from core.experiments.models import ExtendTestInput, PickWinnerInput
from core.runs import service as run_service
from core.runs.models import (
    STORED_STATUSES,
    RescheduleInput,
    RunStatus,
)
from core.runs.store import RunRecord
from core.tenants.config_schema import ChannelName

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["runs"])

if TYPE_CHECKING:
    StoredStatus = RunStatus
else:
    # Lists filter on what rows hold: `cancelling` is only ever reported live, never stored.
    StoredStatus = Literal[tuple(s.value for s in STORED_STATUSES)]


@router.post("/campaigns/{campaign_id}/runs", status_code=202, response_model=RunStarted)
async def start_run(
    tenant: TenantDep, campaign: CampaignDep, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep
) -> RunStarted:
    """Start a run of the campaign (its activities on the tenant's task queue); 409 when the campaign is archived,
    the tenant has no configuration yet, or (when the platform requires it) the sending domain misses a DNS record."""
    started = await campaign_service.start_run(pool, temporal, tenant, campaign, settings)
    return RunStarted(run_id=started.run_id, workflow_id=started.workflow_id, status=RunStatus.SCHEDULED)


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
    return await runs_page(pool, tenant, status=status, campaign_id=campaign_id, limit=limit, cursor=cursor)


@router.get("/runs/{run_id}", response_model=Run)
async def get_run(tenant: TenantDep, run: RunDep, pool: PoolDep, temporal: TemporalDep) -> Run:
    """Status and counts: from the workflow's progress query while the run is live, from the
    ledger once it has finished (or when the workflow cannot answer)."""
    return Run.of(await run_service.run_view(pool, temporal, tenant, run))


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
    return await deliveries_page(
        pool, tenant, run.id, limit=limit, cursor=cursor, status=status, reason=reason, channel=channel, variant=variant
    )


async def _control(
    tenant: str, run: RunRecord, action: run_service.Action, pool: PoolDep, temporal: Client, arg: Any = None
) -> Run:
    return Run.of(await run_service.control_run(pool, temporal, tenant, run, action, arg))


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
