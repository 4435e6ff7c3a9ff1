"""Which tenants have open workflows, from Temporal's visibility: the safety net under waking
tenant Workers on demand, and how runs from before the shared workflow queue are found."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio.client import Client

from core.infra.temporal import TENANT_ID, WORKFLOW_QUEUE, task_queue_for


@dataclass(frozen=True)
class OpenWorkflows:
    """The tenants with running workflows, and those of them with workflows on their own task
    queue (started before the shared workflow queue, `queue_upgrade`)."""

    tenants: frozenset[str] = field(default_factory=frozenset)
    own_queue: frozenset[str] = field(default_factory=frozenset)


async def open_workflows(client: Client) -> OpenWorkflows:
    """One listing of the running workflows (a few pages even with thousands open)."""
    tenants: set[str] = set()
    own_queue: set[str] = set()
    async for execution in client.list_workflows("ExecutionStatus = 'Running'", page_size=1000):
        tenant = execution.typed_search_attributes.get(TENANT_ID)
        if not tenant:
            continue
        tenants.add(tenant)
        if execution.task_queue != WORKFLOW_QUEUE and execution.task_queue == task_queue_for(tenant):
            own_queue.add(tenant)
    return OpenWorkflows(frozenset(tenants), frozenset(own_queue))
