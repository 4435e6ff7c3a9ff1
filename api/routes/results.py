"""Results: what each variant and the holdout of a run, or of every run of a campaign, did —
reach, engagement, conversions and revenue, lift against the holdout with its confidence
interval, the leading variant with its test — and an hourly series per variant for charts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import APIRouter, Query

from api.deps import CampaignDep, PoolDep, RunDep, TenantDep
from api.schemas import Results, ResultSeries
from core.campaigns.store import CampaignRecord, get_campaign
from core.infra.db import tenant_tx
from core.results import report as results
from core.runs import store as run_store
from core.runs.store import RunRecord

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["results"])
R = TypeVar("R")
DEFAULT_EVENT = results.DEFAULT_CONVERSION_EVENT

ConversionEvent = Annotated[
    str,
    Query(
        min_length=1,
        max_length=100,
        description="the customer-event type that counts as a conversion (revenue always sums purchases)",
    ),
]


async def _variant_order(conn: Any, tenant: str, run: RunRecord) -> list[str]:
    """The variant keys of the run's campaign, in its order (for listing and the baseline)."""
    campaign = await get_campaign(conn, tenant, run.campaign_id)
    return [v.key for v in campaign.spec.variants] if campaign else []


async def _run_query(conn: Any, tenant: str, run: RunRecord) -> results.Query:
    """The query over one run, its variants in its campaign's order."""
    order = await _variant_order(conn, tenant, run)
    return results.Query(scope="run", campaign_id=run.campaign_id, run_ids=[run.id], variant_order=order)


async def _campaign_query(conn: Any, tenant: str, campaign: CampaignRecord) -> results.Query:
    """The query over every run of the campaign, its variants in its order."""
    run_ids = await run_store.campaign_run_ids(conn, tenant, campaign.id)
    order = [v.key for v in campaign.spec.variants]
    return results.Query(scope="campaign", campaign_id=campaign.id, run_ids=run_ids, variant_order=order)


async def _answer(
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


@router.get("/runs/{run_id}/results", response_model=Results)
async def run_results(
    tenant: TenantDep, run: RunDep, pool: PoolDep, conversion_event: ConversionEvent = results.DEFAULT_CONVERSION_EVENT
) -> Results:
    """Per variant and for the holdout: recipients, sends, deliveries, bounces, unique human
    opens and clicks (and all), unsubscribes, complaints, conversions and revenue, each as a
    rate; conversion lift over the holdout (Newcombe 95% interval, z-test) and the leading
    variant per metric (z-test for two groups, chi-square for more)."""
    return Results(**(await _answer(pool, tenant, run, conversion_event, results.results)).model_dump())


@router.get("/campaigns/{campaign_id}/results", response_model=Results)
async def campaign_results(
    tenant: TenantDep, campaign: CampaignDep, pool: PoolDep, conversion_event: ConversionEvent = DEFAULT_EVENT
) -> Results:
    """The results of every run of the campaign together: each run's recipients count once per
    run, so the figures are the sums of the runs'."""
    return Results(**(await _answer(pool, tenant, campaign, conversion_event, results.results)).model_dump())


@router.get("/runs/{run_id}/results/series", response_model=ResultSeries)
async def run_series(
    tenant: TenantDep, run: RunDep, pool: PoolDep, conversion_event: ConversionEvent = results.DEFAULT_CONVERSION_EVENT
) -> ResultSeries:
    """Per variant and UTC hour: messages sent, human opens and clicks (events), conversion events."""
    return ResultSeries(**(await _answer(pool, tenant, run, conversion_event, results.series)).model_dump())


@router.get("/campaigns/{campaign_id}/results/series", response_model=ResultSeries)
async def campaign_series(
    tenant: TenantDep, campaign: CampaignDep, pool: PoolDep, conversion_event: ConversionEvent = DEFAULT_EVENT
) -> ResultSeries:
    """The hourly series of every run of the campaign together."""
    return ResultSeries(**(await _answer(pool, tenant, campaign, conversion_event, results.series)).model_dump())
