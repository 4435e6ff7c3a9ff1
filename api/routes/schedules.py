"""Recurring campaigns, as Temporal Schedules: create or change, read, pause, resume, delete.

Each occurrence is a normal run (see workflows/scheduled_run.py); a still-running occurrence
makes the schedule skip the next one (overlap policy skip).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from temporalio.client import ScheduleHandle

from api.deps import CampaignDep, TemporalDep, TenantDep
from api.schemas import ScheduleInfo
from core.campaigns import service
from core.campaigns.schedules import RecurrenceSpec

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns/{campaign_id}/schedule", tags=["schedules"])


@router.put("", response_model=ScheduleInfo, status_code=200, responses={201: {"model": ScheduleInfo}})
async def put_schedule(
    tenant: TenantDep, campaign: CampaignDep, spec: RecurrenceSpec, temporal: TemporalDep, response: Response
) -> ScheduleInfo:
    """Make the campaign recurring, or change its recurrence (201 when the schedule is new)."""
    info, created = await service.put_schedule(temporal, tenant, campaign, spec)
    if created:
        response.status_code = 201
    return info


async def existing_schedule(tenant: TenantDep, campaign: CampaignDep, temporal: TemporalDep) -> ScheduleHandle:
    """The campaign's schedule; 404 when it has none."""
    return await service.existing_schedule(temporal, tenant, campaign.id)


ScheduleDep = Annotated[ScheduleHandle, Depends(existing_schedule)]


@router.get("", response_model=ScheduleInfo)
async def get_schedule(handle: ScheduleDep, campaign: CampaignDep) -> ScheduleInfo:
    """The campaign's schedule: spec, state and next occurrences."""
    return await service.describe_schedule(handle, campaign.id)


@router.post(":pause", response_model=ScheduleInfo)
async def pause_schedule(handle: ScheduleDep, campaign: CampaignDep) -> ScheduleInfo:
    """Stop starting occurrences until resumed."""
    await handle.pause(note="paused through the Pennant API")
    return await service.describe_schedule(handle, campaign.id)


@router.post(":resume", response_model=ScheduleInfo)
async def resume_schedule(handle: ScheduleDep, campaign: CampaignDep) -> ScheduleInfo:
    """Start occurrences again."""
    await handle.unpause(note="resumed through the Pennant API")
    return await service.describe_schedule(handle, campaign.id)


@router.delete("", status_code=204)
async def delete_schedule(handle: ScheduleDep) -> None:
    """Remove the schedule; occurrences already started carry on."""
    await handle.delete()
