"""What removing a tenant stops in Temporal: its recurring schedules are deleted and its runs,
waits and test sends still open are cancelled, so nothing of a removed tenant sends again.
(Its keys, secrets and queue are ended by the stores and the workers.)"""

from __future__ import annotations

import logging

from temporalio.client import Client
from temporalio.service import RPCError

from core.infra.temporal import TENANT_ID, schedule_id
from core.tenants.config_schema import SLUG_RE

log = logging.getLogger("pennant.tenants")


async def end_tenant_work(client: Client, tenant: str) -> tuple[int, int]:
    """Delete the tenant's schedules and cancel its open workflows; (schedules, workflows)."""
    if not SLUG_RE.match(tenant):  # the slug goes into a visibility query below
        raise ValueError(f"not a tenant slug: {tenant!r}")
    prefix = schedule_id(tenant, "")
    schedules = 0
    async for listed in await client.list_schedules():
        if listed.id.startswith(prefix):
            try:
                await client.get_schedule_handle(listed.id).delete()
                schedules += 1
            except RPCError as exc:  # deleted meanwhile
                log.warning("could not delete schedule %s of removed tenant %s: %s", listed.id, tenant, exc.message)
    workflows = 0
    query = f"{TENANT_ID.name} = '{tenant}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query, page_size=500):
        try:
            # Cancellation, not termination: a run records itself cancelled on the way out.
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).cancel()
            workflows += 1
        except RPCError as exc:  # finished meanwhile
            log.warning("could not cancel %s of removed tenant %s: %s", execution.id, tenant, exc.message)
    return schedules, workflows
