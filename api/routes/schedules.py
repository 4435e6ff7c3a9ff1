"""Recurring campaigns, as Temporal Schedules: create or change, read, pause, resume, delete.

Each occurrence is a normal run (see workflows/scheduled_run.py); a still-running occurrence
makes the schedule skip the next one (overlap policy skip).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from api.deps import PoolDep, TemporalDep, TenantDep
from api.routes.campaigns import parse_campaign_id
from core.db import tenant_tx
from core.schedules import RecurrenceSpec, ScheduledRunInput
from core.temporal import campaign_search_attributes, schedule_id, scheduled_workflow_id, task_queue_for
from workflows.scheduled_run import ScheduledCampaignWorkflow

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns/{campaign_id}/schedule", tags=["schedules"])


def _schedule(tenant: str, campaign_id: str, name: str, spec: RecurrenceSpec) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledCampaignWorkflow.run,
            ScheduledRunInput(tenant=tenant, campaign_id=campaign_id),
            id=scheduled_workflow_id(tenant, campaign_id),
            task_queue=task_queue_for(tenant),
            typed_search_attributes=campaign_search_attributes(tenant, campaign_id),
            static_summary=f"{name} (recurring) · {tenant}",
        ),
        spec=ScheduleSpec(
            cron_expressions=[spec.cron] if spec.cron else [],
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=spec.interval_seconds))]
            if spec.interval_seconds
            else [],
            time_zone_name=spec.time_zone,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=spec.paused, note=spec.note or "set through the Pennant API"),
    )


async def _campaign_name(pool: PoolDep, tenant: str, campaign_id: str) -> str:
    cid = parse_campaign_id(campaign_id)
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow("SELECT name, status FROM campaigns WHERE tenant_id = $1 AND id = $2", tenant, cid)
    if row is None:
        raise HTTPException(404, f"campaign '{campaign_id}' not found")
    if row["status"] == "archived":
        raise HTTPException(409, f"campaign '{campaign_id}' is archived")
    return str(row["name"])


async def _describe(handle: ScheduleHandle, campaign_id: str) -> dict[str, Any]:
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, f"campaign '{campaign_id}' has no schedule") from None
        raise
    spec = desc.schedule.spec
    return {
        "schedule_id": desc.id,
        "cron": list(spec.cron_expressions),
        "interval_seconds": [int(i.every.total_seconds()) for i in spec.intervals],
        "time_zone": spec.time_zone_name or "UTC",
        "paused": desc.schedule.state.paused,
        "next_runs": [t.isoformat() for t in desc.info.next_action_times[:5]],
        "occurrences": desc.info.num_actions,
        "skipped_overlapping": desc.info.num_actions_skipped_overlap,
    }


@router.put("")
async def put_schedule(
    tenant: TenantDep, campaign_id: str, spec: RecurrenceSpec, pool: PoolDep, temporal: TemporalDep, response: Response
) -> dict[str, Any]:
    campaign_id = str(parse_campaign_id(campaign_id))
    name = await _campaign_name(pool, tenant, campaign_id)
    sid = schedule_id(tenant, campaign_id)
    schedule = _schedule(tenant, campaign_id, name, spec)
    try:
        handle = await temporal.create_schedule(
            sid,
            schedule,
            search_attributes=campaign_search_attributes(tenant, campaign_id),
        )
        response.status_code = 201
    except ScheduleAlreadyRunningError:
        handle = temporal.get_schedule_handle(sid)

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(replace)
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise HTTPException(422, f"schedule rejected by Temporal: {exc.message}") from None
        raise
    return await _describe(handle, campaign_id)


async def existing_schedule(tenant: TenantDep, campaign_id: str, temporal: TemporalDep) -> ScheduleHandle:
    """The campaign's schedule; 404 when it has none."""
    handle = temporal.get_schedule_handle(schedule_id(tenant, str(parse_campaign_id(campaign_id))))
    await _describe(handle, campaign_id)
    return handle


ScheduleDep = Annotated[ScheduleHandle, Depends(existing_schedule)]


@router.get("")
async def get_schedule(handle: ScheduleDep, campaign_id: str) -> dict[str, Any]:
    return await _describe(handle, campaign_id)


@router.post(":pause")
async def pause_schedule(handle: ScheduleDep, campaign_id: str) -> dict[str, Any]:
    await handle.pause(note="paused through the Pennant API")
    return await _describe(handle, campaign_id)


@router.post(":resume")
async def resume_schedule(handle: ScheduleDep, campaign_id: str) -> dict[str, Any]:
    await handle.unpause(note="resumed through the Pennant API")
    return await _describe(handle, campaign_id)


@router.delete("", status_code=204)
async def delete_schedule(handle: ScheduleDep) -> None:
    await handle.delete()
