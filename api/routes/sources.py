"""Source keys (Segment write keys) of a tenant: create one per site or app, list, revoke; and
the stream they feed, followed by id (`GET …/stream?after_id=`, what `pennant events tail` reads).

Admin or tenant key. The key itself is shown once, in the answer that creates it; a source key
is accepted by the tracking API only (api/routes/ingest.py) and refused here and everywhere else.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PoolDep, PrincipalDep, TenantDep
from core.events.sources import MAX_LABEL, create_source, list_sources, revoke_source
from core.events.stream import MAX_PAGE, recent_events
from core.infra.db import tenant_tx
from core.security.audit import record_in

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["events"])


class SourceIn(BaseModel):
    """A new source: what it is for (e.g. 'web shop', 'iOS app')."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=MAX_LABEL)


class SourceKey(BaseModel):
    """A source key as listed: never the key, only its head (`prefix`)."""

    id: str
    tenant: str
    label: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class IssuedSource(SourceKey):
    """A source key just made: `key` is the write key, shown this once."""

    key: str


@router.post("/sources", response_model=IssuedSource, status_code=201)
async def create_source_key(tenant: TenantDep, body: SourceIn, pool: PoolDep, principal: PrincipalDep) -> IssuedSource:
    """Make a source key: the Segment write key of one site or app (shown once)."""
    key, row = await create_source(pool, tenant, body.label)
    await record_in(pool, tenant, principal, "source.create", row["id"])
    return IssuedSource(key=key, **row)


@router.get("/sources", response_model=list[SourceKey])
async def list_source_keys(tenant: TenantDep, pool: PoolDep) -> list[SourceKey]:
    """The tenant's source keys, revoked ones included, oldest first."""
    return [SourceKey(**row) for row in await list_sources(pool, tenant)]


@router.delete("/sources/{source_id}", response_model=SourceKey)
async def revoke_source_key(tenant: TenantDep, source_id: str, pool: PoolDep, principal: PrincipalDep) -> SourceKey:
    """Revoke a source key: refused by the tracking API from its next call. Idempotent."""
    row = await revoke_source(pool, tenant, source_id)
    if row is None:
        raise HTTPException(404, f"source '{source_id}' not found")
    await record_in(pool, tenant, principal, "source.revoke", source_id)
    return SourceKey(**row)


@router.get("/stream")
async def follow_stream(
    tenant: TenantDep,
    pool: PoolDep,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1, description="only events after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """The tenant's events of the last day after `after_id`, oldest first; `last_id` to ask again with."""
    async with tenant_tx(pool, tenant) as conn:
        rows = await recent_events(conn, tenant, after_id=after_id, limit=limit)
    return {"events": rows, "last_id": rows[-1]["id"] if rows else after_id}
