"""A tenant's sending domains: the DNS records each needs (DKIM per live selector, SPF, DMARC,
bounce), a check that looks them up, and the DKIM key rotation (core/deliverability).

The sending domain is the tenant's From domain (`brand.from_email`); its DKIM key is generated
the first time it is listed here or mail is sent from it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import ConfigDep, PoolDep, PrincipalDep, SecretsDep, SettingsDep, TenantDep
from api.tenant_limits import SECRET_WRITES_PER_MINUTE, per_tenant_limit
from core.deliverability.dkim import ensure_key, rotate, sending_domain
from core.deliverability.domains import DomainCheck, DomainRecords, check_domain, required_records
from core.infra.db import tenant_tx
from core.security.audit import record
from core.security.secrets import KeyringError

router = APIRouter(prefix="/v1/tenants/{tenant}/sending-domains", tags=["sending domains"])
# A check is four lookups at the platform's name server; a rotation writes a secret.
DOMAIN_CHECKS_PER_MINUTE = 30
_CHECK_LIMIT = [per_tenant_limit("sending-domain checks", DOMAIN_CHECKS_PER_MINUTE)]
_ROTATE_LIMIT = [per_tenant_limit("secret writes", SECRET_WRITES_PER_MINUTE)]

Domain = Annotated[str, Path(max_length=253, description="a sending domain of the tenant (its From domain)")]


def _domain_of(config: ConfigDep, domain: str) -> str:
    """`domain` when it is the tenant's sending domain; 404 otherwise (never another tenant's)."""
    own = sending_domain(config)
    if domain.lower().rstrip(".") != own:
        raise HTTPException(404, f"'{domain[:253]}' is not a sending domain of this tenant (its From domain is {own})")
    return own


async def _records(
    tenant: str, domain: str, pool: PoolDep, secrets: SecretsDep, settings: SettingsDep
) -> DomainRecords:
    try:
        keys = await ensure_key(pool, secrets, tenant, domain)
    except KeyringError as exc:
        raise HTTPException(503, f"secrets are not available on this platform: {exc}") from None
    return required_records(domain, keys, settings.mail_spf_include, settings.mail_bounce_host)


@router.get("", response_model=list[DomainRecords])
async def list_sending_domains(
    tenant: TenantDep, config: ConfigDep, pool: PoolDep, secrets: SecretsDep, settings: SettingsDep
) -> list[DomainRecords]:
    """The tenant's sending domains, each with the DNS records it needs."""
    return [await _records(tenant, sending_domain(config), pool, secrets, settings)]


@router.get("/{domain}", response_model=DomainRecords)
async def get_sending_domain(
    tenant: TenantDep, domain: Domain, config: ConfigDep, pool: PoolDep, secrets: SecretsDep, settings: SettingsDep
) -> DomainRecords:
    """The DNS records `domain` needs: DKIM TXT per live selector, SPF include, DMARC, bounce CNAME."""
    return await _records(tenant, _domain_of(config, domain), pool, secrets, settings)


@router.post("/{domain}:check", response_model=DomainCheck, dependencies=_CHECK_LIMIT)
async def check_sending_domain(
    tenant: TenantDep, domain: Domain, config: ConfigDep, pool: PoolDep, secrets: SecretsDep, settings: SettingsDep
) -> DomainCheck:
    """Look each record up (at DNS_NAMESERVER) and report it present, missing or wrong."""
    records = await _records(tenant, _domain_of(config, domain), pool, secrets, settings)
    return await check_domain(records, settings.dns_nameserver)


@router.post("/{domain}:rotate-dkim", response_model=DomainRecords, dependencies=_ROTATE_LIMIT)
async def rotate_dkim(
    tenant: TenantDep,
    domain: Domain,
    config: ConfigDep,
    pool: PoolDep,
    secrets: SecretsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> DomainRecords:
    """One step of a DKIM key rotation: the first adds a `next` selector to publish; the second
    (once DNS has it: `:check`) makes it the signing one, the old one kept published as
    `retiring` until the next rotation. The records after the step."""
    own = _domain_of(config, domain)
    try:
        keys = await rotate(pool, secrets, tenant, own)
    except KeyringError as exc:
        raise HTTPException(503, f"secrets are not available on this platform: {exc}") from None
    async with tenant_tx(pool, tenant) as conn:
        await record(conn, tenant, principal, "dkim.rotate", own, selectors={k.selector: k.state for k in keys})
    return required_records(own, keys, settings.mail_spf_include, settings.mail_bounce_host)
