"""What the run workflow's phases share when they call activities: the timeout of a short
activity, the retry policy (unchanged values keep recorded histories replaying), the run's ids
every activity input starts with, and how an activity is called (by name, workflows/activity_refs.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypedDict, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from core.runs.models import CampaignRunInput
from workflows.activity_refs import ActivityRef

# start_to_close_timeout of an activity that only reads or writes a few rows.
SHORT = timedelta(seconds=30)
# Retried with backoff from 1 s up to 30 s between attempts.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# Runs started from here on call bookkeeping activities as local activities; older runs replay
# with them as ordinary ones.
LOCAL_BOOKKEEPING = "local-bookkeeping"
# The same for planning the audience, from the shared workflow queue on.
LOCAL_PLAN = "local-plan"
# Runs due when they start take their first steps (config pin, status, plan, experiment) as
# one local activity (activities/run_start.py); older runs, and runs that wait for their send
# time, take them one by one.
ONE_STEP_START = "one-step-start"

In = TypeVar("In")
R = TypeVar("R")


class RunIds(TypedDict):
    """A run's tenant, campaign and run ids: the fields every activity input of the run starts with."""

    tenant: str
    campaign_id: str
    run_id: str


def run_ids(inp: CampaignRunInput) -> RunIds:
    """The run's ids, to pass on to an activity input as keyword arguments."""
    return RunIds(tenant=inp.tenant, campaign_id=inp.campaign_id, run_id=inp.run_id)


async def call(ref: ActivityRef[In, R], arg: In, **options: Any) -> R:
    """Run activity `ref` with `arg` (options as workflow.execute_activity takes them); its
    result decoded as the activity's result type."""
    result: R = await workflow.execute_activity(ref.name, arg, result_type=ref.result, **options)
    return result


async def call_local(ref: ActivityRef[In, R], arg: In, **options: Any) -> R:
    """Run activity `ref` as a local activity (options as workflow.execute_local_activity takes them)."""
    result: R = await workflow.execute_local_activity(ref.name, arg, result_type=ref.result, **options)
    return result


async def bookkeeping(ref: ActivityRef[In, R], arg: In, limit: timedelta = SHORT, patch: str = LOCAL_BOOKKEEPING) -> R:
    """Call a bookkeeping activity: PostgreSQL work that is safe to run again and needs no
    channel (a status, the config pin, a page of batch boundaries, freezing the audience). It
    runs as a local activity, in the workflow's own task on the worker that has the run: no
    task-queue round trip through the server, which under a neighbour's load cost a small run
    100-200 ms a step (benchmarks/isolation.py). Retries follow RETRY, locally at first. Runs
    started before `patch` call it as an ordinary activity."""
    if workflow.patched(patch):
        return await call_local(ref, arg, start_to_close_timeout=limit, retry_policy=RETRY)
    # Runs from before the patch have their workflow on the tenant's queue, which is where an
    # activity goes when no queue is named.
    return await call(ref, arg, start_to_close_timeout=limit, retry_policy=RETRY)
