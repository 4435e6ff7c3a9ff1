"""Campaigns: define who gets what, on which channels, in which variants."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException
from opentelemetry import trace

from api.deps import PoolDep, TenantDep
from api.schemas import Campaign
from core.campaigns import CampaignSpec, check_campaign
from core.config_store import get_config
from core.db import tenant_tx
from core.templating import TemplateError

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns", tags=["campaigns"])


def _campaign(row: dict) -> Campaign:
    return Campaign(
        **row["definition"], id=str(row["id"]), status=row["status"], created_at=row["created_at"]
    )


def parse_campaign_id(campaign_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(campaign_id)
    except ValueError:
        raise HTTPException(404, f"campaign '{campaign_id}' not found") from None


@router.post("", status_code=201, response_model=Campaign)
async def create_campaign(tenant: TenantDep, spec: CampaignSpec, pool: PoolDep) -> Campaign:
    found = await get_config(pool, tenant)
    if found is None:
        raise HTTPException(409, f"tenant '{tenant}' has no configuration yet")
    errors = check_campaign(spec, found[1])
    if errors:
        raise TemplateError(errors)
    campaign_id = uuid.uuid4()
    trace.get_current_span().set_attributes({"pennant.tenant": tenant, "pennant.campaign": str(campaign_id)})
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow(
            """INSERT INTO campaigns (tenant_id, id, name, definition) VALUES ($1, $2, $3, $4)
               RETURNING id, definition, status, created_at""",
            tenant,
            campaign_id,
            spec.name,
            spec.model_dump(mode="json"),
        )
    assert row is not None  # INSERT … RETURNING always returns the row
    return _campaign(dict(row))


@router.get("", response_model=list[Campaign])
async def list_campaigns(tenant: TenantDep, pool: PoolDep) -> list[Campaign]:
    async with tenant_tx(pool, tenant) as conn:
        rows = await conn.fetch(
            "SELECT id, definition, status, created_at FROM campaigns WHERE tenant_id = $1 ORDER BY created_at DESC",
            tenant,
        )
    return [_campaign(dict(r)) for r in rows]


@router.get("/{campaign_id}", response_model=Campaign)
async def get_campaign(tenant: TenantDep, campaign_id: str, pool: PoolDep) -> Campaign:
    cid = parse_campaign_id(campaign_id)
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow(
            "SELECT id, definition, status, created_at FROM campaigns WHERE tenant_id = $1 AND id = $2",
            tenant,
            cid,
        )
    if row is None:
        raise HTTPException(404, f"campaign '{campaign_id}' not found")
    return _campaign(dict(row))
