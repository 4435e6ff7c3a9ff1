"""Segments: how many customers a segment selects now, and a few of them."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ConfigDep, PoolDep, TenantDep
from api.schemas import CustomerRef, SegmentEstimate, SegmentEstimateRequest
from core.customers import service as customer_service

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["segments"])


@router.post("/segments:estimate", response_model=SegmentEstimate)
async def estimate_segment(
    tenant: TenantDep, config: ConfigDep, body: SegmentEstimateRequest, pool: PoolDep
) -> SegmentEstimate:
    """Count the customers an inline or named segment selects (the same SQL a run freezes)."""
    found = await customer_service.estimate_segment(pool, tenant, config, body.segment)
    return SegmentEstimate(count=found.count, sample=[CustomerRef(**r) for r in found.sample])
