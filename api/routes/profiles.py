"""Customers addressed by the tenant's own id: a profile (fields, attributes, consent) and its
events from the stream, newest first, paged. An id that cannot sit in a path (a slash, say) is
also accepted as `?external_id=` on `…/customers:lookup` and `…/customers:events`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError

from api.cursors import decode_cursor, next_cursor
from api.deps import PoolDep, TenantDep
from core.events.stream import MAX_PAGE, customer_events, customer_profile
from core.infra.db import tenant_tx

router = APIRouter(prefix="/v1/tenants/{tenant}/customers", tags=["customers"])

ExternalIdQuery = Annotated[str, Query(min_length=1, max_length=255, description="the tenant's id for the customer")]
ExternalIdPath = Annotated[str, Path(min_length=1, max_length=255, description="the tenant's id for the customer")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


async def _profile(pool: Any, tenant: str, external_id: str) -> dict[str, Any]:
    async with tenant_tx(pool, tenant) as conn:
        profile = await customer_profile(conn, tenant, external_id)
    if profile is None:
        raise HTTPException(404, f"customer '{external_id}' not found")
    return profile


async def _events(pool: Any, tenant: str, external_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    before = None
    if cursor is not None:
        position = decode_cursor(cursor, {"t", "id"})
        try:
            before = (dt.datetime.fromisoformat(str(position["t"])), int(position["id"]))
        except (TypeError, ValueError):
            raise RequestValidationError(
                [{"loc": ("query", "cursor"), "msg": "not a cursor from a previous page"}]
            ) from None
    async with tenant_tx(pool, tenant) as conn:
        profile = await customer_profile(conn, tenant, external_id)
        if profile is None:
            raise HTTPException(404, f"customer '{external_id}' not found")
        rows = await customer_events(conn, tenant, profile["id"], limit=limit + 1, before=before)
    following = next_cursor(rows, limit, lambda r: {"t": r["timestamp"].isoformat(), "id": r["id"]})
    for row in rows:
        row.pop("id")
    return {"events": rows[:limit], "next_cursor": following}


@router.get(":lookup")
async def lookup_customer(tenant: TenantDep, pool: PoolDep, external_id: ExternalIdQuery) -> dict[str, Any]:
    """The profile of the customer `?external_id=` names."""
    return await _profile(pool, tenant, external_id)


@router.get(":events")
async def lookup_customer_events(
    tenant: TenantDep, pool: PoolDep, external_id: ExternalIdQuery, limit: Limit = 50, cursor: str | None = None
) -> dict[str, Any]:
    """The events of the customer `?external_id=` names, newest first."""
    return await _events(pool, tenant, external_id, limit, cursor)


@router.get("/{external_id}")
async def get_customer(tenant: TenantDep, pool: PoolDep, external_id: ExternalIdPath) -> dict[str, Any]:
    """The customer's profile: fields, attributes and consent."""
    return await _profile(pool, tenant, external_id)


@router.get("/{external_id}/events")
async def get_customer_events(
    tenant: TenantDep, pool: PoolDep, external_id: ExternalIdPath, limit: Limit = 50, cursor: str | None = None
) -> dict[str, Any]:
    """The customer's events from the stream, newest first; `next_cursor` pages on."""
    return await _events(pool, tenant, external_id, limit, cursor)
