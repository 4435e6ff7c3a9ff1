"""ScheduledCampaignWorkflow: what a recurring campaign's Temporal Schedule starts each time.

It registers a new run and carries it out as a normal CampaignRunWorkflow child (id
`run:<tenant>:<campaign>:<run>`), so every occurrence looks and is controlled like any other
run. It stays open while the child runs, which is what lets the schedule's overlap policy
(skip) see a still-running occurrence.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from core.campaigns.schedules import RegisterRunInput, ScheduledRunInput
    from core.infra.temporal import campaign_search_attributes, run_workflow_id, task_queue_for
    from core.runs.models import CampaignRunInput, RunProgress
    from workflows.campaign_run import CampaignRunWorkflow
from workflows import activity_refs as act
from workflows.activity_options import call


@workflow.defn(name="ScheduledCampaignWorkflow")
class ScheduledCampaignWorkflow:
    """One occurrence of a recurring campaign."""

    @workflow.run
    async def run(self, inp: ScheduledRunInput) -> RunProgress:
        """Register the occurrence as a run and carry it out as a child run workflow."""
        run_id = str(workflow.uuid4())  # deterministic: replays make the same id
        child_id = run_workflow_id(inp.tenant, inp.campaign_id, run_id)
        await call(
            act.REGISTER_RUN,
            RegisterRunInput(tenant=inp.tenant, campaign_id=inp.campaign_id, run_id=run_id, workflow_id=child_id),
            task_queue=task_queue_for(inp.tenant),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
        )
        return await workflow.execute_child_workflow(
            CampaignRunWorkflow.run,
            CampaignRunInput(tenant=inp.tenant, campaign_id=inp.campaign_id, run_id=run_id),
            id=child_id,
            search_attributes=campaign_search_attributes(inp.tenant, inp.campaign_id),
            static_summary=f"scheduled run of campaign {inp.campaign_id}",
        )
