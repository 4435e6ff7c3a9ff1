"""API keys: list them (never the secret) and revoke them.

A tenant key lists and revokes its own tenant's keys; an admin key does so for any tenant
and, under `/v1/keys`, for every key including admin keys. A revoked key is refused (401)
from its very next request. Keys are issued by `POST /v1/tenants/{tenant}/keys` (admin).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import PoolDep, PrincipalDep, TenantDep, admin_only
from api.schemas import ApiKey
from core.security.audit import AuditEntry, entries, record_in
from core.tenants.config_schema import SLUG_RE
from core.tenants.keys import LastAdminKeyError, Principal, list_keys, revoke_key

router = APIRouter(tags=["keys"])


def _not_found(key_id: str) -> HTTPException:
    return HTTPException(404, f"key '{key_id}' not found")


@router.get("/v1/tenants/{tenant}/keys", response_model=list[ApiKey])
async def list_tenant_keys(tenant: TenantDep, pool: PoolDep) -> list[ApiKey]:
    """The tenant's keys, revoked ones included, oldest first."""
    return [ApiKey(**row) for row in await list_keys(pool, tenant)]


@router.delete("/v1/tenants/{tenant}/keys/{key_id}", status_code=204)
async def revoke_tenant_key(tenant: TenantDep, key_id: str, pool: PoolDep, principal: PrincipalDep) -> None:
    """Revoke one of the tenant's keys (a tenant key may revoke itself). Idempotent."""
    if not await revoke_key(pool, key_id, tenant):
        raise _not_found(key_id)
    await record_in(pool, tenant, principal, "key.revoke", key_id)


@router.get("/v1/tenants/{tenant}/audit", response_model=list[AuditEntry], tags=["audit"])
async def tenant_audit_trail(
    tenant: TenantDep,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(max_length=64, description="an action, or a prefix such as secret.")] = None,
) -> list[AuditEntry]:
    """Who changed the tenant's secrets, endpoints, credentials and keys, and when; newest first.
    Entries name what changed (a secret's name, a config path, a key id), never a value."""
    return await entries(pool, tenant, limit, action)


@router.get("/v1/keys", response_model=list[ApiKey])
async def list_all_keys(
    pool: PoolDep,
    _: Annotated[Principal, admin_only("listing every key", "a tenant key lists /v1/tenants/{tenant}/keys")],
    tenant: Annotated[str | None, Query(description="only this tenant's keys", max_length=63)] = None,
    admin: Annotated[bool, Query(description="only admin keys")] = False,
) -> list[ApiKey]:
    """Every key (admin only): admin keys and every tenant's, oldest first."""
    if tenant is not None and not SLUG_RE.match(tenant):
        return []
    rows = await list_keys(pool, tenant, every_tenant=tenant is None and not admin)
    return [ApiKey(**row) for row in rows]


@router.delete("/v1/keys/{key_id}", status_code=204)
async def revoke_any_key(
    key_id: str,
    pool: PoolDep,
    _: Annotated[Principal, admin_only("revoking any key", "a tenant key uses /v1/tenants/{tenant}/keys")],
) -> None:
    """Revoke any key (admin only), admin keys included, but never the last working admin key."""
    try:
        found = await revoke_key(pool, key_id, None, any_tenant=True)
    except LastAdminKeyError:
        raise HTTPException(409, "this is the last admin key that works; issue another before revoking it") from None
    if not found:
        raise _not_found(key_id)
