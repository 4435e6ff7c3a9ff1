"""Results: what each variant and the holdout of a run, or of every run of a campaign, did —
reach, engagement, conversions and revenue, lift against the holdout with its confidence
interval, the leading variant with its test — and an hourly series per variant for charts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CampaignDep, PoolDep, RunDep, TenantDep
from api.schemas import Results, ResultSeries
from core.results import report as results
from core.results import service as result_service

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["results"])
DEFAULT_EVENT = results.DEFAULT_CONVERSION_EVENT

ConversionEvent = Annotated[
    str,
    Query(
        min_length=1,
        max_length=100,
        description="the customer-event type that counts as a conversion (revenue always sums purchases)",
    ),
]


@router.get("/runs/{run_id}/results", response_model=Results)
async def run_results(
    tenant: TenantDep, run: RunDep, pool: PoolDep, conversion_event: ConversionEvent = results.DEFAULT_CONVERSION_EVENT
) -> Results:
    """Per variant and for the holdout: recipients, sends, deliveries, bounces, unique human
    opens and clicks (and all), unsubscribes, complaints, conversions and revenue, each as a
    rate; conversion lift over the holdout (Newcombe 95% interval, z-test) and the leading
    variant per metric (z-test for two groups, chi-square for more)."""
    return Results(**(await result_service.run_results(pool, tenant, run, conversion_event)).model_dump())


@router.get("/campaigns/{campaign_id}/results", response_model=Results)
async def campaign_results(
    tenant: TenantDep, campaign: CampaignDep, pool: PoolDep, conversion_event: ConversionEvent = DEFAULT_EVENT
) -> Results:
    """The results of every run of the campaign together: each run's recipients count once per
    run, so the figures are the sums of the runs'."""
    return Results(**(await result_service.run_results(pool, tenant, campaign, conversion_event)).model_dump())


@router.get("/runs/{run_id}/results/series", response_model=ResultSeries)
async def run_series(
    tenant: TenantDep, run: RunDep, pool: PoolDep, conversion_event: ConversionEvent = results.DEFAULT_CONVERSION_EVENT
) -> ResultSeries:
    """Per variant and UTC hour: messages sent, human opens and clicks (events), conversion events."""
    return ResultSeries(**(await result_service.run_series(pool, tenant, run, conversion_event)).model_dump())


@router.get("/campaigns/{campaign_id}/results/series", response_model=ResultSeries)
async def campaign_series(
    tenant: TenantDep, campaign: CampaignDep, pool: PoolDep, conversion_event: ConversionEvent = DEFAULT_EVENT
) -> ResultSeries:
    """The hourly series of every run of the campaign together."""
    return ResultSeries(**(await result_service.run_series(pool, tenant, campaign, conversion_event)).model_dump())
