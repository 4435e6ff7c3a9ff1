"""The tenant's suppression list: addresses never to contact on a channel."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import PoolDep, TenantDep
from api.schemas import Suppression, SuppressionIn
from core.customers import service as customer_service
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
    return [Suppression(**r) for r in await customer_service.list_suppressions(pool, tenant, channel, limit)]


@router.post("", status_code=201, response_model=SuppressionIn)
async def add_suppression(tenant: TenantDep, body: SuppressionIn, pool: PoolDep) -> SuppressionIn:
    """Suppress an address on a channel; the answer shows it as stored (normalised)."""
    stored = await customer_service.add_suppression(pool, tenant, body.channel, body.address, body.reason)
    return body.model_copy(update={"address": stored})


@router.delete("/{channel}/{address}", status_code=204)
async def remove_suppression(tenant: TenantDep, channel: ChannelName, address: str, pool: PoolDep) -> None:
    """Lift a suppression; 404 when the address is not suppressed on the channel."""
    await customer_service.remove_suppression(pool, tenant, channel, address)
