"""Runs as the API and the console both use them (starting one is the campaign's:
core/campaigns/service.py start_run): read one as it stands (live from its workflow, else its row and the
ledger), list runs and their ledger, and control a run (pause, resume, cancel, reschedule,
pick a winner, extend its test) through the workflow's updates. Refusals are core.common
errors, never HTTP.

core imports no workflow module (.importlinter): the workflow, its updates and query and its
ApplicationError types are named here by their registered names, which tests/test_layering.py
checks against the workflow's definition."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from core.common.refusals import Conflict, Unavailable
from core.common.validation import InvalidInput
from core.experiments import store as experiment_store
from core.experiments.models import RunExperiment
from core.infra.db import tenant_tx
from core.runs import store as run_store
from core.runs.models import TERMINAL_STATUSES, Counts, RunProgress, RunStatus
from core.runs.store import DeliveryRecord, RunRecord

# Registered names in workflows/campaign_run.py and workflows/winner_selection.py.
RUN_WORKFLOW = "CampaignRunWorkflow"
PROGRESS_QUERY = "progress"
Action = Literal["pause", "resume", "cancel", "reschedule", "pick-winner", "extend-test"]
CONTROL_UPDATES: dict[str, str] = {
    "pause": "pause",
    "resume": "resume",
    "cancel": "cancel",
    "reschedule": "reschedule",
    "pick-winner": "pick_winner",
    "extend-test": "extend_test",
}
RUN_STATE_CONFLICT = "RunStateConflict"
EXPERIMENT_CONFLICT = "ExperimentStateConflict"
UNKNOWN_VARIANT = "UnknownVariant"

_FROM_TEMPORAL = {
    WorkflowExecutionStatus.FAILED: RunStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED: RunStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: RunStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: RunStatus.CANCELLED,
}
# How long a control call waits for the worker to accept it, and a cancel for the run to end.
_ACCEPT_TIMEOUT = 15.0
_CANCEL_WAIT = 30.0
_QUERY_TIMEOUT = dt.timedelta(seconds=2)


class UnknownRunVariant(InvalidInput):
    """A pick names a variant the run's test does not have."""


@dataclass(frozen=True)
class RunView:
    """A run as it stands: its row, live status and counts from its workflow while it runs
    (`progress`), else the ledger's counts; and its experiment."""

    run: RunRecord
    status: RunStatus
    counts: Counts
    planned: int | None
    progress: RunProgress | None
    experiment: RunExperiment | None


async def list_runs(
    pool: asyncpg.Pool,
    tenant: str,
    *,
    status: RunStatus | None = None,
    campaign_id: uuid.UUID | None = None,
    before: tuple[dt.datetime, uuid.UUID] = run_store.NEWEST_RUN,
    limit: int = 50,
) -> list[RunRecord]:
    """Runs newest first (before the position `before`), optionally of one status or campaign."""
    async with tenant_tx(pool, tenant) as conn:
        return await run_store.list_runs(
            conn, tenant, status=status, campaign_id=campaign_id, before=before, limit=limit
        )


async def list_deliveries(
    pool: asyncpg.Pool, tenant: str, run_id: str, *, after: tuple[int, str] = run_store.FIRST_DELIVERY, **filters: Any
) -> list[DeliveryRecord]:
    """The run's ledger in (customer, channel) order after `after` (filters as run_store's)."""
    async with tenant_tx(pool, tenant) as conn:
        return await run_store.list_deliveries(conn, tenant, run_id, after=after, **filters)


async def _live_progress(temporal: Client, workflow_id: str) -> tuple[RunStatus | None, RunProgress | None]:
    """(status if the workflow ended without its own bookkeeping, live progress if it runs)."""
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe(rpc_timeout=_QUERY_TIMEOUT)
    except RPCError:
        return None, None
    if desc.status in _FROM_TEMPORAL:  # terminated, timed out, failed or cancelled from outside
        return _FROM_TEMPORAL[desc.status], None
    if desc.status != WorkflowExecutionStatus.RUNNING:
        return None, None
    try:
        progress: RunProgress = await handle.query(PROGRESS_QUERY, rpc_timeout=_QUERY_TIMEOUT, result_type=RunProgress)
        return None, progress
    except RPCError:  # no worker to answer right now: the ledger still tells
        return None, None


async def run_view(pool: asyncpg.Pool, temporal: Client, tenant: str, run: RunRecord) -> RunView:
    """The run as it stands: live status and counts from its workflow while it runs, else
    from its row and the ledger."""
    status = run.status
    progress: RunProgress | None = None
    if not run.finished:
        ended, progress = await _live_progress(temporal, run.workflow_id)
        if ended is not None:
            status = ended
        elif progress is not None and progress.status not in TERMINAL_STATUSES:
            status = progress.status
        else:
            progress = None  # finishing right now: its row is about to say so, the ledger is complete
    if progress is not None:
        counts: Counts = progress.counts
        planned = progress.planned if progress.planned is not None else run.planned
    else:
        async with tenant_tx(pool, tenant) as conn:
            counts = await run_store.ledger_counts(conn, tenant, run.id)
        planned = run.planned
    async with tenant_tx(pool, tenant) as conn:
        experiment = await experiment_store.get(conn, tenant, run.id)
    return RunView(run=run, status=status, counts=counts, planned=planned, progress=progress, experiment=experiment)


async def control_run(
    pool: asyncpg.Pool, temporal: Client, tenant: str, run: RunRecord, action: Action, arg: Any = None
) -> RunView:
    """Send the run's workflow the update for `action` and answer the run as it then stands.
    Conflict when the run's state refuses it (or it has ended), UnknownRunVariant for a pick of
    a variant the test does not have, Unavailable when its worker or Temporal does not answer."""
    if run.finished:
        raise Conflict(f"cannot {action} a run that is {run.status}")
    args = [] if arg is None else [arg]
    handle = temporal.get_workflow_handle(run.workflow_id)
    try:
        try:
            # Accepted means the validator passed; a refusal arrives as the update's failure.
            accepted = await asyncio.wait_for(
                handle.start_update(CONTROL_UPDATES[action], *args, wait_for_stage=WorkflowUpdateStage.ACCEPTED),
                _ACCEPT_TIMEOUT,
            )
        except TimeoutError:
            raise Unavailable(f"the run's worker did not take the {action} in time; try again") from None
        try:
            # Pause and resume finish at once; a cancel once running batches are done and the
            # rest is recorded. A slow cancel carries on after this answer.
            await asyncio.wait_for(accepted.result(), _CANCEL_WAIT)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            pass  # accepted: it carries on in the workflow, and a read shows where it stands
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type in (RUN_STATE_CONFLICT, EXPERIMENT_CONFLICT):
            raise Conflict(cause.message) from exc
        if isinstance(cause, ApplicationError) and cause.type == UNKNOWN_VARIANT:
            raise UnknownRunVariant([cause.message]) from exc
        # Accepted, then failed inside the workflow: the run's state is the answer, not a 5xx.
        raise Conflict(f"could not {action} the run: {cause or exc}") from exc
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise Unavailable(f"could not {action} the run on Temporal: {exc.message}") from exc
        # The workflow has ended: between reading the row and the update, or from outside
        # (terminated in the Temporal UI), which run_view reports as the run's status.
        status = (await reread(pool, temporal, tenant, run)).status
        raise Conflict(f"cannot {action} a run that is {status}") from exc
    return await reread(pool, temporal, tenant, run)


async def reread(pool: asyncpg.Pool, temporal: Client, tenant: str, run: RunRecord) -> RunView:
    """The run as it stands now, after a control call changed it."""
    async with tenant_tx(pool, tenant) as conn:
        current = await run_store.get_run(conn, tenant, run.id)
    return await run_view(pool, temporal, tenant, current or run)
