"""Segments: how many customers a segment selects now, and a few of them."""

from __future__ import annotations

import asyncpg
from fastapi import APIRouter, HTTPException

from api.deps import ConfigDep, PoolDep, TenantDep
from api.schemas import CustomerRef, SegmentEstimate, SegmentEstimateRequest
from core.customers.segments import compile_segment
from core.infra.db import tenant_tx

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["segments"])

SAMPLE_SIZE = 10
# An estimate is interactive: a segment too costly to count in this long is refused, not
# left holding a connection (a run's planning has no such limit).
ESTIMATE_TIMEOUT = "10s"


@router.post("/segments:estimate", response_model=SegmentEstimate)
async def estimate_segment(
    tenant: TenantDep, config: ConfigDep, body: SegmentEstimateRequest, pool: PoolDep
) -> SegmentEstimate:
    """Count the customers an inline or named segment selects (the same SQL a run freezes)."""
    segment = {"segment": body.segment} if isinstance(body.segment, str) else body.segment
    # A SegmentError is answered 422 with every `path: reason` (api/errors.py).
    compiled = compile_segment(segment, config.segments, path="segment", first_param=2)
    where = f"c.tenant_id = $1 AND ({compiled.where})"
    try:
        async with tenant_tx(pool, tenant) as conn:
            await conn.execute(f"SET LOCAL statement_timeout = '{ESTIMATE_TIMEOUT}'")
            count = await conn.fetchval(f"SELECT count(*) FROM customers c WHERE {where}", tenant, *compiled.params)
            rows = await conn.fetch(
                f"SELECT c.id, c.first_name, c.email FROM customers c WHERE {where} ORDER BY c.id LIMIT {SAMPLE_SIZE}",
                tenant,
                *compiled.params,
            )
    except asyncpg.QueryCanceledError:
        raise HTTPException(
            422, f"segment: too costly to estimate within {ESTIMATE_TIMEOUT}; simplify it or narrow it"
        ) from None
    return SegmentEstimate(count=count, sample=[CustomerRef(**dict(r)) for r in rows])
