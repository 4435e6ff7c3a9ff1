"""Records the histories tests/workflows/test_replay.py replays: each representative run is
driven through the real stack (API, workers, PostgreSQL, SMTP sink; the dev server, or the
time-skipping server for long timers) and its history written to tests/workflows/histories/.

Skipped unless PENNANT_RECORD_HISTORIES=1; see tests/workflows/histories/README.md for when
to re-record (never to make a nondeterminism go away):

    PENNANT_RECORD_HISTORIES=1 .venv/bin/python -m pytest tests/workflows/test_record_histories.py
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from activities.names import DELIVER_BATCH
from core.campaigns.spec import CampaignSpec
from core.configs.checks import load_config_file
from core.infra.settings import Settings
from core.infra.temporal import schedule_id
from core.runs.models import RescheduleInput, RunProgress
from core.tenants.config_schema import Execution, Policies
from core.tenants.config_store import save_config
from devstack.demo_data import seed_customers
from tests.helpers.histories import HISTORIES, SCENARIOS, write_history
from tests.helpers.runs import EMAIL_CAMPAIGN, create_campaign, direct_run
from tests.helpers.stack import TENANT_CONFIGS
from tests.helpers.tenants import Tenant
from tests.helpers.waiting import until
from workflows.campaign_run import HISTORY_EVENT_LIMIT, CampaignRunWorkflow

pytestmark = pytest.mark.skipif(
    os.environ.get("PENNANT_RECORD_HISTORIES") != "1", reason="records histories only when PENNANT_RECORD_HISTORIES=1"
)

EMAIL = {"channels": EMAIL_CAMPAIGN["channels"], "variants": EMAIL_CAMPAIGN["variants"]}
# Small batches, one at a time: slow enough to pause mid-run.
SLOW = Execution(batch_size=20, max_concurrent_batches=1, activities_per_second=8)
ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Tokyo"]


# -- writing ---------------------------------------------------------------------------------


def _clear(scenario: str) -> None:
    # A re-recording may make fewer executions or files than the last one.
    for old in HISTORIES.glob(f"{scenario}.*json"):
        old.unlink()


async def _record(scenario: str, client: Client, workflow_id: str) -> int:
    """Write the history of the workflow's latest execution and every one it continued from
    (oldest first, as <scenario>.1.json, .2.json …); returns how many executions."""
    assert scenario in SCENARIOS, scenario
    _clear(scenario)
    chain = [await client.get_workflow_handle(workflow_id).fetch_history()]
    while previous := chain[0].events[0].workflow_execution_started_event_attributes.continued_execution_run_id:
        chain.insert(0, await client.get_workflow_handle(workflow_id, run_id=previous).fetch_history())
    if len(chain) == 1:
        write_history(scenario, workflow_id, chain[0])
    else:
        for n, history in enumerate(chain, 1):
            write_history(f"{scenario}.{n}", workflow_id, history)
    return len(chain)


def _event_types(history: WorkflowHistory) -> list[EventType.ValueType]:
    return [e.event_type for e in history.events]


# -- the time-skipping server: long timers, real activities ------------------------------------


async def _direct_tenant(pool: asyncpg.Pool, prefix: str, customers: int, **overrides: Any) -> str:
    """A FreshMart-shaped tenant written straight to the database (the API talks to the dev
    server, not to the time-skipping one)."""
    config = load_config_file(TENANT_CONFIGS / "freshmart.yaml")
    slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await save_config(pool, config.model_copy(update={"slug": slug, **overrides}), "test")
    await seed_customers(pool, slug, customers)
    return slug


async def test_record_send_at_timer(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    slug = await _direct_tenant(pool, "rec-timer", 20)
    send_at = await time_skipping_env.get_current_time() + dt.timedelta(days=1, hours=2)
    spec = CampaignSpec(name="Send at", send_at=send_at, **EMAIL)
    async with direct_run(time_skipping_env, pool, settings, slug, spec) as (_, handle):
        assert (await handle.result()).status == "completed"
    assert EventType.EVENT_TYPE_TIMER_FIRED in _event_types(await handle.fetch_history())
    await _record("send_at_timer", time_skipping_env.client, handle.id)


async def test_record_rescheduled(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    slug = await _direct_tenant(pool, "rec-resched", 10)
    start = await time_skipping_env.get_current_time()
    spec = CampaignSpec(name="Rescheduled", send_at=start + dt.timedelta(days=2), **EMAIL)
    async with direct_run(time_skipping_env, pool, settings, slug, spec) as (_, handle):
        with time_skipping_env.auto_time_skipping_disabled():

            async def waiting() -> bool:
                return EventType.EVENT_TYPE_TIMER_STARTED in _event_types(await handle.fetch_history())

            await until(waiting, what="the send-time timer")
            moved = await handle.execute_update(
                CampaignRunWorkflow.reschedule, RescheduleInput(send_at=start + dt.timedelta(days=1))
            )
            assert moved.status == "scheduled"
        assert (await handle.result()).status == "completed"
    await _record("rescheduled", time_skipping_env.client, handle.id)


async def test_record_local_time_waves(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    slug = await _direct_tenant(pool, "rec-waves", 40, policies=Policies(consent_required={"email": True}))
    # Ten customers in each of four zones, all reachable by email: one wave per zone.
    await pool.execute(
        """UPDATE customers SET time_zone = ($2::text[])[1 + (id - 1) % 4], consent_email = true, locale = 'en-US'
           WHERE tenant_id = $1""",
        slug,
        ZONES,
    )
    spec = CampaignSpec(name="Ten o'clock local", local_send_time=dt.time(10, 0), **EMAIL)
    async with direct_run(time_skipping_env, pool, settings, slug, spec) as (_, handle):
        result = await handle.result()
    assert result.status == "completed" and result.planned == 40
    timers = _event_types(await handle.fetch_history()).count(EventType.EVENT_TYPE_TIMER_FIRED)
    assert timers >= 3, f"expected a timer per later wave, got {timers}"
    await _record("local_time_waves", time_skipping_env.client, handle.id)


# -- the dev server, through the API and the session's workers ---------------------------------


async def _start(tenant: Tenant, temporal_client: Client, campaign_id: str) -> tuple[str, WorkflowHandle[Any, Any]]:
    response = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    assert response.status_code == 202, response.text
    body = response.json()
    return str(body["run_id"]), temporal_client.get_workflow_handle_for(CampaignRunWorkflow.run, body["workflow_id"])


async def _pending_batches(handle: WorkflowHandle[Any, Any]) -> int:
    """deliver_batch activities started and not yet finished."""
    pending = (await handle.describe()).raw_description.pending_activities
    return sum(
        p.activity_type.name == DELIVER_BATCH and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for p in pending
    )


async def test_record_pause_resume(make_tenant: Any, temporal_client: Client) -> None:
    tenant = await make_tenant(customers=100, execution=SLOW)
    run_id, handle = await _start(tenant, temporal_client, await create_campaign(tenant))

    async def delivering() -> bool:
        return bool((await handle.query(CampaignRunWorkflow.progress)).batches_done >= 1)

    await until(delivering, what="the first batch")
    paused = await tenant.http.post(tenant.url(f"/runs/{run_id}:pause"))
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text

    async def settled() -> bool:
        return await _pending_batches(handle) == 0

    await until(settled, what="the batch in flight to finish")
    resumed = await tenant.http.post(tenant.url(f"/runs/{run_id}:resume"))
    assert resumed.status_code == 200 and resumed.json()["status"] == "running", resumed.text
    result = await handle.result()
    assert result.status == "completed" and result.planned == 100
    await _record("pause_resume", temporal_client, handle.id)


async def test_record_cancel_in_flight(make_tenant: Any, temporal_client: Client) -> None:
    # Email at ten a second in batches of twenty: each batch is in flight for a second or two.
    base = load_config_file(TENANT_CONFIGS / "freshmart.yaml")
    assert base.channels.email is not None
    channels = base.channels.model_copy(
        update={"email": base.channels.email.model_copy(update={"rate_limit_per_second": 10})}
    )
    tenant = await make_tenant(
        customers=200,
        channels=channels,
        execution=Execution(batch_size=20, max_concurrent_batches=2, activities_per_second=None),
    )
    run_id, handle = await _start(tenant, temporal_client, await create_campaign(tenant))

    async def in_flight() -> bool:
        done = (await handle.query(CampaignRunWorkflow.progress)).batches_done
        return done >= 1 and await _pending_batches(handle) >= 1

    await until(in_flight, what="a batch in flight after the first one finished")
    cancelled = await tenant.http.post(tenant.url(f"/runs/{run_id}:cancel"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    result = await handle.result()
    assert result.status == "cancelled" and result.counts.skipped_by_reason.get("cancelled", 0) > 0

    # What makes this history worth keeping: the cancel was accepted while a batch was in
    # flight, and (since the cancel-in-flight-batches patch) stopped it. The older history,
    # cancel_in_flight.json, shows the pre-patch path where the batch ran to its end; it is kept
    # so that runs started before the patch still replay, and can no longer be recorded.
    events = _event_types(await handle.fetch_history())
    accepted = events.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    assert EventType.EVENT_TYPE_MARKER_RECORDED in events[accepted:], "the patch marker is missing"
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED in events[accepted:], "no batch was stopped"
    await _record("cancel_stops_batches", temporal_client, handle.id)


async def test_record_cancel_while_waiting(make_tenant: Any, temporal_client: Client) -> None:
    tenant = await make_tenant(customers=10)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)).isoformat()
    run_id, handle = await _start(tenant, temporal_client, await create_campaign(tenant, send_at=later))

    async def waiting() -> bool:
        return EventType.EVENT_TYPE_TIMER_STARTED in _event_types(await handle.fetch_history())

    await until(waiting, what="the send-time timer")
    # Paused and resumed while it waits, then cancelled: every control a waiting run takes.
    for action, status in (("pause", "paused"), ("resume", "scheduled"), ("cancel", "cancelled")):
        response = await tenant.http.post(tenant.url(f"/runs/{run_id}:{action}"))
        assert response.status_code == 200 and response.json()["status"] == status, (action, response.text)
    assert (await handle.result()).status == "cancelled"
    assert EventType.EVENT_TYPE_TIMER_CANCELED in _event_types(await handle.fetch_history())
    await _record("cancel_while_waiting", temporal_client, handle.id)


async def test_record_continue_as_new(make_tenant: Any, temporal_client: Client) -> None:
    # Two recipients a batch: 500 batches pass HISTORY_EVENT_LIMIT once, with a short second execution.
    tenant = await make_tenant(
        customers=1000, execution=Execution(batch_size=2, max_concurrent_batches=8, activities_per_second=None)
    )
    _, handle = await _start(tenant, temporal_client, await create_campaign(tenant))
    result = await handle.result()
    assert result.status == "completed" and result.planned == 1000
    assert result.execution >= 2, f"no continue-as-new below {HISTORY_EVENT_LIMIT} events"
    assert await _record("continue_as_new", temporal_client, handle.id) == result.execution


async def test_record_scheduled_occurrence(make_tenant: Any, temporal_client: Client) -> None:
    tenant = await make_tenant(customers=10)
    campaign_id = await create_campaign(tenant)
    path = tenant.url(f"/campaigns/{campaign_id}/schedule")
    created = await tenant.http.put(path, json={"interval_seconds": 2})
    assert created.status_code == 201, created.text
    schedule = temporal_client.get_schedule_handle(schedule_id(tenant.slug, campaign_id))
    try:

        async def occurred() -> bool:
            return bool((await schedule.describe()).info.recent_actions)

        await until(occurred, what="the first occurrence")
        action = (await schedule.describe()).info.recent_actions[0].action
        assert hasattr(action, "workflow_id") and hasattr(action, "first_execution_run_id")
        parent = temporal_client.get_workflow_handle(
            action.workflow_id, run_id=action.first_execution_run_id, result_type=RunProgress
        )
        assert (await parent.result()).status == "completed"
    finally:
        assert (await tenant.http.delete(path)).status_code == 204
    history = await parent.fetch_history()
    child_id = next(
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    )
    _clear("scheduled_occurrence")
    write_history("scheduled_occurrence", parent.id, history)
    write_history(
        "scheduled_occurrence.child", child_id, await temporal_client.get_workflow_handle(child_id).fetch_history()
    )


async def test_record_test_send(make_tenant: Any, temporal_client: Client) -> None:
    tenant = await make_tenant(customers=5)
    campaign_id = await create_campaign(tenant)
    sent = await tenant.http.post(
        tenant.url(f"/campaigns/{campaign_id}:test-send"), json={"emails": [f"qa-{tenant.slug}@example.com"]}
    )
    assert sent.status_code == 200, sent.text
    query = f'WorkflowType = "CampaignTestSendWorkflow" AND TenantId = "{tenant.slug}"'
    found: list[str] = []

    async def visible() -> bool:
        found[:] = [w.id async for w in temporal_client.list_workflows(query)]
        return bool(found)

    await until(visible, what="the test send in visibility")
    await _record("test_send", temporal_client, found[0])


async def test_record_failed_run(make_tenant: Any, pool: asyncpg.Pool, temporal_client: Client) -> None:
    tenant = await make_tenant(customers=40, execution=Execution(batch_size=10, max_concurrent_batches=2))
    campaign_id = await create_campaign(tenant)
    # A template the tenant does not have, behind the API's back: every batch fails for good.
    await pool.execute(
        """UPDATE campaigns SET definition = jsonb_set(definition, '{variants,0,template}', '"gone"')
           WHERE tenant_id = $1 AND id = $2::uuid""",
        tenant.slug,
        campaign_id,
    )
    _, handle = await _start(tenant, temporal_client, campaign_id)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "run failed: no email template 'gone'" in str(failed.value.cause)
    events = _event_types(await handle.fetch_history())
    assert events[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    await _record("failed_run", temporal_client, handle.id)
