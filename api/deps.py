"""FastAPI dependencies: settings, pool, Temporal client, the caller, and tenant scoping."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from core.auth import Principal, lookup_key
from core.settings import Settings
from core.tenant_config import SLUG_RE

_bearer = HTTPBearer(auto_error=False)


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
TemporalDep = Annotated[Client, Depends(get_temporal)]


async def get_principal(
    pool: PoolDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise HTTPException(
            401, "missing API key: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    principal = await lookup_key(pool, credentials.credentials)
    if principal is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_tenant(
    pool: PoolDep, principal: PrincipalDep, tenant: Annotated[str, Path(description="tenant slug")]
) -> str:
    """The path's tenant, if it exists and the caller may see it. Another tenant's resources
    are indistinguishable from missing ones (404), so keys cannot probe for tenants."""
    missing = HTTPException(404, f"tenant '{tenant}' not found")
    if not SLUG_RE.match(tenant) or not principal.can_access(tenant):
        raise missing
    exists = await pool.fetchval("SELECT EXISTS (SELECT 1 FROM tenants WHERE slug = $1 AND removed_at IS NULL)", tenant)
    if not exists:
        raise missing
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]
