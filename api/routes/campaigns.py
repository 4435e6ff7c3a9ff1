"""Campaigns: define who gets what, on which channels, in which variants; preview and
test-send them before any run."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException
from opentelemetry import trace
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from api.deps import CampaignDep, ConfigDep, PoolDep, SettingsDep, TemporalDep, TenantDep
from api.schemas import Campaign, CustomerRef, Preview, PreviewRequest, TestSendRequest
from core.campaigns import store as campaign_store
from core.campaigns.preview import preview_customer, preview_unsubscribe_url
from core.campaigns.spec import CampaignSpec, Variant, check_campaign
from core.campaigns.test_send_io import TestSendInput, TestSendResult
from core.content.check_pool import run_check
from core.content.rendering import render_message
from core.content.templating import TemplateError
from core.infra.db import tenant_tx
from core.infra.temporal import WORKFLOW_QUEUE, campaign_search_attributes, testsend_workflow_id
from core.runs import store as run_store
from core.tenants.config_schema import TenantConfig
from workflows.testsend import CampaignTestSendWorkflow

_TEST_SEND_TIMEOUT = timedelta(seconds=60)

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns", tags=["campaigns"])


@router.post("", status_code=201, response_model=Campaign)
async def create_campaign(tenant: TenantDep, config: ConfigDep, spec: CampaignSpec, pool: PoolDep) -> Campaign:
    """Store a campaign, checked against the tenant's config (channels, segment, templates)."""
    errors = await run_check("body", check_campaign, spec, config)
    if errors:
        raise TemplateError(errors)
    async with tenant_tx(pool, tenant) as conn:
        record = await campaign_store.create_campaign(conn, tenant, spec)
    trace.get_current_span().set_attributes({"pennant.tenant": tenant, "pennant.campaign": record.id})
    return Campaign.of(record)


@router.get("", response_model=list[Campaign])
async def list_campaigns(tenant: TenantDep, pool: PoolDep) -> list[Campaign]:
    """Every campaign of the tenant, archived ones included, newest first."""
    async with tenant_tx(pool, tenant) as conn:
        records = await campaign_store.list_campaigns(conn, tenant)
    return [Campaign.of(r) for r in records]


@router.get("/{campaign_id}", response_model=Campaign)
async def get_campaign(campaign: CampaignDep) -> Campaign:
    """One campaign."""
    return Campaign.of(campaign)


@router.put("/{campaign_id}", response_model=Campaign)
async def update_campaign(
    tenant: TenantDep, campaign: CampaignDep, config: ConfigDep, spec: CampaignSpec, pool: PoolDep
) -> Campaign:
    """Replace a campaign's definition, validated as on create. Refused (409) while one of its
    runs is scheduled, running or paused: those runs read the definition as they go."""
    async with tenant_tx(pool, tenant) as conn:
        # Locked until the update commits: an archive, or a run start (its row's foreign key
        # takes a share lock), waits rather than slipping between the checks and the write.
        locked = await campaign_store.get_campaign(conn, tenant, campaign.id, for_update=True)
        assert locked is not None  # campaigns are archived, never deleted
        if not locked.startable:
            raise HTTPException(409, f"campaign '{campaign.id}' is archived")
        errors = await run_check("body", check_campaign, spec, config)
        if errors:
            raise TemplateError(errors)
        active = await run_store.active_runs(conn, tenant, campaign.id)
        if active:
            runs = ", ".join(f"{r.id} ({r.status})" for r in active)
            raise HTTPException(
                409, f"campaign '{campaign.id}' has unfinished runs: {runs}; cancel them or let them finish first"
            )
        updated = await campaign_store.update_campaign(conn, tenant, campaign.id, spec)
    assert updated is not None  # locked above
    return Campaign.of(updated)


@router.delete("/{campaign_id}", response_model=Campaign)
async def archive_campaign(tenant: TenantDep, campaign: CampaignDep, pool: PoolDep) -> Campaign:
    """Archive: the campaign stays readable with its runs and ledger, but starts no new run.
    Runs already under way carry on (cancel them separately)."""
    async with tenant_tx(pool, tenant) as conn:
        archived = await campaign_store.archive_campaign(conn, tenant, campaign.id)
    assert archived is not None  # campaigns are archived, never deleted
    return Campaign.of(archived)


def _check_variant(spec: CampaignSpec, key: str | None) -> Variant:
    if key is None:
        return spec.variants[0]
    for variant in spec.variants:
        if variant.key == key:
            return variant
    keys = ", ".join(v.key for v in spec.variants)
    raise TemplateError([f"variant: unknown variant '{key}' (variants: {keys})"])


async def _customer(
    pool: PoolDep, tenant: str, spec: CampaignSpec, config: TenantConfig, customer_id: int | None
) -> dict[str, Any]:
    async with tenant_tx(pool, tenant) as conn:
        customer = await preview_customer(conn, tenant, spec, config, customer_id)
    if customer is None:
        raise HTTPException(404, f"customer {customer_id} not found")
    return customer


@router.post("/{campaign_id}:preview", response_model=Preview)
async def preview_campaign(
    tenant: TenantDep,
    campaign: CampaignDep,
    config: ConfigDep,
    pool: PoolDep,
    settings: SettingsDep,
    body: PreviewRequest | None = None,
) -> Preview:
    """Render a variant on a channel for a customer (default: the first member of the audience),
    exactly as a run would; template problems are a 422 naming the variant."""
    body = body or PreviewRequest()
    cid, spec = campaign.id, campaign.spec
    variant = _check_variant(spec, body.variant)
    channel = body.channel or spec.channels[0]
    if channel not in spec.channels:
        raise TemplateError(
            [f"channel: the campaign does not send on '{channel}' (channels: {', '.join(spec.channels)})"]
        )
    customer = await _customer(pool, tenant, spec, config, body.customer_id)
    rendered = await run_check(
        f"variants[{spec.variants.index(variant)}]",
        render_message,
        config,
        variant,
        channel,
        customer,
        campaign={"id": str(cid), "name": spec.name},
        unsubscribe_url=preview_unsubscribe_url(settings.public_base_url),
        path=f"variants[{spec.variants.index(variant)}]",
    )
    ref = CustomerRef(**{k: customer[k] for k in ("id", "first_name", "email")}) if customer["id"] else None
    return Preview(
        campaign_id=str(cid), variant=variant.key, channel=channel, customer=ref, **dataclasses.asdict(rendered)
    )


@router.post("/{campaign_id}:test-send", response_model=TestSendResult)
async def test_send_campaign(
    tenant: TenantDep,
    campaign: CampaignDep,
    config: ConfigDep,
    body: TestSendRequest,
    pool: PoolDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> TestSendResult:
    """Email the rendered campaign (every variant, or one) to seed addresses, filled with a
    sample customer's data and marked [TEST]. Sent by the tenant's worker through the same
    email adapter as runs; no run is created and the ledger is not touched."""
    cid, spec = campaign.id, campaign.spec
    if "email" not in spec.channels:
        raise TemplateError([f"channels: the campaign does not send email (channels: {', '.join(spec.channels)})"])
    variants = [_check_variant(spec, body.variant)] if body.variant else spec.variants
    customer = await _customer(pool, tenant, spec, config, body.customer_id)
    for variant in variants:  # template problems are a 422 here, not a failed workflow
        await run_check(
            f"variants[{spec.variants.index(variant)}]",
            render_message,
            config,
            variant,
            "email",
            customer,
            campaign={"id": str(cid), "name": spec.name},
            unsubscribe_url=preview_unsubscribe_url(settings.public_base_url),
            path=f"variants[{spec.variants.index(variant)}]",
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
                    variants=[v.key for v in variants],
                    customer_id=body.customer_id,
                ),
                id=testsend_workflow_id(tenant, str(cid), send_id),
                task_queue=WORKFLOW_QUEUE,
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
