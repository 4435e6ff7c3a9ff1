"""Tenants and their configuration: the control plane.

Creating and removing tenants is admin-only; a tenant key reads and edits only its own
config. Every saved change is a new immutable version; runs pin the version they start with.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from api.deps import PoolDep, PrincipalDep, TenantDep
from core.auth import key_prefix, new_key, store_key
from core.config_store import (
    ConfigError,
    config_diff,
    get_version,
    list_versions,
    parse_config,
    parse_config_yaml,
    remove_tenant,
    save_config,
)
from core.tenant_config import TenantConfig

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


class ConfigVersion(BaseModel):
    tenant: str
    version: int
    checksum: str
    author: str
    created_at: str
    current: bool
    config: dict[str, Any]


class SaveResult(BaseModel):
    tenant: str
    version: int
    created: bool


async def _config_from_request(request: Request) -> TenantConfig:
    """Parse a JSON or YAML body into a validated config; every problem as a ConfigError."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    if "yaml" in content_type:
        return parse_config_yaml(raw.decode("utf-8", errors="replace"), "body")
    try:
        data = json.loads(raw or b"null")
    except json.JSONDecodeError as exc:
        raise ConfigError([f"body: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    return parse_config(data)


def _version_body(tenant: str, row: dict[str, Any]) -> ConfigVersion:
    return ConfigVersion(
        tenant=tenant,
        version=row["version"],
        checksum=row["checksum"],
        author=row["author"],
        created_at=row["created_at"].isoformat(),
        current=row["current"],
        config=row["config"],
    )


def _author(principal: Any) -> str:
    return "admin" if principal.is_admin else f"tenant key ({principal.tenant})"


@router.get("")
async def list_tenants(pool: PoolDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT slug, display_name, current_version, created_at FROM tenants
           WHERE removed_at IS NULL AND ($1::text IS NULL OR slug = $1) ORDER BY slug""",
        principal.tenant,
    )
    return [{**dict(r), "task_queue": f"tenant-{r['slug']}"} for r in rows]


@router.post("", status_code=201, response_model=SaveResult, openapi_extra=_CONFIG_BODY)
async def create_tenant(request: Request, pool: PoolDep, principal: PrincipalDep) -> SaveResult:
    if not principal.is_admin:
        raise HTTPException(403, "creating a tenant needs an admin key")
    config = await _config_from_request(request)
    exists = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE slug = $1 AND removed_at IS NULL)", config.slug
    )
    if exists:
        raise HTTPException(409, f"tenant '{config.slug}' already exists; PUT its config to change it")
    version, created = await save_config(pool, config, _author(principal))
    return SaveResult(tenant=config.slug, version=version, created=created)


@router.post("/{tenant}/keys", status_code=201)
async def create_key(
    tenant: TenantDep, pool: PoolDep, principal: PrincipalDep, label: str = Query(default="", max_length=200)
) -> dict[str, str]:
    """Issue a new API key for the tenant. The key is shown once; only its hash is stored."""
    if not principal.is_admin:
        raise HTTPException(403, "issuing API keys needs an admin key")
    key = new_key(f"tk_{tenant.replace('-', '_')}")
    key_id = await store_key(pool, key, tenant, label)
    return {"id": key_id, "tenant": tenant, "key": key, "label": label, "prefix": key_prefix(key)}


@router.delete("/{tenant}", status_code=204)
async def delete_tenant(tenant: TenantDep, pool: PoolDep, principal: PrincipalDep) -> None:
    if not principal.is_admin:
        raise HTTPException(403, "removing a tenant needs an admin key")
    await remove_tenant(pool, tenant)


@router.get("/{tenant}/config", response_model=ConfigVersion)
async def get_current_config(tenant: TenantDep, pool: PoolDep) -> ConfigVersion:
    row = await get_version(pool, tenant)
    if row is None:
        raise HTTPException(404, f"tenant '{tenant}' has no configuration yet")
    return _version_body(tenant, row)


@router.put("/{tenant}/config", response_model=SaveResult, openapi_extra=_CONFIG_BODY)
async def put_config(tenant: TenantDep, request: Request, pool: PoolDep, principal: PrincipalDep) -> SaveResult:
    config = await _config_from_request(request)
    if config.slug != tenant:
        raise ConfigError([f"slug: '{config.slug}' does not match the tenant in the path ('{tenant}')"])
    version, created = await save_config(pool, config, _author(principal))
    return SaveResult(tenant=tenant, version=version, created=created)


@router.post("/{tenant}/config:validate", openapi_extra=_CONFIG_BODY)
async def validate_config(tenant: TenantDep, request: Request) -> dict[str, Any]:
    config = await _config_from_request(request)
    if config.slug != tenant:
        raise ConfigError([f"slug: '{config.slug}' does not match the tenant in the path ('{tenant}')"])
    return {"valid": True, "checksum": config.checksum()}


@router.get("/{tenant}/config/versions")
async def get_versions(tenant: TenantDep, pool: PoolDep) -> list[dict[str, Any]]:
    return [{**v, "created_at": v["created_at"].isoformat()} for v in await list_versions(pool, tenant)]


@router.get("/{tenant}/config/versions/{version}", response_model=ConfigVersion)
async def get_one_version(tenant: TenantDep, version: int, pool: PoolDep) -> ConfigVersion:
    row = await get_version(pool, tenant, version)
    if row is None:
        raise HTTPException(404, f"config version {version} of tenant '{tenant}' not found")
    return _version_body(tenant, row)


@router.get("/{tenant}/config/diff")
async def diff_versions(
    tenant: TenantDep,
    pool: PoolDep,
    from_version: int = Query(alias="from", ge=1),
    to_version: int | None = Query(default=None, alias="to", ge=1, description="default: current"),
) -> dict[str, Any]:
    old = await get_version(pool, tenant, from_version)
    new = await get_version(pool, tenant, to_version)
    for wanted, row in ((from_version, old), (to_version, new)):
        if row is None:
            raise HTTPException(404, f"config version {wanted} of tenant '{tenant}' not found")
    assert old is not None and new is not None
    diff = config_diff(old["config"], new["config"], f"v{old['version']}", f"v{new['version']}")
    return {"tenant": tenant, "from": old["version"], "to": new["version"], **diff}
