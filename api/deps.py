"""FastAPI dependencies: settings, pool, Temporal client, the caller, tenant scoping, and what
routes share: admin-only access, the tenant's config, the campaign or run in the path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from core.campaigns.store import CampaignRecord, get_campaign
from core.infra.db import tenant_tx
from core.infra.settings import Settings
from core.runs.store import RunRecord, get_run
from core.security.secrets import SecretResolver
from core.tenants.config_schema import SLUG_RE, TenantConfig
from core.tenants.config_store import get_config
from core.tenants.keys import Principal, lookup_key

_bearer = HTTPBearer(auto_error=False)
T = TypeVar("T")


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings  # app.state is untyped
    return settings


def get_pool(request: Request) -> asyncpg.Pool:
    """The app's PostgreSQL pool (opened by the lifespan)."""
    pool: asyncpg.Pool = request.app.state.pool  # app.state is untyped
    return pool


def get_temporal(request: Request) -> Client:
    """The app's Temporal client (connected by the lifespan)."""
    temporal: Client = request.app.state.temporal  # app.state is untyped
    return temporal


def get_secrets(request: Request) -> SecretResolver:
    """The app's resolver of tenants' `secret:` references (one per app: it caches briefly)."""
    state = request.app.state
    if getattr(state, "secrets", None) is None:
        state.secrets = SecretResolver(state.pool, state.settings.secrets_keyring)
    secrets: SecretResolver = state.secrets
    return secrets


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
SecretsDep = Annotated[SecretResolver, Depends(get_secrets)]
TemporalDep = Annotated[Client, Depends(get_temporal)]


async def get_principal(
    request: Request, pool: PoolDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise HTTPException(
            401, "missing API key: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    principal = await lookup_key(pool, credentials.credentials)
    if principal is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    # Tells the auth-failure guard (api/auth_limit.py) this key is genuine.
    request.state.authenticated = True
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


def admin_only(action: str, otherwise: str = "") -> Any:
    """A dependency for `Annotated[Principal, admin_only("doing x")]`: the caller, who must hold an
    admin key (else 403 "doing x needs an admin key", then `otherwise` if given)."""
    refusal = f"{action} needs an admin key" + (f"; {otherwise}" if otherwise else "")

    async def require_admin(principal: PrincipalDep) -> Principal:
        if not principal.is_admin:
            raise HTTPException(403, refusal)
        return principal

    return Depends(require_admin)


def no_config(tenant: str) -> HTTPException:
    """The one answer, on every route, for a tenant that has no configuration yet."""
    return HTTPException(409, f"tenant '{tenant}' has no configuration yet")


async def get_tenant_config(tenant: TenantDep, pool: PoolDep) -> TenantConfig:
    """The tenant's current configuration; 409 when it has none yet."""
    found = await get_config(pool, tenant)
    if found is None:
        raise no_config(tenant)
    return found[1]


ConfigDep = Annotated[TenantConfig, Depends(get_tenant_config)]


async def _found(
    pool: asyncpg.Pool, tenant: str, what: str, key: str, load: Callable[[Any, str, str], Awaitable[T | None]]
) -> T:
    """`load(conn, tenant, key)` in a tenant transaction; 404 naming `what` and `key` on None."""
    async with tenant_tx(pool, tenant) as conn:
        found = await load(conn, tenant, key)
    if found is None:
        raise HTTPException(404, f"{what} '{key}' not found")
    return found


async def get_path_campaign(
    tenant: TenantDep, pool: PoolDep, campaign_id: Annotated[str, Path(description="campaign id")]
) -> CampaignRecord:
    """The path's campaign (archived ones too); 404 naming the id when the tenant has no such campaign."""
    return await _found(pool, tenant, "campaign", campaign_id, get_campaign)


CampaignDep = Annotated[CampaignRecord, Depends(get_path_campaign)]


async def get_path_run(
    tenant: TenantDep, pool: PoolDep, run_id: Annotated[str, Path(description="run id")]
) -> RunRecord:
    """The path's run; 404 naming the id when the tenant has no such run."""
    return await _found(pool, tenant, "run", run_id, get_run)


RunDep = Annotated[RunRecord, Depends(get_path_run)]
