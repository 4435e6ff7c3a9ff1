"""Campaigns: define who gets what, on which channels, in which variants; preview and
test-send them before any run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException
from opentelemetry import trace
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from api.deps import PoolDep, SettingsDep, TemporalDep, TenantDep
from api.schemas import Campaign, CustomerRef, Preview, PreviewRequest, TestSendRequest
from core.campaigns import CampaignSpec, check_campaign
from core.config_store import get_config
from core.db import tenant_tx
from core.preview import TestSendInput, TestSendResult, preview_unsubscribe_url, render_variant, sample_customer
from core.runs import ACTIVE_STATUSES
from core.templating import TemplateError
from core.temporal import campaign_search_attributes, task_queue_for, testsend_workflow_id
from core.tenant_config import TenantConfig
from workflows.testsend import CampaignTestSendWorkflow

_TEST_SEND_TIMEOUT = timedelta(seconds=60)

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns", tags=["campaigns"])


def _campaign(row: dict) -> Campaign:
    return Campaign(**row["definition"], id=str(row["id"]), status=row["status"], created_at=row["created_at"])


def parse_campaign_id(campaign_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(campaign_id)
    except ValueError:
        raise HTTPException(404, f"campaign '{campaign_id}' not found") from None


async def _config(pool: PoolDep, tenant: str) -> TenantConfig:
    found = await get_config(pool, tenant)
    if found is None:
        raise HTTPException(409, f"tenant '{tenant}' has no configuration yet")
    return found[1]


@router.post("", status_code=201, response_model=Campaign)
async def create_campaign(tenant: TenantDep, spec: CampaignSpec, pool: PoolDep) -> Campaign:
    errors = check_campaign(spec, await _config(pool, tenant))
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
            spec.model_dump(mode="json", exclude_unset=True),
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


@router.put("/{campaign_id}", response_model=Campaign)
async def update_campaign(tenant: TenantDep, campaign_id: str, spec: CampaignSpec, pool: PoolDep) -> Campaign:
    """Replace a campaign's definition, validated as on create. Refused (409) while one of its
    runs is scheduled, running or paused: those runs read the definition as they go."""
    cid = parse_campaign_id(campaign_id)
    config = await _config(pool, tenant)
    async with tenant_tx(pool, tenant) as conn:
        status = await conn.fetchval(
            "SELECT status FROM campaigns WHERE tenant_id = $1 AND id = $2 FOR UPDATE", tenant, cid
        )
        if status is None:
            raise HTTPException(404, f"campaign '{campaign_id}' not found")
        if status == "archived":
            raise HTTPException(409, f"campaign '{campaign_id}' is archived")
        errors = check_campaign(spec, config)
        if errors:
            raise TemplateError(errors)
        active = await conn.fetch(
            "SELECT id, status FROM runs WHERE tenant_id = $1 AND campaign_id = $2 AND status = ANY($3::text[])",
            tenant,
            cid,
            sorted(ACTIVE_STATUSES),
        )
        if active:
            runs = ", ".join(f"{r['id']} ({r['status']})" for r in active)
            raise HTTPException(
                409, f"campaign '{campaign_id}' has unfinished runs: {runs}; cancel them or let them finish first"
            )
        row = await conn.fetchrow(
            """UPDATE campaigns SET name = $3, definition = $4, updated_at = now()
               WHERE tenant_id = $1 AND id = $2 RETURNING id, definition, status, created_at""",
            tenant,
            cid,
            spec.name,
            spec.model_dump(mode="json", exclude_unset=True),
        )
    assert row is not None  # locked above
    return _campaign(dict(row))


@router.delete("/{campaign_id}", response_model=Campaign)
async def archive_campaign(tenant: TenantDep, campaign_id: str, pool: PoolDep) -> Campaign:
    """Archive: the campaign stays readable with its runs and ledger, but starts no new run.
    Runs already under way carry on (cancel them separately)."""
    cid = parse_campaign_id(campaign_id)
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow(
            """UPDATE campaigns SET status = 'archived', updated_at = now()
               WHERE tenant_id = $1 AND id = $2 RETURNING id, definition, status, created_at""",
            tenant,
            cid,
        )
    if row is None:
        raise HTTPException(404, f"campaign '{campaign_id}' not found")
    return _campaign(dict(row))


async def _load(pool: PoolDep, tenant: str, campaign_id: str) -> tuple[uuid.UUID, CampaignSpec]:
    cid = parse_campaign_id(campaign_id)
    async with tenant_tx(pool, tenant) as conn:
        definition = await conn.fetchval(
            "SELECT definition FROM campaigns WHERE tenant_id = $1 AND id = $2", tenant, cid
        )
    if definition is None:
        raise HTTPException(404, f"campaign '{campaign_id}' not found")
    return cid, CampaignSpec.model_validate(definition)


def _check_variant(spec: CampaignSpec, variant: str | None) -> str:
    keys = [v.key for v in spec.variants]
    if variant is None:
        return keys[0]
    if variant not in keys:
        raise TemplateError([f"variant: unknown variant '{variant}' (variants: {', '.join(keys)})"])
    return variant


async def _customer(
    pool: PoolDep, tenant: str, spec: CampaignSpec, config: TenantConfig, customer_id: int | None
) -> dict[str, Any]:
    async with tenant_tx(pool, tenant) as conn:
        customer = await sample_customer(conn, tenant, spec, config, customer_id)
    if customer is None:
        raise HTTPException(404, f"customer {customer_id} not found")
    return customer


@router.post("/{campaign_id}:preview", response_model=Preview)
async def preview_campaign(
    tenant: TenantDep, campaign_id: str, pool: PoolDep, settings: SettingsDep, body: PreviewRequest | None = None
) -> Preview:
    """Render a variant on a channel for a customer (default: the first member of the audience),
    exactly as a run would; template problems are a 422 naming the variant."""
    body = body or PreviewRequest()
    cid, spec = await _load(pool, tenant, campaign_id)
    config = await _config(pool, tenant)
    variant = _check_variant(spec, body.variant)
    channel = body.channel or spec.channels[0]
    if channel not in spec.channels:
        raise TemplateError(
            [f"channel: the campaign does not send on '{channel}' (channels: {', '.join(spec.channels)})"]
        )
    customer = await _customer(pool, tenant, spec, config, body.customer_id)
    fields = render_variant(
        config, spec, str(cid), variant, channel, customer, preview_unsubscribe_url(settings.public_base_url)
    )
    ref = CustomerRef(**{k: customer[k] for k in ("id", "first_name", "email")}) if customer["id"] else None
    return Preview(campaign_id=str(cid), variant=variant, channel=channel, customer=ref, **fields)


@router.post("/{campaign_id}:test-send", response_model=TestSendResult)
async def test_send_campaign(
    tenant: TenantDep,
    campaign_id: str,
    body: TestSendRequest,
    pool: PoolDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> TestSendResult:
    """Email the rendered campaign (every variant, or one) to seed addresses, filled with a
    sample customer's data and marked [TEST]. Sent by the tenant's worker through the same
    email adapter as runs; no run is created and the ledger is not touched."""
    cid, spec = await _load(pool, tenant, campaign_id)
    config = await _config(pool, tenant)
    if "email" not in spec.channels:
        raise TemplateError([f"channels: the campaign does not send email (channels: {', '.join(spec.channels)})"])
    variants = [_check_variant(spec, body.variant)] if body.variant else [v.key for v in spec.variants]
    customer = await _customer(pool, tenant, spec, config, body.customer_id)
    for variant in variants:  # template problems are a 422 here, not a failed workflow
        render_variant(
            config, spec, str(cid), variant, "email", customer, preview_unsubscribe_url(settings.public_base_url)
        )
    send_id = uuid.uuid4().hex
    try:
        return await asyncio.wait_for(
            temporal.execute_workflow(
                CampaignTestSendWorkflow.run,
                TestSendInput(
                    tenant=tenant,
                    campaign_id=str(cid),
                    send_id=send_id,
                    emails=body.emails,
                    variants=variants,
                    customer_id=body.customer_id,
                ),
                id=testsend_workflow_id(tenant, str(cid), send_id),
                task_queue=task_queue_for(tenant),
                execution_timeout=_TEST_SEND_TIMEOUT,
                search_attributes=campaign_search_attributes(tenant, str(cid)),
                static_summary=f"test send of {spec.name} · {tenant}",
            ),
            timeout=_TEST_SEND_TIMEOUT.total_seconds(),
        )
    except WorkflowFailureError as exc:
        cause = getattr(exc.cause, "cause", None) or exc.cause  # the activity's own error
        raise HTTPException(502, f"test send failed: {cause}") from exc
    except (RPCError, TimeoutError) as exc:
        raise HTTPException(503, f"test send did not complete: {exc}") from exc
