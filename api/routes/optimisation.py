"""Optimisation advice on a campaign before it runs: the send-time preview of `send_time:
optimal` (core/optimisation/send_times.py) and ranked subject-line or SMS-body suggestions
(core/optimisation/suggestions.py). Neither changes the campaign."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CampaignDep, ConfigDep, PoolDep, SecretsDep, TenantDep
from api.schemas import SendTimes, SendTimesRequest, Suggestions, SuggestRequest
from api.tenant_limits import SUGGESTIONS_PER_MINUTE, per_tenant_limit
from core.optimisation import service

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns", tags=["optimisation"])


@router.post("/{campaign_id}:send-times", response_model=SendTimes)
async def preview_campaign_send_times(
    tenant: TenantDep, campaign: CampaignDep, config: ConfigDep, pool: PoolDep, body: SendTimesRequest | None = None
) -> SendTimes:
    """How `send_time: optimal` would spread the campaign's audience over local hours and waves if a
    run started now, and how many recipients have no history and get the fallback time."""
    send_time = body.send_time if body else None
    preview = await service.preview_campaign_send_times(pool, tenant, campaign, config, send_time)
    return SendTimes(campaign_id=campaign.id, **preview.model_dump())


@router.post(
    "/{campaign_id}:suggest",
    response_model=Suggestions,
    dependencies=[per_tenant_limit("suggestions", SUGGESTIONS_PER_MINUTE)],
)
async def suggest_campaign_texts(
    tenant: TenantDep,
    campaign: CampaignDep,
    config: ConfigDep,
    pool: PoolDep,
    secrets: SecretsDep,
    body: SuggestRequest | None = None,
) -> Suggestions:
    """Ranked subject lines (email) or SMS bodies, each with its reason, learnt from the tenant's
    own results or asked of its configured provider; every one passes the template checks.
    Advisory: the campaign is not changed."""
    body = body or SuggestRequest()
    record = await service.suggest_campaign_texts(
        pool, secrets, tenant, campaign, config,
        channel=body.channel, variant=body.variant, engine=body.engine, limit=body.limit,
    )  # fmt: skip
    return Suggestions(**record.model_dump())
