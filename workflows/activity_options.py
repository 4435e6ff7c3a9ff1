"""What the run workflow's phases share when they call activities: the timeout of a short
activity, the retry policy (unchanged values keep recorded histories replaying), and the run's
ids every activity input starts with."""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from core.runs import CampaignRunInput

# start_to_close_timeout of an activity that only reads or writes a few rows.
SHORT = timedelta(seconds=30)
# Retried with backoff from 1 s up to 30 s between attempts.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


class RunIds(TypedDict):
    """A run's tenant, campaign and run ids: the fields every activity input of the run starts with."""

    tenant: str
    campaign_id: str
    run_id: str


def run_ids(inp: CampaignRunInput) -> RunIds:
    """The run's ids, to pass on to an activity input as keyword arguments."""
    return RunIds(tenant=inp.tenant, campaign_id=inp.campaign_id, run_id=inp.run_id)
