"""Everything Pennant names in Temporal, built in one place: the client every process uses,
workflow ids, schedule ids, task-queue names and the search attributes operators filter by."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

TENANT_ID = SearchAttributeKey.for_keyword("TenantId")
CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")
SEARCH_ATTRIBUTES = (TENANT_ID, CAMPAIGN_ID)


# Every tenant's workflows share this queue; their activities (the work) run on the tenant's own.
# A workflow task is a few milliseconds of bookkeeping, and a queue costs a worker a thread and
# the server its long polls whether or not it has work: 500 tenants at rest held 500 threads
# and 1,500 polls with a workflow queue each (benchmarks/many_tenants.py).
WORKFLOW_QUEUE = "pennant-workflows"


def task_queue_for(tenant: str) -> str:
    """The task queue of a tenant's activities: its audience plans, batches and sends run there,
    under the tenant's own concurrency and rate limits, so one tenant's backlog never queues
    another's work."""
    return f"tenant-{tenant}"


def tenant_of_queue(task_queue: str) -> str | None:
    """The tenant whose activity queue `task_queue` is (`task_queue_for`), or None."""
    prefix = task_queue_for("")
    return task_queue[len(prefix) :] or None if task_queue.startswith(prefix) else None


def run_workflow_id(tenant: str, campaign_id: str, run_id: str) -> str:
    """The id of a campaign run's workflow (every execution of its continue-as-new chain)."""
    return f"run:{tenant}:{campaign_id}:{run_id}"


def testsend_workflow_id(tenant: str, campaign_id: str, send_id: str) -> str:
    """The id of one test send of a campaign."""
    return f"test-send:{tenant}:{campaign_id}:{send_id}"


def schedule_id(tenant: str, campaign_id: str) -> str:
    """The id of a recurring campaign's Temporal Schedule."""
    return f"schedule:{tenant}:{campaign_id}"


def scheduled_workflow_id(tenant: str, campaign_id: str) -> str:
    """The id prefix of each occurrence a recurring campaign's schedule starts."""
    return f"scheduled:{tenant}:{campaign_id}"


def campaign_search_attributes(tenant: str, campaign_id: str) -> TypedSearchAttributes:
    """The search attributes of every workflow that belongs to a campaign."""
    return TypedSearchAttributes(
        [SearchAttributePair(TENANT_ID, tenant), SearchAttributePair(CAMPAIGN_ID, campaign_id)]
    )


async def connect(address: str, namespace: str) -> Client:
    """The Temporal client: pydantic payloads and the tracing interceptor."""
    return await Client.connect(
        address,
        namespace=namespace,
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
    )
