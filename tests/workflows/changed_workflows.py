"""Workflows changed on purpose, for the replay case that must fail (tests/workflows/test_replay.py).
A module of its own because the sandbox imports a workflow's module afresh, and the test module
imports pytest, which the sandbox refuses."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.runs.models import CampaignRunInput, RunProgress
    from workflows.campaign_run import CampaignRunWorkflow


@workflow.defn(name="CampaignRunWorkflow")
class ChangedCampaignRunWorkflow(CampaignRunWorkflow):
    """The run workflow with a change that breaks runs in flight, made without `workflow.patched`:
    a one-second timer before the run starts. Where a recorded run's history holds its first
    activity, this code starts a timer."""

    @workflow.run
    async def run(self, inp: CampaignRunInput) -> RunProgress:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(inp)
