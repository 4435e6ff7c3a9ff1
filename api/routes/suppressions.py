"""The tenant's suppression list: addresses never to contact on a channel."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from api.deps import PoolDep, TenantDep
from api.schemas import Suppression, SuppressionIn
from core.customers.suppressions import normalise, suppress
from core.infra.db import tenant_tx
from core.tenants.config_schema import ChannelName

router = APIRouter(prefix="/v1/tenants/{tenant}/suppressions", tags=["suppressions"])


@router.get("", response_model=list[Suppression])
async def list_suppressions(
    tenant: TenantDep,
    pool: PoolDep,
    channel: ChannelName | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[Suppression]:
    """The suppressed addresses, newest first, optionally of one channel."""
    async with tenant_tx(pool, tenant) as conn:
        rows = await conn.fetch(
            """SELECT channel, address, reason, created_at FROM suppressions
               WHERE tenant_id = $1 AND ($2::text IS NULL OR channel = $2)
               ORDER BY created_at DESC LIMIT $3""",
            tenant,
            channel,
            limit,
        )
    return [Suppression(**dict(r)) for r in rows]


@router.post("", status_code=201, response_model=SuppressionIn)
async def add_suppression(tenant: TenantDep, body: SuppressionIn, pool: PoolDep) -> SuppressionIn:
    """Suppress an address on a channel; the answer shows it as stored (normalised)."""
    async with tenant_tx(pool, tenant) as conn:
        await suppress(conn, tenant, body.channel, body.address, body.reason)
    return body.model_copy(update={"address": normalise(body.channel, body.address)})


@router.delete("/{channel}/{address}", status_code=204)
async def remove_suppression(tenant: TenantDep, channel: ChannelName, address: str, pool: PoolDep) -> None:
    """Lift a suppression; 404 when the address is not suppressed on the channel."""
    async with tenant_tx(pool, tenant) as conn:
        status = await conn.execute(
            "DELETE FROM suppressions WHERE tenant_id = $1 AND channel = $2 AND address = $3",
            tenant,
            channel,
            normalise(channel, address),
        )
    if not status.endswith(" 1"):
        raise HTTPException(404, f"'{address}' is not suppressed on {channel}")
