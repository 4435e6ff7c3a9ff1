"""CampaignTestSendWorkflow: one test send; its activity runs on the tenant's own queue, where
the channel adapters and their credentials live."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from core.campaigns.test_send_io import TestSendInput, TestSendResult
    from core.infra.temporal import task_queue_for
from workflows import activity_refs as act
from workflows.activity_options import call


@workflow.defn(name="CampaignTestSendWorkflow")
class CampaignTestSendWorkflow:
    """One test send, its activity on the tenant's queue."""

    @workflow.run
    async def run(self, inp: TestSendInput) -> TestSendResult:
        """Send the test emails through the tenant's worker."""
        return await call(
            act.TEST_SEND,
            inp,
            task_queue=task_queue_for(inp.tenant),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3),
            summary=f"test send to {len(inp.emails)} address(es)",
        )
