"""Optimisation advice on a campaign before it runs: the send-time preview of `send_time:
optimal` (core/optimisation/send_times.py) and ranked subject-line or SMS-body suggestions
(core/optimisation/suggestions.py). Neither changes the campaign."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, HTTPException

from api.deps import CampaignDep, ConfigDep, PoolDep, SecretsDep, TenantDep
from api.schemas import SendTimes, SendTimesRequest, Suggestions, SuggestRequest
from api.tenant_limits import SUGGESTIONS_PER_MINUTE, per_tenant_limit
from core.content.templating import TemplateError
from core.customers.segments import compile_segment
from core.infra.db import tenant_tx
from core.optimisation.send_times import Audience, OptimalSendTime, preview_send_times
from core.optimisation.suggestions import PROVIDER_MAX_SECONDS, ProviderFailure, ProviderRefused, suggest
from core.runs.policies import quiet_hours_for
from core.security.egress import EgressGuard
from core.security.secrets import SecretUnavailable
from core.tenants.config_schema import TenantConfig
from core.tenants.config_store import get_config

router = APIRouter(prefix="/v1/tenants/{tenant}/campaigns", tags=["optimisation"])

# Provider calls one tenant may have in flight in this API process; more answer 429.
PROVIDER_CALLS_PER_TENANT = 2
_provider_calls: dict[str, int] = {}


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
    api_key = None
    if engine == "provider":
        assert config.suggestions.provider is not None
        try:
            where = "suggestions.provider.api_key"
            api_key = await secrets.resolve(tenant, config.suggestions.provider.api_key, where)
        except SecretUnavailable as exc:
            raise TemplateError([str(exc)]) from None
    configs: dict[int | None, TenantConfig | None] = {}

    async def config_at(version: int | None) -> TenantConfig | None:
        if version not in configs:
            found = await get_config(pool, tenant, version)
            configs[version] = found[1] if found else None
        return configs[version]

    # A provider call holds no database connection (suggest reads the results in a transaction
    # of its own first) and a tenant has at most PROVIDER_CALLS_PER_TENANT of them at once here.
    if engine == "provider" and _provider_calls.get(tenant, 0) >= PROVIDER_CALLS_PER_TENANT:
        raise HTTPException(
            429, "suggestions provider: too many calls in flight for this tenant", headers={"Retry-After": "1"}
        )
    _provider_calls[tenant] = _provider_calls.get(tenant, 0) + (engine == "provider")
    try:
        async with EgressGuard.for_process(deadline_seconds=PROVIDER_MAX_SECONDS) as guard:
            record = await suggest(
                pool,
                tenant,
                campaign.id,
                spec,
                config,
                channel,
                engine=engine,
                limit=body.limit,
                config_at=config_at,
                guard=guard,
                api_key=api_key,
                variant=body.variant,
            )
    except ProviderRefused:
        raise TemplateError(["suggestions.provider.endpoint: refused (not a public https endpoint)"]) from None
    except ProviderFailure as exc:
        raise HTTPException(502, f"suggestions provider: {exc}") from None
    finally:
        if engine == "provider":
            _provider_calls[tenant] -= 1
            if not _provider_calls[tenant]:
                del _provider_calls[tenant]
    return Suggestions(**record.model_dump())
