"""The start gate on sending-domain records: with REQUIRE_SENDING_DOMAIN_RECORDS set, a campaign
that sends email is refused at start while its tenant's sending domain misses a record (or
publishes a wrong one), and the refusal names each. Off by default: a platform turns it on once
its tenants' domains are set up (the demo's and the tests' records are served by the loopback DNS
server, so they pass either way)."""

from __future__ import annotations

import asyncpg

from core.deliverability.dkim import ensure_key, sending_domain
from core.deliverability.domains import check_domain, required_records
from core.infra.settings import Settings
from core.security.secrets import SecretResolver
from core.tenants.config_schema import TenantConfig


async def start_refusal(
    pool: asyncpg.Pool, settings: Settings, config: TenantConfig, channels: list[str]
) -> str | None:
    """Why a campaign over `channels` may not start for `config`'s tenant; None when it may."""
    if not settings.require_sending_domain_records or "email" not in channels:
        return None
    domain = sending_domain(config)
    keys = await ensure_key(pool, SecretResolver(pool, settings.secrets_keyring), config.slug, domain)
    # Only the signing key must be published: a `next` one is on its way, a `retiring` one going.
    live = [k for k in keys if k.state == "active"]
    records = required_records(domain, live, settings.mail_spf_include, settings.mail_bounce_host)
    outcome = await check_domain(records, settings.dns_nameserver)
    if outcome.ok:
        return None
    return f"sending domain {domain} is not ready: " + "; ".join(outcome.missing) + f" (see sending-domains/{domain})"
