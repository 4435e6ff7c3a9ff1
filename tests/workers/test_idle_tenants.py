"""An idle tenant costs no poll: its activity queue is polled only while it has work (dev server).

The tenant's slug starts with `iso-`, so only the TenantWorkers made here serve its queue; the
run's workflow tasks may be taken by the session's worker (which then tells this one by NOTIFY)
or by this one (which wakes the queue itself). Either way the run must complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from temporalio.client import Client

from core.infra.settings import Settings
from core.infra.temporal import connect
from tests.helpers.runs import assert_each_recipient_once, create_campaign, start_run, wait_for_run
from tests.helpers.stack import PROVIDER_TIMEOUT_SECONDS
from tests.helpers.tenants import Tenant, isolated_api_tenant
from tests.helpers.waiting import until
from workers.main import build_activities, provider_http_client
from workers.tenant_workers import TenantSelection, TenantWorkers

RECIPIENTS = 20


@pytest.fixture
async def tenant(pool: asyncpg.Pool, api_url: str) -> AsyncIterator[Tenant]:
    """A tenant no session worker serves."""
    async with isolated_api_tenant(pool, api_url, RECIPIENTS) as tenant:
        yield tenant


@contextlib.asynccontextmanager
async def serving(
    client: Client, pool: asyncpg.Pool, settings: Settings, slug: str, idle_seconds: float
) -> AsyncIterator[TenantWorkers]:
    """TenantWorkers serving only `slug`, quick to scan and to call a queue idle."""
    # A client of its own: the SDK allows one workflow Worker per queue and client, and the
    # session's worker already has one on the shared queue with the session's client.
    client = await connect(client.service_client.config.target_host, client.namespace)
    async with provider_http_client(PROVIDER_TIMEOUT_SECONDS) as http:
        workers = TenantWorkers(
            client,
            pool,
            build_activities(pool, settings, http),
            TenantSelection(frozenset({slug})),
            poll_seconds=0.2,
            scan_seconds=0.5,
            idle_seconds=idle_seconds,
        )
        task = asyncio.create_task(workers.run())
        try:
            await until(lambda: slug in workers.tenants, within=10, what="the workers to take the tenant")
            yield workers
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_tenant_queue_is_polled_while_it_has_work_and_not_when_idle(
    tenant: Tenant, pool: asyncpg.Pool, temporal_client: Client, settings: Settings
) -> None:
    async with serving(temporal_client, pool, settings, tenant.slug, idle_seconds=1.0) as workers:
        # Served, but no workflow of the tenant is open: nothing polls its queue.
        await asyncio.sleep(1.0)  # a few syncs and scans
        assert tenant.slug in workers.tenants
        assert tenant.slug not in workers.polling
        campaign = await create_campaign(tenant)
        for _ in range(2):  # woken from idle, twice
            run_id = await start_run(tenant, campaign)
            run = await wait_for_run(tenant, run_id)
            assert run["status"] == "completed", run
            assert await assert_each_recipient_once(pool, tenant.slug, run_id) == RECIPIENTS
            await until(
                lambda: tenant.slug not in workers.polling, within=20, what="the idle tenant's queue to go unpolled"
            )
