"""The run workflow's own logic in isolation: its update validators and the `cancelling` state,
on the time-skipping server with stubbed activities. Stubs are right only here: what is under
test is the workflow's decisions, not the activities (the rest of the suite runs those for
real). The stubs take and return the same models as the real activities and are registered
under the same names (activities/names.py), so they keep working however the workflow calls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.names import (
    BEGIN_RUN,
    DELIVER_BATCH,
    FALLBACK_DUE,
    LIST_BATCHES,
    LOAD_CONFIG,
    MARK_RUN,
    PLAN_AUDIENCE,
    PREPARE_EXPERIMENT,
    SKIP_REMAINING,
)
from core.experiments.models import ExperimentPlan, PrepareExperimentInput
from core.infra.temporal import task_queue_for
from core.runs import models as runs
from core.runs.models import FallbackDue
from workflows.campaign_run import RUN_STATE_CONFLICT, CampaignRunWorkflow

BATCH = 10
STARTS = [1, 11, 21]  # three batches of ten recipients
PLANNED = BATCH * len(STARTS)
WITHIN = 30.0  # seconds a test waits for the workflow to reach a state


async def _held(gate: asyncio.Event) -> None:
    """Block until the test opens `gate`, heartbeating so a cancel of the activity reaches it."""
    while not gate.is_set():
        activity.heartbeat()
        try:
            await asyncio.wait_for(gate.wait(), 0.1)
        except TimeoutError:
            pass


def _open() -> asyncio.Event:
    gate = asyncio.Event()
    gate.set()
    return gate


class StubActivities:
    """The run's activities, answering at once unless the test closes one of their gates."""

    def __init__(self) -> None:
        self.batch_gate = _open()  # deliver_batch waits on it
        self.skip_gate = _open()  # skip_remaining waits on it
        self.mark_gate = _open()  # mark_run waits on it when writing `hold_status`
        self.hold_status: str | None = None
        self.batch_started = asyncio.Event()
        self.batches = 0
        self.skips = 0
        self.marks: list[str] = []

    @activity.defn(name=LOAD_CONFIG)
    async def load_config(self, inp: runs.LoadConfigInput) -> runs.ConfigPin:
        """Pin version 1: batches of ten, one at a time."""
        return runs.ConfigPin(version=1, batch_size=BATCH, max_concurrent_batches=1)

    @activity.defn(name=MARK_RUN)
    async def mark_run(self, inp: runs.MarkRunInput) -> None:
        """Remember each status written; hold the write of `hold_status` until released."""
        self.marks.append(inp.status)
        if inp.status == self.hold_status:
            await _held(self.mark_gate)

    @activity.defn(name=PLAN_AUDIENCE)
    async def plan_audience(self, inp: runs.PlanAudienceInput) -> runs.AudiencePlan:
        """Thirty recipients in one wave that may go at once."""
        return runs.AudiencePlan(
            planned=PLANNED, batches=len(STARTS), waves=[runs.Wave(recipients=PLANNED, batches=len(STARTS))]
        )

    @activity.defn(name=PREPARE_EXPERIMENT)
    async def prepare_experiment(self, inp: PrepareExperimentInput) -> ExperimentPlan:
        """No experiment: one delivery phase."""
        return ExperimentPlan()

    @activity.defn(name=BEGIN_RUN)
    async def begin_run(self, inp: runs.BeginRunInput) -> runs.RunBegun:
        """The first steps of a run due now, in the order the real activity takes them."""
        pin = await self.load_config(runs.LoadConfigInput(tenant=inp.tenant))
        ids = {"tenant": inp.tenant, "run_id": inp.run_id}
        await self.mark_run(runs.MarkRunInput(**ids, status=runs.RunStatus.RUNNING, config_version=pin.version))
        plan = await self.plan_audience(
            runs.PlanAudienceInput(**ids, campaign_id=inp.campaign_id, config_version=1, batch_size=BATCH)
        )
        await self.mark_run(runs.MarkRunInput(**ids, status=runs.RunStatus.RUNNING, planned=plan.planned))
        experiment = await self.prepare_experiment(
            PrepareExperimentInput(**ids, campaign_id=inp.campaign_id, config_version=1)
        )
        return runs.RunBegun(pin=pin, plan=plan, experiment=experiment)

    @activity.defn(name=FALLBACK_DUE)
    async def fallback_due(self, inp: runs.PlanAudienceInput) -> FallbackDue:
        """No cross-channel fallback."""
        return FallbackDue()

    @activity.defn(name=LIST_BATCHES)
    async def list_batches(self, inp: runs.BatchPageInput) -> runs.BatchPage:
        """Every batch boundary in one page."""
        return runs.BatchPage(starts=STARTS, next_first_id=None)

    @activity.defn(name=DELIVER_BATCH)
    async def deliver_batch(self, inp: runs.DeliverBatchInput) -> runs.Counts:
        """Send a batch of ten once the batch gate is open."""
        self.batches += 1
        self.batch_started.set()
        await _held(self.batch_gate)
        return runs.Counts(sent=BATCH)

    @activity.defn(name=SKIP_REMAINING)
    async def skip_remaining(self, inp: runs.SkipRemainingInput) -> runs.Counts:
        """Record whoever is left as skipped once the skip gate is open."""
        self.skips += 1
        await _held(self.skip_gate)
        return runs.Counts(skipped=BATCH, skipped_by_reason={inp.reason: BATCH})

    def all(self) -> list[Any]:
        """Every stub, for the Worker."""
        return [
            self.load_config,
            self.begin_run,
            self.mark_run,
            self.plan_audience,
            self.prepare_experiment,
            self.fallback_due,
            self.list_batches,
            self.deliver_batch,
            self.skip_remaining,
        ]


class Run:
    """One run of the real workflow against the stubs, on a task queue of its own."""

    def __init__(self, env: WorkflowEnvironment, stubs: StubActivities, handle: WorkflowHandle[Any, runs.RunProgress]):
        self.env = env
        self.stubs = stubs
        self.handle = handle

    async def refused(self, update: Any, status: str, *args: Any, message: str | None = None) -> None:
        """The update is refused by its validator: RunStateConflict naming `status`."""
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await self.handle.execute_update(update, *args)
        cause = info.value.cause
        assert isinstance(cause, ApplicationError), cause
        assert cause.type == RUN_STATE_CONFLICT and cause.non_retryable, cause
        assert cause.details and cause.details[0] == status, (cause.details, status)
        expected = message or f"a run that is {status} "
        assert expected in cause.message, (expected, cause.message)

    async def accepted(self, update: Any, *args: Any) -> runs.RunProgress:
        """The update is accepted and completes; the progress it returns."""
        result: runs.RunProgress = await self.handle.execute_update(update, *args)
        return result

    async def refuses_every_control(self, status: str, reschedule: bool = True) -> None:
        """Cancel, pause, resume and (unless `reschedule` is False) a reschedule are refused naming `status`."""
        for update in (CampaignRunWorkflow.cancel, CampaignRunWorkflow.pause, CampaignRunWorkflow.resume):
            await self.refused(update, status)
        if reschedule:
            await self.refused(CampaignRunWorkflow.reschedule, status, await self.soon())

    async def soon(self) -> runs.RescheduleInput:
        """A reschedule to an hour from the server's now."""
        return runs.RescheduleInput(send_at=await self.env.get_current_time() + dt.timedelta(hours=1))

    async def marked(self, status: str) -> None:
        """Wait until the workflow has written `status` to the run's row."""
        async with asyncio.timeout(WITHIN):
            while status not in self.stubs.marks:
                await asyncio.sleep(0.02)


@pytest.fixture
async def start_run(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[Any]:
    """start_run(stubs, send_at=None) → a Run served by a worker with the stubs until the test ends."""
    workers = contextlib.AsyncExitStack()

    async def start(stubs: StubActivities, send_at: dt.datetime | None = None) -> Run:
        # Workflow and activities on one queue: the tenant's, where the run sends its activities.
        tenant = f"logic-{uuid.uuid4().hex[:8]}"
        queue = task_queue_for(tenant)
        await workers.enter_async_context(
            Worker(time_skipping_env.client, task_queue=queue, workflows=[CampaignRunWorkflow], activities=stubs.all())
        )
        handle = await time_skipping_env.client.start_workflow(
            CampaignRunWorkflow.run,
            runs.CampaignRunInput(
                tenant=tenant, campaign_id=str(uuid.uuid4()), run_id=str(uuid.uuid4()), send_at=send_at
            ),
            id=f"run-logic-{uuid.uuid4()}",
            task_queue=queue,
            # Status writes are local activities: while one is held open, the workflow task is
            # too, and an update gets in only when the SDK heartbeats that task, at 80% of this
            # timeout (8 s at the default 10 s).
            task_timeout=dt.timedelta(seconds=2),
        )
        return Run(time_skipping_env, stubs, handle)

    async with workers:
        yield start


async def test_a_waiting_run_pauses_and_resumes_only_from_the_right_status(
    start_run: Any, time_skipping_env: WorkflowEnvironment
) -> None:
    send_at = await time_skipping_env.get_current_time() + dt.timedelta(days=30)
    run = await start_run(StubActivities(), send_at=send_at)

    await run.refused(CampaignRunWorkflow.resume, "scheduled")
    assert (await run.accepted(CampaignRunWorkflow.pause)).status == "paused"
    await run.refused(CampaignRunWorkflow.pause, "paused")
    # A run paused before its send time has not started delivering: it may still be moved.
    later = send_at + dt.timedelta(days=1)
    assert (await run.accepted(CampaignRunWorkflow.reschedule, runs.RescheduleInput(send_at=later))).status == "paused"
    assert (await run.accepted(CampaignRunWorkflow.resume)).status == "scheduled"
    await run.refused(CampaignRunWorkflow.resume, "scheduled")

    cancelled = await run.accepted(CampaignRunWorkflow.cancel)
    assert cancelled.status == "cancelled" and cancelled.planned is None
    assert (await run.handle.result()).status == "cancelled"
    assert run.stubs.batches == 0 and run.stubs.skips == 0, "nobody was planned, so nobody is skipped"


async def test_a_delivering_run_refuses_a_reschedule_and_resumes_only_when_paused(start_run: Any) -> None:
    stubs = StubActivities()
    stubs.batch_gate.clear()
    run = await start_run(stubs)
    await asyncio.wait_for(stubs.batch_started.wait(), WITHIN)

    started_delivering = "cannot reschedule a run that has started delivering"
    soon = await run.soon()
    await run.refused(CampaignRunWorkflow.reschedule, "running", soon)
    await run.refused(CampaignRunWorkflow.resume, "running")
    assert (await run.accepted(CampaignRunWorkflow.pause)).status == "paused"
    # Paused is a status a waiting run may be moved in, but this one has started delivering.
    await run.refused(CampaignRunWorkflow.reschedule, "paused", soon, message=started_delivering)
    await run.refused(CampaignRunWorkflow.pause, "paused")
    assert (await run.accepted(CampaignRunWorkflow.resume)).status == "running"

    stubs.batch_gate.set()
    result = await run.handle.result()
    assert result.status == "completed" and result.counts.sent == PLANNED and stubs.batches == len(STARTS)


async def test_a_completed_run_refuses_every_control(start_run: Any) -> None:
    stubs = StubActivities()
    stubs.hold_status, stubs.mark_gate = "completed", asyncio.Event()
    run = await start_run(stubs)
    await run.marked("completed")  # the run is completed and still open, writing its row

    await run.refuses_every_control("completed")

    stubs.mark_gate.set()
    assert (await run.handle.result()).status == "completed"


async def test_a_cancel_while_a_batch_is_in_flight_is_cancelling_until_done(start_run: Any) -> None:
    stubs = StubActivities()
    stubs.batch_gate.clear()
    stubs.skip_gate.clear()
    run = await start_run(stubs)
    await asyncio.wait_for(stubs.batch_started.wait(), WITHIN)

    cancel = await run.handle.start_update(CampaignRunWorkflow.cancel, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    # Accepted, not finished: the batch in flight (or its cancellation) and the skipping are pending.
    await run.refuses_every_control("cancelling")

    stubs.batch_gate.set()
    async with asyncio.timeout(WITHIN):  # still cancelling while everyone left is being skipped
        while not stubs.skips:
            await asyncio.sleep(0.02)
    await run.refused(CampaignRunWorkflow.pause, "cancelling")
    stubs.skip_gate.set()

    assert (await cancel.result()).status == "cancelled"
    result = await run.handle.result()
    assert result.status == "cancelled" and result.planned == PLANNED
    assert stubs.batches == 1, "a cancel starts no new batch"
    assert stubs.skips == 1 and result.counts.skipped_by_reason == {"cancelled": BATCH}
    assert stubs.marks[-1] == "cancelled"


async def test_a_cancelled_run_refuses_every_control(start_run: Any) -> None:
    stubs = StubActivities()
    stubs.batch_gate.clear()
    stubs.hold_status, stubs.mark_gate = "cancelled", asyncio.Event()
    run = await start_run(stubs)
    await asyncio.wait_for(stubs.batch_started.wait(), WITHIN)
    cancel = await run.handle.start_update(CampaignRunWorkflow.cancel, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    stubs.batch_gate.set()
    await run.marked("cancelled")  # the run is cancelled and still open, writing its row

    await run.refuses_every_control("cancelled", reschedule=False)

    stubs.mark_gate.set()
    assert (await cancel.result()).status == "cancelled"
    assert (await run.handle.result()).status == "cancelled"
