"""The fallback phase of a run (workflow side): after the first delivery, a durable wait, then
the plan of who gets the fallback channel. Deterministic; the I/O is in the activities."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.infra.temporal import task_queue_for
    from core.runs.models import FallbackDue, FallbackPlan, PlanAudienceInput
from workflows import activity_refs as act
from workflows.activity_options import RETRY as _RETRY
from workflows.activity_options import bookkeeping, call

# Runs started before fallbacks existed replay without this phase.
CROSS_CHANNEL_FALLBACK = "cross-channel-fallback"


async def fallback_phase(
    inp: PlanAudienceInput, cancelled: Callable[[], bool], paused: Callable[[], bool]
) -> FallbackPlan | None:
    """The run's fallback plan once its wait is over; None when the campaign has no fallback or
    the run is cancelled meanwhile."""
    due: FallbackDue = await bookkeeping(act.FALLBACK_DUE, inp)
    if due.channel is None or due.after is None:
        return None
    until = workflow.now() + due.after
    workflow.set_current_details(f"fallback on {due.channel} at {until.isoformat()} to those who did not engage")
    try:
        # A durable timer, which a cancel cuts short.
        await workflow.wait_condition(cancelled, timeout=due.after, timeout_summary=f"fallback on {due.channel}")
    except TimeoutError:
        pass
    await workflow.wait_condition(lambda: cancelled() or not paused())
    if cancelled():
        return None
    plan: FallbackPlan = await call(
        act.PLAN_FALLBACK,
        inp.model_copy(update={"now": workflow.now()}),
        task_queue=task_queue_for(inp.tenant),
        start_to_close_timeout=timedelta(minutes=10),
        retry_policy=_RETRY,
    )
    workflow.set_current_details(
        f"fallback on {plan.channel}: {plan.recipients} recipients ({plan.engaged} engaged, "
        f"{plan.not_reached} not reached by the first channel)"
    )
    return plan
