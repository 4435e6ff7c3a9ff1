"""Recurring campaigns, as Temporal Schedules: create or change, read, pause, resume, delete.

Each occurrence is a normal run (see workflows/scheduled_run.py); a still-running occurrence
makes the schedule skip the next one (overlap policy skip).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import temporalio.converter
from fastapi import APIRouter, Depends, HTTPException, Response
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Schedule,
    ScheduleAction,
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

from api.deps import CampaignDep, TemporalDep, TenantDep
from api.schemas import ScheduleInfo
from core.campaigns.schedules import RecurrenceSpec, ScheduledRunInput
from core.infra.temporal import WORKFLOW_QUEUE, campaign_search_attributes, schedule_id, scheduled_workflow_id
from workflows.scheduled_run import ScheduledCampaignWorkflow

CRON_MEMO = "pennant_cron"

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns/{campaign_id}/schedule", tags=["schedules"])


def _schedule(tenant: str, campaign_id: str, name: str, spec: RecurrenceSpec) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledCampaignWorkflow.run,
            ScheduledRunInput(tenant=tenant, campaign_id=campaign_id),
            id=scheduled_workflow_id(tenant, campaign_id),
            task_queue=WORKFLOW_QUEUE,
            typed_search_attributes=campaign_search_attributes(tenant, campaign_id),
            static_summary=f"{name} (recurring) · {tenant}",
            # Temporal keeps a cron expression only as the calendar it compiles to; the memo
            # keeps what the marketer wrote, so reading the schedule answers it back.
            memo={CRON_MEMO: spec.cron} if spec.cron else None,
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


def _cron_from_memo(action: ScheduleAction) -> list[str]:
    memo = action.memo if isinstance(action, ScheduleActionStartWorkflow) else None
    raw = memo.get(CRON_MEMO) if memo else None
    if isinstance(raw, Payload):
        return [temporalio.converter.default().payload_converter.from_payload(raw, str)]
    return [raw] if isinstance(raw, str) else []


async def _describe(handle: ScheduleHandle, campaign_id: str) -> ScheduleInfo:
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, f"campaign '{campaign_id}' has no schedule") from None
        raise
    spec = desc.schedule.spec
    return ScheduleInfo(
        schedule_id=desc.id,
        cron=list(spec.cron_expressions) or _cron_from_memo(desc.schedule.action),
        interval_seconds=[int(i.every.total_seconds()) for i in spec.intervals],
        time_zone=spec.time_zone_name or "UTC",
        paused=desc.schedule.state.paused,
        next_runs=[t.isoformat() for t in desc.info.next_action_times[:5]],
        occurrences=desc.info.num_actions,
        skipped_overlapping=desc.info.num_actions_skipped_overlap,
    )


@router.put("", response_model=ScheduleInfo, status_code=200, responses={201: {"model": ScheduleInfo}})
async def put_schedule(
    tenant: TenantDep, campaign: CampaignDep, spec: RecurrenceSpec, temporal: TemporalDep, response: Response
) -> ScheduleInfo:
    """Make the campaign recurring, or change its recurrence (201 when the schedule is new)."""
    if not campaign.startable:
        raise HTTPException(409, f"campaign '{campaign.id}' is archived")
    sid = schedule_id(tenant, campaign.id)
    schedule = _schedule(tenant, campaign.id, campaign.spec.name, spec)
    try:
        handle = await temporal.create_schedule(
            sid,
            schedule,
            search_attributes=campaign_search_attributes(tenant, campaign.id),
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
    return await _describe(handle, campaign.id)


async def existing_schedule(tenant: TenantDep, campaign: CampaignDep, temporal: TemporalDep) -> ScheduleHandle:
    """The campaign's schedule; 404 when it has none."""
    handle = temporal.get_schedule_handle(schedule_id(tenant, campaign.id))
    await _describe(handle, campaign.id)
    return handle


ScheduleDep = Annotated[ScheduleHandle, Depends(existing_schedule)]


@router.get("", response_model=ScheduleInfo)
async def get_schedule(handle: ScheduleDep, campaign: CampaignDep) -> ScheduleInfo:
    """The campaign's schedule: spec, state and next occurrences."""
    return await _describe(handle, campaign.id)


@router.post(":pause", response_model=ScheduleInfo)
async def pause_schedule(handle: ScheduleDep, campaign: CampaignDep) -> ScheduleInfo:
    """Stop starting occurrences until resumed."""
    await handle.pause(note="paused through the Pennant API")
    return await _describe(handle, campaign.id)


@router.post(":resume", response_model=ScheduleInfo)
async def resume_schedule(handle: ScheduleDep, campaign: CampaignDep) -> ScheduleInfo:
    """Start occurrences again."""
    await handle.unpause(note="resumed through the Pennant API")
    return await _describe(handle, campaign.id)


@router.delete("", status_code=204)
async def delete_schedule(handle: ScheduleDep) -> None:
    """Remove the schedule; occurrences already started carry on."""
    await handle.delete()
