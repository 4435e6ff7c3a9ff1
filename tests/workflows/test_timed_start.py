"""A run with a send time waits on a durable timer (time-skipping server), then delivers."""

from __future__ import annotations

import datetime as dt

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from core.campaigns.spec import CampaignSpec
from core.infra.settings import Settings
from core.runs.models import RunProgress
from tests.helpers.runs import direct_run
from tests.helpers.tenants import store_tenant
from tests.helpers.waiting import until
from workflows.campaign_run import CampaignRunWorkflow


async def test_send_at_waits_for_a_durable_timer_then_delivers(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    # Written straight to the database: the API talks to the dev server, not the time-skipping one.
    slug = await store_tenant(pool, "timed-", customers=30)
    start = await time_skipping_env.get_current_time()
    send_at = start + dt.timedelta(days=2, hours=3)
    spec = CampaignSpec(
        name="Timed",
        channels=["email"],
        variants=[{"key": "A", "template": "weekly_deals"}],
        send_at=send_at,
    )
    async with direct_run(time_skipping_env, pool, settings, slug, spec) as (run_id, handle):
        with time_skipping_env.auto_time_skipping_disabled():
            progress = await handle.query(CampaignRunWorkflow.progress)
            assert progress.status == "scheduled"
            assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE tenant_id = $1", slug) == 0
        result: RunProgress = await handle.result()
        assert result.status == "completed"
        assert result.planned == 30
        assert result.counts.sent + result.counts.skipped == 30

    timers = [
        e.timer_started_event_attributes
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert len(timers) == 1
    fired_after = timers[0].start_to_fire_timeout.ToTimedelta()
    assert abs(fired_after - (send_at - start)) < dt.timedelta(seconds=5)
    assert await time_skipping_env.get_current_time() >= send_at
    assert (
        await pool.fetchval("SELECT status FROM runs WHERE tenant_id = $1 AND id = $2::uuid", slug, run_id)
        == "completed"
    )


async def test_a_waiting_run_can_be_rescheduled_earlier_and_then_refuses_once_delivering(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    from core.runs.models import RescheduleInput

    slug = await store_tenant(pool, "resched-", customers=10)
    start = await time_skipping_env.get_current_time()
    spec = CampaignSpec(
        name="Rescheduled",
        channels=["email"],
        variants=[{"key": "A", "template": "weekly_deals"}],
        send_at=start + dt.timedelta(days=2),
    )
    async with direct_run(time_skipping_env, pool, settings, slug, spec) as (run_id, handle):
        earlier = start + dt.timedelta(days=1)
        with time_skipping_env.auto_time_skipping_disabled():

            async def timer_started() -> bool:
                history = await handle.fetch_history()
                return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)

            await until(timer_started, within=10, what="the run to wait on its first timer")
            moved = await handle.execute_update(CampaignRunWorkflow.reschedule, RescheduleInput(send_at=earlier))
            assert moved.status == "scheduled"
        result: RunProgress = await handle.result()
        assert result.status == "completed" and result.planned == 10
        events = (await handle.fetch_history()).events
        finished_at = events[-1].event_time.ToDatetime(tzinfo=dt.UTC)
        assert earlier <= finished_at < start + dt.timedelta(days=2), "it went at the new time, not the old one"
        timers = [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
        assert len(timers) == 2, "the reschedule restarted the timer"
        try:
            await handle.execute_update(CampaignRunWorkflow.reschedule, RescheduleInput(send_at=earlier))
        except WorkflowUpdateFailedError:
            pass
        except Exception as exc:  # a finished workflow refuses updates outright
            assert "completed" in str(exc) or "not found" in str(exc).lower(), exc
        else:
            raise AssertionError("a finished run must refuse a reschedule")
    assert await pool.fetchval("SELECT send_at FROM runs WHERE id = $1::uuid", run_id) == earlier
