"""Moving to the shared workflow queue: what was started on a tenant's own queue before it.

Runs, occurrences and test sends used to have their workflow on the tenant's task queue. Those
still open there are served there until they end (`open_workflows` names their tenants for
`TenantWorkers`), and each recurring campaign's schedule is pointed at the shared queue once
(`move_schedules`), so its next occurrence starts there.
"""

from __future__ import annotations

import logging

from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleUpdate, ScheduleUpdateInput
from temporalio.service import RPCError

from core.infra.temporal import WORKFLOW_QUEUE

log = logging.getLogger("pennant.workers")

# Pennant's schedules (core.infra.temporal.schedule_id).
SCHEDULE_PREFIX = "schedule:"


async def move_schedules(client: Client) -> int:
    """Point every Pennant schedule that starts its occurrences on a tenant's queue at the shared
    workflow queue; how many were moved. Safe to run from every worker process at once."""
    moved = 0
    async for listed in await client.list_schedules():
        if not listed.id.startswith(SCHEDULE_PREFIX):
            continue
        changed = False

        def to_shared_queue(update: ScheduleUpdateInput) -> ScheduleUpdate | None:
            nonlocal changed
            schedule = update.description.schedule
            action = schedule.action
            if not isinstance(action, ScheduleActionStartWorkflow) or action.task_queue == WORKFLOW_QUEUE:
                return None  # nothing to change: no update is written
            action.task_queue, changed = WORKFLOW_QUEUE, True
            return ScheduleUpdate(schedule=schedule)

        try:
            # One describe and, only when the action names a tenant's queue, one update.
            await client.get_schedule_handle(listed.id).update(to_shared_queue)
        except RPCError as exc:  # deleted meanwhile, or Temporal busy: the next start tries again
            log.warning("could not move schedule %s to %s: %s", listed.id, WORKFLOW_QUEUE, exc.message)
        moved += changed
    if moved:
        log.info("moved %d schedules to the workflow queue %s", moved, WORKFLOW_QUEUE)
    return moved
