"""Optimisation advice on a campaign before it runs, as the API and the console both use it:
the send-time preview of `send_time: optimal` and ranked subject-line or SMS-body
suggestions. Neither changes the campaign. Refusals are core.common errors, never HTTP."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import asyncpg

from core.campaigns.send_time import OptimalSendTime
from core.campaigns.service import campaign_channel, campaign_variant
from core.campaigns.store import CampaignRecord
from core.common.refusals import TooMany, UpstreamFailed
from core.common.validation import InvalidInput
from core.customers.segments import compile_segment
from core.infra.db import tenant_tx
from core.optimisation.send_times import Audience, SendTimePreview, preview_send_times
from core.optimisation.suggestions import (
    PROVIDER_MAX_SECONDS,
    ProviderFailure,
    ProviderRefused,
    SuggestionsRecord,
    suggest,
)
from core.runs.policies import quiet_hours_for
from core.security.egress import EgressGuard
from core.security.secrets import SecretResolver, SecretUnavailable
from core.tenants.config_schema import TenantConfig
from core.tenants.config_store import ConfigError, get_config

# Provider calls one tenant may have in flight in this process; more are refused (TooMany).
PROVIDER_CALLS_PER_TENANT = 2
_provider_calls: dict[str, int] = {}


class NotConfigured(InvalidInput):
    """The request needs something the tenant has not configured (a provider, a secret)."""


async def preview_campaign_send_times(
    pool: asyncpg.Pool,
    tenant: str,
    campaign: CampaignRecord,
    config: TenantConfig,
    send_time: OptimalSendTime | None = None,
) -> SendTimePreview:
    """How `send_time` (default: the campaign's, else optimal's defaults) would spread the
    campaign's audience over local hours and waves if a run started now."""
    spec = campaign.spec
    opt = send_time or spec.send_time or OptimalSendTime()
    segment = {"segment": spec.segment} if isinstance(spec.segment, str) else spec.segment

    def audience(first: int) -> tuple[str, list[Any]]:
        compiled = compile_segment(segment, config.segments, first_param=first)
        return compiled.where, compiled.params

    segment_audience: Audience = audience
    async with tenant_tx(pool, tenant) as conn:
        return await preview_send_times(
            conn,
            tenant,
            segment_audience,
            opt,
            now=dt.datetime.now(dt.UTC),
            quiet=quiet_hours_for(config.policies.quiet_hours, list(spec.channels)),
            default_zone=config.brand.default_time_zone,
        )


async def suggest_campaign_texts(
    pool: asyncpg.Pool,
    secrets: SecretResolver,
    tenant: str,
    campaign: CampaignRecord,
    config: TenantConfig,
    *,
    channel: Literal["email", "sms"] | None = None,
    variant: str | None = None,
    engine: Literal["results", "provider"] | None = None,
    limit: int = 5,
) -> SuggestionsRecord:
    """Ranked subject lines (email) or SMS bodies, each with its reason, learnt from the tenant's
    own results or asked of its configured provider; every one passes the template checks."""
    spec = campaign.spec
    on: Literal["email", "sms"] = channel or ("email" if "email" in spec.channels else "sms")
    campaign_channel(spec, on)
    if variant is not None:
        campaign_variant(spec, variant)
    engine = engine or ("provider" if config.suggestions.provider else "results")
    if engine == "provider" and config.suggestions.provider is None:
        raise NotConfigured(["engine: the tenant has no suggestions.provider configured"])
    api_key = None
    if engine == "provider":
        assert config.suggestions.provider is not None
        try:
            where = "suggestions.provider.api_key"
            api_key = await secrets.resolve(tenant, config.suggestions.provider.api_key, where)
        except SecretUnavailable as exc:
            raise NotConfigured([str(exc)]) from None
    configs: dict[int | None, TenantConfig | None] = {}

    async def config_at(version: int | None) -> TenantConfig | None:
        if version not in configs:
            found = await get_config(pool, tenant, version)
            configs[version] = found[1] if found else None
        return configs[version]

    # A provider call holds no database connection (suggest reads the results in a transaction
    # of its own first) and a tenant has at most PROVIDER_CALLS_PER_TENANT of them at once here.
    if engine == "provider" and _provider_calls.get(tenant, 0) >= PROVIDER_CALLS_PER_TENANT:
        raise TooMany("suggestions provider: too many calls in flight for this tenant", retry_after=1)
    _provider_calls[tenant] = _provider_calls.get(tenant, 0) + (engine == "provider")
    try:
        async with EgressGuard.for_process(deadline_seconds=PROVIDER_MAX_SECONDS) as guard:
            return await suggest(
                pool,
                tenant,
                campaign.id,
                spec,
                config,
                on,
                engine=engine,
                limit=limit,
                config_at=config_at,
                guard=guard,
                api_key=api_key,
                variant=variant,
            )
    except ProviderRefused:
        raise ConfigError(["suggestions.provider.endpoint: refused (not a public https endpoint)"]) from None
    except ProviderFailure as exc:
        raise UpstreamFailed(f"suggestions provider: {exc}") from None
    finally:
        if engine == "provider":
            _provider_calls[tenant] -= 1
            if not _provider_calls[tenant]:
                del _provider_calls[tenant]
