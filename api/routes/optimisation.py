"""Optimisation advice on a campaign before it runs: the send-time preview of `send_time:
optimal` (core/optimisation/send_times.py) and ranked subject-line or SMS-body suggestions
(core/optimisation/suggestions.py). Neither changes the campaign."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException

from api.deps import CampaignDep, ConfigDep, PoolDep, TenantDep
from api.schemas import SendTimes, SendTimesRequest, Suggestions, SuggestRequest
from core.content.templating import TemplateError
from core.customers.segments import compile_segment
from core.infra.db import tenant_tx
from core.optimisation.send_times import Audience, OptimalSendTime, preview_send_times
from core.optimisation.suggestions import ProviderFailure, suggest
from core.runs.policies import quiet_hours_for
from core.tenants.config_schema import TenantConfig
from core.tenants.config_store import get_config

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns", tags=["optimisation"])


@router.post("/{campaign_id}:send-times", response_model=SendTimes)
async def preview_campaign_send_times(
    tenant: TenantDep, campaign: CampaignDep, config: ConfigDep, pool: PoolDep, body: SendTimesRequest | None = None
) -> SendTimes:
    """How `send_time: optimal` would spread the campaign's audience over local hours and waves if a
    run started now, and how many recipients have no history and get the fallback time."""
    spec = campaign.spec
    opt = (body.send_time if body else None) or spec.send_time or OptimalSendTime()
    segment = {"segment": spec.segment} if isinstance(spec.segment, str) else spec.segment

    def audience(first: int) -> tuple[str, list[Any]]:
        compiled = compile_segment(segment, config.segments, first_param=first)
        return compiled.where, compiled.params

    segment_audience: Audience = audience
    async with tenant_tx(pool, tenant) as conn:
        preview = await preview_send_times(
            conn,
            tenant,
            segment_audience,
            opt,
            now=dt.datetime.now(dt.UTC),
            quiet=quiet_hours_for(config.policies.quiet_hours, list(spec.channels)),
            default_zone=config.brand.default_time_zone,
        )
    return SendTimes(campaign_id=campaign.id, **preview.model_dump())


@router.post("/{campaign_id}:suggest", response_model=Suggestions)
async def suggest_campaign_texts(
    tenant: TenantDep, campaign: CampaignDep, config: ConfigDep, pool: PoolDep, body: SuggestRequest | None = None
) -> Suggestions:
    """Ranked subject lines (email) or SMS bodies, each with its reason, learnt from the tenant's
    own results or asked of its configured provider; every one passes the template checks.
    Advisory: the campaign is not changed."""
    body = body or SuggestRequest()
    spec = campaign.spec
    channel = body.channel or ("email" if "email" in spec.channels else "sms")
    if channel not in spec.channels:
        raise TemplateError(
            [f"channel: the campaign does not send on '{channel}' (channels: {', '.join(spec.channels)})"]
        )
    if body.variant is not None and body.variant not in {v.key for v in spec.variants}:
        keys = ", ".join(v.key for v in spec.variants)
        raise TemplateError([f"variant: unknown variant '{body.variant}' (variants: {keys})"])
    engine = body.engine or ("provider" if config.suggestions.provider else "results")
    if engine == "provider" and config.suggestions.provider is None:
        raise TemplateError(["engine: the tenant has no suggestions.provider configured"])
    configs: dict[int | None, TenantConfig | None] = {}

    async def config_at(version: int | None) -> TenantConfig | None:
        if version not in configs:
            found = await get_config(pool, tenant, version)
            configs[version] = found[1] if found else None
        return configs[version]

    try:
        async with httpx.AsyncClient() as http, tenant_tx(pool, tenant) as conn:
            record = await suggest(
                conn,
                tenant,
                campaign.id,
                spec,
                config,
                channel,
                engine=engine,
                limit=body.limit,
                config_at=config_at,
                http=http,
                variant=body.variant,
            )
    except ProviderFailure as exc:
        raise HTTPException(502, f"suggestions provider: {exc}") from exc
    return Suggestions(**record.model_dump())
