"""Moving to the shared workflow queue: runs and schedules made before it, with their workflows
on the tenant's own task queue, still run (dev server)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
)

from core.campaigns.schedules import ScheduledRunInput
from core.infra.db import tenant_tx
from core.infra.temporal import (
    WORKFLOW_QUEUE,
    campaign_search_attributes,
    run_workflow_id,
    schedule_id,
    scheduled_workflow_id,
    task_queue_for,
)
from core.runs.models import CampaignRunInput
from core.runs.store import insert_run
from core.tenants.config_schema import Policies
from tests.helpers.runs import assert_each_recipient_once, create_campaign, wait_for_run
from tests.helpers.tenants import MakeTenant
from tests.helpers.waiting import until
from workers.queue_upgrade import move_schedules
from workers.tenant_workers import TenantWorkers
from workflows.campaign_run import CampaignRunWorkflow
from workflows.scheduled_run import ScheduledCampaignWorkflow

RECIPIENTS = 20


async def test_a_run_started_on_the_tenants_own_queue_is_served_there_to_the_end(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client, workers: TenantWorkers
) -> None:
    tenant = await make_tenant(customers=RECIPIENTS, policies=Policies())
    assert tenant.slug not in workers.own_queue_workflows
    campaign_id = await create_campaign(tenant)
    run_id = str(uuid.uuid4())
    workflow_id = run_workflow_id(tenant.slug, campaign_id, run_id)
    async with tenant_tx(pool, tenant.slug) as conn:
        await insert_run(conn, tenant.slug, run_id, campaign_id, workflow_id, None)
    # As the API started runs before the shared queue: the workflow on the tenant's queue.
    handle = await temporal_client.start_workflow(
        CampaignRunWorkflow.run,
        CampaignRunInput(tenant=tenant.slug, campaign_id=campaign_id, run_id=run_id),
        id=workflow_id,
        task_queue=task_queue_for(tenant.slug),
        search_attributes=campaign_search_attributes(tenant.slug, campaign_id),
    )

    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed", run
    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == RECIPIENTS
    assert (await handle.describe()).task_queue == task_queue_for(tenant.slug)

    async def activities_only_again() -> bool:
        return tenant.slug not in workers.own_queue_workflows and tenant.slug in workers.tenants

    await until(activities_only_again, within=30, what="the tenant's queue to be served for activities only again")


async def test_a_schedule_made_on_the_tenants_queue_is_moved_and_its_occurrences_run(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=RECIPIENTS, policies=Policies())
    campaign_id = await create_campaign(tenant)
    old = await temporal_client.create_schedule(
        schedule_id(tenant.slug, campaign_id),
        Schedule(
            action=ScheduleActionStartWorkflow(
                ScheduledCampaignWorkflow.run,
                ScheduledRunInput(tenant=tenant.slug, campaign_id=campaign_id),
                id=scheduled_workflow_id(tenant.slug, campaign_id),
                task_queue=task_queue_for(tenant.slug),
                typed_search_attributes=campaign_search_attributes(tenant.slug, campaign_id),
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
            state=ScheduleState(paused=True),
        ),
    )
    try:
        assert await move_schedules(temporal_client) >= 1
        action = (await old.describe()).schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow) and action.task_queue == WORKFLOW_QUEUE
        # Moving again leaves it as it is.
        await move_schedules(temporal_client)
        described = await old.describe()
        assert isinstance(described.schedule.action, ScheduleActionStartWorkflow)
        assert described.schedule.action.task_queue == WORKFLOW_QUEUE and described.schedule.state.paused

        await old.trigger()

        async def one_run_completed() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM runs WHERE campaign_id = $1::uuid AND status = 'completed'", campaign_id
                )
            )

        await until(one_run_completed, within=30, what="the moved schedule's occurrence to complete")
        run_id = str(await pool.fetchval("SELECT id FROM runs WHERE campaign_id = $1::uuid", campaign_id))
        assert await assert_each_recipient_once(pool, tenant.slug, run_id) == RECIPIENTS
    finally:
        await old.delete()


async def test_the_api_starts_runs_and_schedules_on_the_shared_workflow_queue(
    make_tenant: MakeTenant, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=5, policies=Policies())
    campaign_id = await create_campaign(tenant)
    started = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    assert started.status_code == 202, started.text
    run = await wait_for_run(tenant, started.json()["run_id"])
    assert run["status"] == "completed", run
    described = await temporal_client.get_workflow_handle(started.json()["workflow_id"]).describe()
    assert described.task_queue == WORKFLOW_QUEUE

    path = tenant.url(f"/campaigns/{campaign_id}/schedule")
    assert (await tenant.http.put(path, json={"interval_seconds": 3600, "paused": True})).status_code == 201
    try:
        action = (
            await temporal_client.get_schedule_handle(schedule_id(tenant.slug, campaign_id)).describe()
        ).schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow) and action.task_queue == WORKFLOW_QUEUE
    finally:
        assert (await tenant.http.delete(path)).status_code == 204


def _threads_named(prefix: str) -> int:
    count = 0
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            count += (task / "comm").read_text().startswith(prefix)
    return count


async def test_served_tenants_share_the_one_workflow_worker_and_its_thread(
    make_tenant: MakeTenant, workers: TenantWorkers
) -> None:
    # The SDK core starts a `workflow-processing` thread per Worker that has workflows: one for
    # the shared queue (plus one per tenant still running workflows on its own queue), none for
    # a tenant's activity Worker. Four more tenants served add none.
    await make_tenant(customers=0)
    before = _threads_named("workflow-proces") - len(workers.own_queue_workflows)
    made = [await make_tenant(customers=0) for _ in range(4)]
    assert {t.slug for t in made} <= set(workers.tenants)
    assert _threads_named("workflow-proces") - len(workers.own_queue_workflows) <= before
