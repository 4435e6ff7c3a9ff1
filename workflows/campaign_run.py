"""CampaignRunWorkflow: one durable execution per campaign run.

load config (pin a version) → wait for the send time → plan the audience → deliver batches
through a bounded window of activities → finish. Only ids, cursors and counts pass through
history; recipients and rendered bodies stay in PostgreSQL and the activities.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.names import DELIVER_BATCH, LOAD_CONFIG, MARK_RUN, PLAN_AUDIENCE
    from core.runs import (
        AudiencePlan,
        CampaignRunInput,
        ConfigPin,
        Counts,
        DeliverBatchInput,
        LoadConfigInput,
        MarkRunInput,
        PlanAudienceInput,
        RunProgress,
    )

_SHORT = timedelta(seconds=30)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn(name="CampaignRunWorkflow")
class CampaignRunWorkflow:
    """Carries one campaign run to every recipient exactly once."""

    def __init__(self) -> None:
        self._progress = RunProgress(status="scheduled")

    @workflow.query
    def progress(self) -> RunProgress:
        return self._progress

    @workflow.run
    async def run(self, inp: CampaignRunInput) -> RunProgress:
        try:
            # Pin the config first: a run uses the version current when it was started,
            # even when it then waits days for its send time.
            pin: ConfigPin = await workflow.execute_activity(
                LOAD_CONFIG,
                LoadConfigInput(tenant=inp.tenant),
                result_type=ConfigPin,
                start_to_close_timeout=_SHORT,
                retry_policy=_RETRY,
            )
            await self._mark(inp, "scheduled", config_version=pin.version)
            if inp.send_at is not None:
                delay = inp.send_at - workflow.now()
                if delay > timedelta(0):
                    workflow.set_current_details(f"scheduled for {inp.send_at.isoformat()}")
                    await workflow.sleep(delay, summary="wait for send time")
            await self._deliver(inp, pin)
        except ActivityError as err:
            self._progress.status = "failed"
            cause = str(err.cause or err)
            await self._mark(inp, "failed", error=cause)
            raise ApplicationError(f"run failed: {cause}", non_retryable=True) from err
        return self._progress

    async def _deliver(self, inp: CampaignRunInput, pin: ConfigPin) -> None:
        self._progress.status = "running"
        await self._mark(inp, "running")
        plan: AudiencePlan = await workflow.execute_activity(
            PLAN_AUDIENCE,
            PlanAudienceInput(
                tenant=inp.tenant,
                run_id=inp.run_id,
                campaign_id=inp.campaign_id,
                config_version=pin.version,
                batch_size=pin.batch_size,
            ),
            result_type=AudiencePlan,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=_RETRY,
        )
        self._progress.planned = plan.planned
        self._progress.batches_total = len(plan.batch_starts)
        await self._mark(inp, "running", planned=plan.planned)
        workflow.set_current_details(f"{plan.planned} recipients in {len(plan.batch_starts)} batches")

        starts = plan.batch_starts
        pending: set[asyncio.Task[Counts]] = set()
        for i, first_id in enumerate(starts):
            if len(pending) >= pin.max_concurrent_batches:
                await self._collect(pending, asyncio.FIRST_COMPLETED)
            batch = DeliverBatchInput(
                tenant=inp.tenant,
                run_id=inp.run_id,
                campaign_id=inp.campaign_id,
                config_version=pin.version,
                first_id=first_id,
                end_id=starts[i + 1] if i + 1 < len(starts) else None,
            )
            pending.add(
                asyncio.ensure_future(
                    workflow.execute_activity(
                        DELIVER_BATCH,
                        batch,
                        result_type=Counts,
                        start_to_close_timeout=timedelta(minutes=10),
                        heartbeat_timeout=timedelta(seconds=60),
                        retry_policy=_RETRY,
                        summary=f"batch {i + 1}/{len(starts)}",
                    )
                )
            )
        await self._collect(pending, asyncio.ALL_COMPLETED)
        self._progress.status = "completed"
        await self._mark(inp, "completed")

    async def _collect(self, pending: set[asyncio.Task[Counts]], when: str) -> None:
        if not pending:
            return
        done, rest = await workflow.wait(pending, return_when=when)
        pending.clear()
        pending.update(rest)
        for task in done:
            self._progress.counts.add(task.result())
            self._progress.batches_done += 1

    async def _mark(self, inp: CampaignRunInput, status: str, **fields: object) -> None:
        await workflow.execute_activity(
            MARK_RUN,
            MarkRunInput(tenant=inp.tenant, run_id=inp.run_id, status=status, **fields),  # type: ignore[arg-type]
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
