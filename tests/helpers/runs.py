"""Campaigns, runs and the delivery ledger as tests make and read them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.campaigns.spec import CampaignSpec
from core.infra.db import tenant_tx
from core.infra.settings import Settings
from core.infra.temporal import run_workflow_id, task_queue_for
from core.runs.models import TERMINAL_STATUSES, CampaignRunInput, RunProgress
from tests.helpers.tenants import Tenant
from tests.helpers.waiting import until
from workers.main import build_activities
from workflows.campaign_run import CampaignRunWorkflow

EMAIL_CAMPAIGN: dict[str, Any] = {
    "name": "Weekly deals",
    "segment": {},
    "channels": ["email"],
    "variants": [{"key": "A", "template": "weekly_deals"}],
}
# Two variants of the same template: an A/B split with nothing to tell them apart but chance.
AB_VARIANTS: list[dict[str, Any]] = [{"key": "A", "template": "weekly_deals"}, {"key": "B", "template": "weekly_deals"}]


async def create_campaign(tenant: Tenant, **changes: Any) -> str:
    """Create the weekly-deals email campaign (with `changes`) through the API; its id."""
    response = await tenant.http.post(tenant.url("/campaigns"), json={**EMAIL_CAMPAIGN, **changes})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def start_run(tenant: Tenant, campaign_id: str) -> str:
    """Start a run of the campaign through the API; its run id."""
    response = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


async def run_campaign(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    """Create the weekly-deals email campaign (with `changes`), run it to completion; the run."""
    run_id = await start_run(tenant, await create_campaign(tenant, **changes))
    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed", run
    return run


async def wait_for_run(tenant: Tenant, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll GET /runs/{id} until the run reaches a terminal status; the last body."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body: dict[str, Any] = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
        if body.get("status") in TERMINAL_STATUSES:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} did not finish: {body}")
        await asyncio.sleep(0.2)


async def insert_campaign_and_run(pool: asyncpg.Pool, slug: str, spec: CampaignSpec) -> tuple[str, str]:
    """Write a campaign and a run row straight to the database (for workflows started by hand)."""
    campaign_id, run_id = uuid.uuid4(), uuid.uuid4()
    async with tenant_tx(pool, slug) as conn:
        await conn.execute(
            "INSERT INTO campaigns (tenant_id, id, name, definition) VALUES ($1, $2, $3, $4)",
            slug,
            campaign_id,
            spec.name,
            spec.model_dump(mode="json"),
        )
        await conn.execute(
            "INSERT INTO runs (tenant_id, id, campaign_id, workflow_id) VALUES ($1, $2, $3, $4)",
            slug,
            run_id,
            campaign_id,
            run_workflow_id(slug, str(campaign_id), str(run_id)),
        )
    return str(campaign_id), str(run_id)


async def ledger_count(pool: asyncpg.Pool, tenant: str, run_id: str, where: str = "TRUE") -> int:
    """How many ledger rows the run has that match the SQL condition `where`."""
    return int(
        await pool.fetchval(
            f"SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid AND {where}", tenant, run_id
        )
    )


async def assert_each_recipient_once(pool: asyncpg.Pool, tenant: str, run_id: str, channels: int = 1) -> int:
    """Every frozen recipient has exactly one ledger row per channel, and nobody else has one."""
    # Statistics from before a large run's rows make the planner join by a scan per recipient
    # (a fresh clone's test_scale sat 7 minutes in this query); fresh ones make it a hash join.
    await pool.execute("ANALYZE run_recipients, deliveries")
    row = await pool.fetchrow(
        """SELECT
             (SELECT count(*) FROM run_recipients WHERE tenant_id = $1 AND run_id = $2::uuid) AS planned,
             (SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid) AS rows,
             (SELECT count(DISTINCT (customer_id, channel)) FROM deliveries
               WHERE tenant_id = $1 AND run_id = $2::uuid) AS distinct_rows,
             -- Set-based (one join, grouped): a per-recipient subquery can turn into a scan per
             -- recipient when the planner's statistics predate a large run's rows.
             (SELECT count(*) FROM (
                SELECT r.customer_id FROM run_recipients r
                LEFT JOIN deliveries d ON d.tenant_id = r.tenant_id AND d.run_id = r.run_id
                                      AND d.customer_id = r.customer_id
                WHERE r.tenant_id = $1 AND r.run_id = $2::uuid
                GROUP BY r.customer_id HAVING count(d.customer_id) <> $3) AS g) AS gaps,
             (SELECT count(*) FROM deliveries d WHERE d.tenant_id = $1 AND d.run_id = $2::uuid
               AND NOT EXISTS (SELECT 1 FROM run_recipients r WHERE r.tenant_id = d.tenant_id
                                 AND r.run_id = d.run_id AND r.customer_id = d.customer_id)) AS strangers""",
        tenant,
        run_id,
        channels,
    )
    assert row is not None
    assert row["rows"] == row["distinct_rows"] == row["planned"] * channels, dict(row)
    assert row["gaps"] == 0 and row["strangers"] == 0, dict(row)
    return int(row["planned"])


async def until_no_activity_pending(client: Client, workflow_id: str, within: float = 30.0) -> None:
    """Wait until the run's workflow has no activity scheduled or running (after a pause: the
    batches in flight have finished and recorded their rows)."""

    async def idle() -> bool:
        description = await client.get_workflow_handle(workflow_id).describe()
        return not description.raw_description.pending_activities

    await until(idle, within=within, what=f"the batches in flight of {workflow_id} to finish")


@contextlib.asynccontextmanager
async def direct_run(
    env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    settings: Settings,
    slug: str,
    spec: CampaignSpec,
    **worker_options: Any,
) -> AsyncIterator[tuple[str, WorkflowHandle[CampaignRunWorkflow, RunProgress]]]:
    """A run of `spec` started straight on `env` (no API: the time-skipping server), served by a
    worker on the tenant's queue (with `worker_options`) while the block runs; its run id and
    workflow handle."""
    campaign_id, run_id = await insert_campaign_and_run(pool, slug, spec)
    queue = task_queue_for(slug)
    activities = build_activities(pool, settings)
    async with Worker(
        env.client, task_queue=queue, workflows=[CampaignRunWorkflow], activities=activities, **worker_options
    ):
        handle = await env.client.start_workflow(
            CampaignRunWorkflow.run,
            CampaignRunInput(tenant=slug, campaign_id=campaign_id, run_id=run_id, send_at=spec.send_at),
            id=run_workflow_id(slug, campaign_id, run_id),
            task_queue=queue,
        )
        yield run_id, handle
