"""Campaigns: define who gets what, on which channels, in which variants; preview and
test-send them before any run."""

from __future__ import annotations

from fastapi import APIRouter
from opentelemetry import trace

from api.deps import CampaignDep, ConfigDep, PoolDep, SettingsDep, TemporalDep, TenantDep
from api.schemas import Campaign, Preview, PreviewRequest, TestSendRequest
from core.campaigns import service
from core.campaigns.spec import CampaignSpec
from core.campaigns.test_send_io import TestSendResult

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns", tags=["campaigns"])


@router.post("", status_code=201, response_model=Campaign)
async def create_campaign(tenant: TenantDep, config: ConfigDep, spec: CampaignSpec, pool: PoolDep) -> Campaign:
    """Store a campaign, checked against the tenant's config (channels, segment, templates)."""
    record = await service.create_campaign(pool, tenant, config, spec)
    trace.get_current_span().set_attributes({"pennant.tenant": tenant, "pennant.campaign": record.id})
    return Campaign.of(record)


@router.get("", response_model=list[Campaign])
async def list_campaigns(tenant: TenantDep, pool: PoolDep) -> list[Campaign]:
    """Every campaign of the tenant, archived ones included, newest first."""
    return [Campaign.of(r) for r in await service.list_campaigns(pool, tenant)]


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
    return Campaign.of(await service.update_campaign(pool, tenant, campaign.id, config, spec))


@router.delete("/{campaign_id}", response_model=Campaign)
async def archive_campaign(tenant: TenantDep, campaign: CampaignDep, pool: PoolDep) -> Campaign:
    """Archive: the campaign stays readable with its runs and ledger, but starts no new run.
    Runs already under way carry on (cancel them separately)."""
    return Campaign.of(await service.archive_campaign(pool, tenant, campaign.id))


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
    found = await service.preview_campaign(
        pool, tenant, campaign, config, settings.public_base_url,
        variant=body.variant, channel=body.channel, customer_id=body.customer_id,
    )  # fmt: skip
    return Preview.of(str(campaign.id), found)


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
    return await service.test_send_campaign(
        pool, temporal, tenant, campaign, config, settings.public_base_url, body.emails,
        variant=body.variant, customer_id=body.customer_id,
    )  # fmt: skip
