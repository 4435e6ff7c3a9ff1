"""Results of a run, or of every run of a campaign together, as the API and the console both
read them: the query over the right runs with the campaign's variant order, in one tenant
transaction (core/results/report.py computes them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from core.campaigns.store import CampaignRecord, get_campaign
from core.infra.db import TenantConn, tenant_tx
from core.results import report as results
from core.runs import store as run_store
from core.runs.store import RunRecord

R = TypeVar("R")


async def _variant_order(conn: TenantConn, tenant: str, run: RunRecord) -> list[str]:
    """The variant keys of the run's campaign, in its order (for listing and the baseline)."""
    campaign = await get_campaign(conn, tenant, run.campaign_id)
    return [v.key for v in campaign.spec.variants] if campaign else []


async def _run_query(conn: TenantConn, tenant: str, run: RunRecord) -> results.Query:
    """The query over one run, its variants in its campaign's order."""
    order = await _variant_order(conn, tenant, run)
    return results.Query(scope="run", campaign_id=run.campaign_id, run_ids=[run.id], variant_order=order)


async def _campaign_query(conn: TenantConn, tenant: str, campaign: CampaignRecord) -> results.Query:
    """The query over every run of the campaign, its variants in its order."""
    run_ids = await run_store.campaign_run_ids(conn, tenant, campaign.id)
    order = [v.key for v in campaign.spec.variants]
    return results.Query(scope="campaign", campaign_id=campaign.id, run_ids=run_ids, variant_order=order)


async def answer(
    pool: asyncpg.Pool,
    tenant: str,
    scope: RunRecord | CampaignRecord,
    conversion_event: str,
    compute: Callable[..., Awaitable[R]],
) -> R:
    """`compute` (results.results or results.series) over the run or campaign, in one tenant transaction."""
    async with tenant_tx(pool, tenant) as conn:
        if isinstance(scope, RunRecord):
            query = await _run_query(conn, tenant, scope)
        else:
            query = await _campaign_query(conn, tenant, scope)
        return await compute(conn, tenant, **query, conversion_event=conversion_event)


async def run_results(
    pool: asyncpg.Pool, tenant: str, scope: RunRecord | CampaignRecord, conversion_event: str
) -> results.ResultsRecord:
    """Per variant and for the holdout of the run (or campaign): reach, engagement,
    conversions and revenue, lift against the holdout, the leading variant."""
    return await answer(pool, tenant, scope, conversion_event, results.results)


async def run_series(
    pool: asyncpg.Pool, tenant: str, scope: RunRecord | CampaignRecord, conversion_event: str
) -> results.SeriesRecord:
    """Per variant and UTC hour of the run (or campaign): sends, human opens and clicks, conversions."""
    return await answer(pool, tenant, scope, conversion_event, results.series)
