"""Tenants and their configuration: the control plane.

Creating and removing tenants is admin-only; a tenant key reads and edits only its own
config. Every saved change is a new immutable version; runs pin the version they start with.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from api.console.session import end_tenant_sessions
from api.deps import PoolDep, PrincipalDep, TemporalDep, TenantDep, admin_only, no_config
from api.input_guard import INT_MAX
from api.schemas import (
    ConfigDiff,
    ConfigValidation,
    ConfigVersion,
    ConfigVersionSummary,
    IssuedKey,
    SaveResult,
    TenantSummary,
)
from core.configs.checks import parse_config, parse_config_yaml
from core.content.check_pool import run_check
from core.security.audit import changed_boundary, record_in
from core.security.secrets import destroy_secrets
from core.tenants import config_store
from core.tenants.config_schema import SLUG_RE, TenantConfig
from core.tenants.config_store import (
    ConfigError,
    TenantRemovedError,
    config_diff,
    get_config,
    get_version,
    list_versions,
    remove_tenant,
    restore_tenant,
    save_config,
)
from core.tenants.keys import Principal, key_prefix, new_key, store_key
from core.tenants.removal import end_tenant_work

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])

# Documents the request body of the routes that read it by hand (JSON or YAML).
_CONFIG_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TenantConfig.model_json_schema()},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def _config_from_request(request: Request) -> TenantConfig:
    """Parse a JSON or YAML body into a validated config; every problem as a ConfigError."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    # Parsing compiles and renders the tenant's templates: in the check pool, off the event
    # loop, under a deadline and a memory limit (core/content/check_pool.py).
    if "yaml" in content_type:
        return await run_check("body", parse_config_yaml, raw.decode("utf-8", errors="replace"), "body")
    try:
        data = json.loads(raw or b"null")
    except json.JSONDecodeError as exc:
        raise ConfigError([f"body: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    return await run_check("body", parse_config, data)


def _author(principal: Principal) -> str:
    return "admin" if principal.is_admin else f"tenant key ({principal.tenant})"


@router.get("", response_model=list[TenantSummary])
async def list_tenants(pool: PoolDep, principal: PrincipalDep) -> list[TenantSummary]:
    """The tenants the caller may see (a tenant key: its own), by slug."""
    return [TenantSummary.of(r) for r in await config_store.list_tenants(pool, principal.tenant)]


@router.post("", status_code=201, response_model=SaveResult, openapi_extra=_CONFIG_BODY)
async def create_tenant(
    request: Request, pool: PoolDep, principal: Annotated[Principal, admin_only("creating a tenant")]
) -> SaveResult:
    """Create a tenant from its first config (JSON or YAML); 409 when the slug is taken."""
    config = await _config_from_request(request)
    exists = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE slug = $1 AND removed_at IS NULL)", config.slug
    )
    if exists:
        raise HTTPException(409, f"tenant '{config.slug}' already exists; PUT its config to change it")
    try:
        version, created = await save_config(pool, config, _author(principal))
    except TenantRemovedError as exc:  # save_config is where a removed slug is refused
        raise HTTPException(409, exc.errors[0].removeprefix("slug: ")) from exc
    await record_in(pool, config.slug, principal, "tenant.create", config.slug, version=version,
                    boundary=changed_boundary(None, config))  # fmt: skip
    return SaveResult(tenant=config.slug, version=version, created=created)


@router.post("/{tenant}/keys", status_code=201, response_model=IssuedKey)
async def create_key(
    tenant: TenantDep,
    pool: PoolDep,
    principal: Annotated[Principal, admin_only("issuing API keys")],
    label: str = Query(default="", max_length=200),
) -> IssuedKey:
    """Issue a new API key for the tenant. The key is shown once; only its hash is stored."""
    key = new_key(f"tk_{tenant.replace('-', '_')}")
    key_id = await store_key(pool, key, tenant, label)
    await record_in(pool, tenant, principal, "key.issue", key_id, label=label)
    return IssuedKey(id=key_id, tenant=tenant, key=key, label=label, prefix=key_prefix(key))


@router.delete("/{tenant}", status_code=204)
async def delete_tenant(
    tenant: TenantDep,
    pool: PoolDep,
    temporal: TemporalDep,
    principal: Annotated[Principal, admin_only("removing a tenant")],
) -> None:
    """Remove a tenant: its API and source keys are revoked and its console sessions ended, its schedules deleted,
    its open runs cancelled and its queue dropped; its secrets are destroyed; its data and config
    versions stay. Its slug cannot be created again, only restored."""
    await remove_tenant(pool, tenant)
    # Revoking its keys already refuses their sessions; ending the rows says so everywhere.
    await end_tenant_sessions(pool, tenant)
    destroyed = await destroy_secrets(pool, tenant)
    schedules, workflows = await end_tenant_work(temporal, tenant)
    await record_in(pool, tenant, principal, "tenant.remove", tenant, secrets_destroyed=destroyed,
                    schedules_deleted=schedules, workflows_cancelled=workflows)  # fmt: skip


@router.post("/{tenant}:restore", status_code=204)
async def restore_removed_tenant(
    tenant: Annotated[str, Path(pattern=SLUG_RE.pattern)],
    pool: PoolDep,
    principal: Annotated[Principal, admin_only("restoring a tenant")],
) -> None:
    """Bring back a removed tenant with its data and config history; its old keys stay revoked
    and its secrets stay destroyed (issue and store new ones). 404 when no removed tenant has
    that slug."""
    if not await restore_tenant(pool, tenant):
        raise HTTPException(404, f"no removed tenant '{tenant}'")
    await record_in(pool, tenant, principal, "tenant.restore", tenant)


@router.get("/{tenant}/config", response_model=ConfigVersion)
async def get_current_config(tenant: TenantDep, pool: PoolDep) -> ConfigVersion:
    """The tenant's current config with its version metadata."""
    row = await get_version(pool, tenant)
    if row is None:
        raise no_config(tenant)
    return ConfigVersion.of({**row, "tenant": tenant})


@router.put("/{tenant}/config", response_model=SaveResult, openapi_extra=_CONFIG_BODY)
async def put_config(tenant: TenantDep, request: Request, pool: PoolDep, principal: PrincipalDep) -> SaveResult:
    """Save a new config version (JSON or YAML), unless it equals the current one."""
    config = await _config_from_request(request)
    if config.slug != tenant:
        raise ConfigError([f"slug: '{config.slug}' does not match the tenant in the path ('{tenant}')"])
    before = await get_config(pool, tenant)
    version, created = await save_config(pool, config, _author(principal))
    if created:
        changed = changed_boundary(before[1] if before else None, config)
        await record_in(pool, tenant, principal, "config.save", f"version {version}", version=version, boundary=changed)
    return SaveResult(tenant=tenant, version=version, created=created)


@router.post("/{tenant}/config:validate", response_model=ConfigValidation, openapi_extra=_CONFIG_BODY)
async def validate_config(tenant: TenantDep, request: Request) -> ConfigValidation:
    """Check a config as a save would, without saving it."""
    config = await _config_from_request(request)
    if config.slug != tenant:
        raise ConfigError([f"slug: '{config.slug}' does not match the tenant in the path ('{tenant}')"])
    return ConfigValidation(valid=True, checksum=config.checksum())


@router.get("/{tenant}/config/versions", response_model=list[ConfigVersionSummary])
async def get_versions(tenant: TenantDep, pool: PoolDep) -> list[ConfigVersionSummary]:
    """Every stored version of the tenant's config, newest first, without the bodies."""
    return [ConfigVersionSummary.of(v) for v in await list_versions(pool, tenant)]


@router.get("/{tenant}/config/versions/{version}", response_model=ConfigVersion)
async def get_one_version(
    tenant: TenantDep, version: Annotated[int, Path(ge=1, le=INT_MAX)], pool: PoolDep
) -> ConfigVersion:
    """One stored version of the tenant's config."""
    row = await get_version(pool, tenant, version)
    if row is None:
        raise HTTPException(404, f"config version {version} of tenant '{tenant}' not found")
    return ConfigVersion.of({**row, "tenant": tenant})


@router.get("/{tenant}/config/diff", response_model=ConfigDiff)
async def diff_versions(
    tenant: TenantDep,
    pool: PoolDep,
    from_version: int = Query(alias="from", ge=1, le=INT_MAX),
    to_version: int | None = Query(default=None, alias="to", ge=1, le=INT_MAX, description="default: current"),
) -> ConfigDiff:
    """What changed between two versions (`to` defaults to the current one)."""
    old = await get_version(pool, tenant, from_version)
    new = await get_version(pool, tenant, to_version)
    for wanted, row in ((from_version, old), (to_version, new)):
        if row is None:
            raise HTTPException(404, f"config version {wanted} of tenant '{tenant}' not found")
    assert old is not None and new is not None
    diff = config_diff(old["config"], new["config"], f"v{old['version']}", f"v{new['version']}")
    return ConfigDiff(tenant=tenant, from_version=old["version"], to_version=new["version"], **diff)
