"""A tenant's secrets: provider credentials, its LLM key, its webhook signing secret.

Write-only: a value goes in (PUT, or POST `:generate` for one the platform makes and shows once)
and never comes back out through the API; the list shows names, dates and a fingerprint. The
tenant's config refers to a secret as `secret:NAME`, and only the tenant's own sends resolve it.
A tenant key manages its own tenant's secrets; an admin key any tenant's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, Field, field_validator

from api.deps import PoolDep, PrincipalDep, SecretsDep, TenantDep
from api.tenant_limits import SECRET_WRITES_PER_MINUTE, per_tenant_limit
from core.infra.db import tenant_tx
from core.security.audit import record
from core.security.secrets import (
    MAX_SECRET_BYTES,
    SECRET_NAME_RE,
    Keyring,
    KeyringError,
    SecretInfo,
    delete_secret,
    generate_secret,
    list_secrets,
    put_secret,
    users_of,
)

router = APIRouter(prefix="/v1/tenants/{tenant}/secrets", tags=["secrets"])
# Writes only: listing stays unlimited.
_WRITE_LIMIT = [per_tenant_limit("secret writes", SECRET_WRITES_PER_MINUTE)]

SecretName = Annotated[str, Path(pattern=SECRET_NAME_RE.pattern, description="letters, digits and _; ≤ 64")]


class SecretValue(BaseModel):
    """The value to store. It is encrypted at once and never shown again."""

    value: str = Field(min_length=1, max_length=MAX_SECRET_BYTES)

    @field_validator("value")
    @classmethod
    def _bytes(cls, value: str) -> str:
        # max_length counts characters; the store's bound is on the encoded bytes.
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise ValueError(f"must be at most {MAX_SECRET_BYTES} bytes as UTF-8")
        return value


class GeneratedSecret(SecretInfo):
    """A platform-generated secret, with its value: shown this once, never again."""

    value: str


def _keyring(secrets: SecretsDep) -> Keyring:
    try:
        return secrets.keyring()
    except KeyringError as exc:
        raise HTTPException(503, f"secrets are not available on this platform: {exc}") from None


@router.get("", response_model=list[SecretInfo])
async def list_tenant_secrets(tenant: TenantDep, pool: PoolDep) -> list[SecretInfo]:
    """The tenant's secrets by name: fingerprints and dates, never values."""
    async with tenant_tx(pool, tenant) as conn:
        return await list_secrets(conn)


@router.put("/{name}", response_model=SecretInfo, dependencies=_WRITE_LIMIT, responses={201: {"model": SecretInfo}})
async def put_tenant_secret(
    tenant: TenantDep,
    name: SecretName,
    body: SecretValue,
    pool: PoolDep,
    secrets: SecretsDep,
    principal: PrincipalDep,
    response: Response,
) -> SecretInfo:
    """Store or replace the secret `name` (201 when new). Sends use the new value within seconds."""
    keyring = _keyring(secrets)
    async with tenant_tx(pool, tenant) as conn:
        info, created = await put_secret(conn, keyring, tenant, name, body.value)
        await record(conn, tenant, principal, "secret.set", name, fingerprint=info.fingerprint, created=created)
    secrets.forget(tenant, name)
    response.status_code = 201 if created else 200
    return info


@router.post("/{name}:generate", response_model=GeneratedSecret, status_code=201, dependencies=_WRITE_LIMIT)
async def generate_tenant_secret(
    tenant: TenantDep, name: SecretName, pool: PoolDep, secrets: SecretsDep, principal: PrincipalDep
) -> GeneratedSecret:
    """Make a random 256-bit secret (e.g. the webhook signing secret, `whsec_…`), store it as
    `name` (replacing any value) and show it this once: give it to the receiving system."""
    keyring = _keyring(secrets)
    async with tenant_tx(pool, tenant) as conn:
        info, value = await generate_secret(conn, keyring, tenant, name)
        await record(conn, tenant, principal, "secret.generate", name, fingerprint=info.fingerprint)
    secrets.forget(tenant, name)
    return GeneratedSecret(**info.model_dump(), value=value)


@router.delete("/{name}", status_code=204, dependencies=_WRITE_LIMIT)
async def delete_tenant_secret(
    tenant: TenantDep, name: SecretName, pool: PoolDep, secrets: SecretsDep, principal: PrincipalDep
) -> None:
    """Delete the secret `name`: 409 while the current config or a run in progress uses it."""
    async with tenant_tx(pool, tenant) as conn:
        users = await users_of(conn, name)
        if users:
            raise HTTPException(409, f"secret {name} is in use by {'; '.join(users[:5])}: change the config first")
        if not await delete_secret(conn, name):
            raise HTTPException(404, f"secret '{name}' not found")
        await record(conn, tenant, principal, "secret.delete", name)
    secrets.forget(tenant, name)
