"""Tenant configuration: store immutable versions in PostgreSQL, read them back, diff them.
Parsing and checking a config in full (templates and segments too) is core/configs/checks.py,
above the content and customers packages whose checks it runs."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import yaml

from core.common.validation import InvalidInput
from core.infra.db import enter_tenant, tenant_tx
from core.infra.metrics import CONFIG_VERSIONS_SAVED
from core.tenants.config_schema import (
    Execution,
    TenantConfig,
    config_checksum,
    endpoint_problems,
)

# Workers LISTEN on this channel to add and drop tenant queues without a restart.
TENANTS_CHANNEL = "pennant_tenants"


class ConfigError(InvalidInput):
    """An invalid configuration; `errors` lists every `path: reason` found, not just the first."""


class TenantRemovedError(ConfigError):
    """The slug belongs to a removed tenant: only an admin's restore brings it back (the API
    answers 409; `pennant tenants sync` prints it like any config error)."""

    def __init__(self, slug: str):
        super().__init__([f"slug: tenant '{slug}' was removed; an admin may POST /v1/tenants/{slug}:restore"])


async def save_config(conn: asyncpg.Connection | asyncpg.Pool, config: TenantConfig, author: str) -> tuple[int, bool]:
    """Store `config` as the tenant's next version unless it equals the current one.

    Returns (version, created). Creates the tenant row on first save; notifies workers.
    """
    # Here, in the saving process, not in parse_config (which runs in the check pool's children):
    # the operator's EGRESS_ALLOW is this process's.
    unreachable = endpoint_problems(config)
    if unreachable:
        raise ConfigError(unreachable)
    data = config.model_dump(mode="json")
    checksum = config_checksum(data)
    async with _connection(conn) as c, c.transaction():
        # A removed tenant is not revived by saving its slug's config (that brought back its
        # keys, customers and history to whoever created the slug next): restore_tenant does.
        live = await c.fetchval(
            """INSERT INTO tenants (slug, display_name) VALUES ($1, $2)
               ON CONFLICT (slug) DO UPDATE SET display_name = EXCLUDED.display_name
                   WHERE tenants.removed_at IS NULL
               RETURNING true""",
            config.slug,
            config.display_name,
        )
        if not live:
            raise TenantRemovedError(config.slug)
        # The versions are the tenant's rows (row-level security); the tenants row is the
        # platform's, so this transaction enters the tenant without leaving the login role.
        await enter_tenant(c, config.slug)
        current = await c.fetchrow(
            """SELECT v.version, v.checksum FROM tenants t
               JOIN tenant_config_versions v ON v.tenant_id = t.slug AND v.version = t.current_version
               WHERE t.slug = $1 FOR UPDATE OF t""",
            config.slug,
        )
        if current is not None and current["checksum"] == checksum:
            return current["version"], False
        version = (current["version"] if current else 0) + 1
        await c.execute(
            """INSERT INTO tenant_config_versions (tenant_id, version, config, checksum, author)
               VALUES ($1, $2, $3, $4, $5)""",
            config.slug,
            version,
            data,
            checksum,
            author,
        )
        await c.execute("UPDATE tenants SET current_version = $2 WHERE slug = $1", config.slug, version)
        await c.execute("SELECT pg_notify($1, $2)", TENANTS_CHANNEL, json.dumps({"tenant": config.slug}))
    CONFIG_VERSIONS_SAVED.labels(config.slug).inc()
    return version, True


async def get_config(pool: asyncpg.Pool, tenant: str, version: int | None = None) -> tuple[int, TenantConfig] | None:
    """The tenant's current config (or a given version), or None when there is none."""
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow(
            """SELECT v.version, v.config FROM tenants t
               JOIN tenant_config_versions v
                 ON v.tenant_id = t.slug AND v.version = coalesce($2, t.current_version)
               WHERE t.slug = $1 AND t.removed_at IS NULL""",
            tenant,
            version,
        )
    if row is None:
        return None
    return row["version"], TenantConfig.model_validate(row["config"])


async def list_tenants(pool: asyncpg.Pool, only: str | None = None) -> list[dict[str, Any]]:
    """The tenants not removed (slug, display_name, current_version, created_at) by slug; only
    `only` when given (a tenant key sees its own)."""
    rows = await pool.fetch(
        """SELECT slug, display_name, current_version, created_at FROM tenants
           WHERE removed_at IS NULL AND ($1::text IS NULL OR slug = $1) ORDER BY slug""",
        only,
    )
    return [dict(r) for r in rows]


async def active_tenants(pool: asyncpg.Pool) -> dict[str, Execution]:
    """Every active tenant with the execution settings of its current config, in one query
    (across tenants: a function of the owner role, migration 048)."""
    rows = await pool.fetch("SELECT slug, execution FROM pennant_active_tenants()")
    return {r["slug"]: Execution.model_validate(r["execution"] or {}) for r in rows}


class _connection:
    """Use a given connection, or borrow one from a pool for the block."""

    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool):
        self._given = conn
        self._ctx: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        if isinstance(self._given, asyncpg.Pool):
            self._ctx = self._given.acquire()
            conn: asyncpg.Connection = await self._ctx.__aenter__()
            return conn
        return self._given

    async def __aexit__(self, *exc: object) -> None:
        if self._ctx is not None:
            await self._ctx.__aexit__(*exc)


async def list_versions(pool: asyncpg.Pool, tenant: str) -> list[dict[str, Any]]:
    """Every stored version of a tenant's config, newest first (without the bodies)."""
    async with tenant_tx(pool, tenant) as conn:
        rows = await conn.fetch(
            """SELECT version, checksum, author, created_at FROM tenant_config_versions
               WHERE tenant_id = $1 ORDER BY version DESC""",
            tenant,
        )
    return [dict(r) for r in rows]


async def get_version(pool: asyncpg.Pool, tenant: str, version: int | None = None) -> dict[str, Any] | None:
    """One stored version with its metadata (the current one when `version` is None)."""
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow(
            """SELECT v.version, v.checksum, v.author, v.created_at, v.config,
                      (v.version = t.current_version) AS current
               FROM tenants t JOIN tenant_config_versions v
                 ON v.tenant_id = t.slug AND v.version = coalesce($2, t.current_version)
               WHERE t.slug = $1""",
            tenant,
            version,
        )
    return None if row is None else dict(row)


async def remove_tenant(pool: asyncpg.Pool, tenant: str) -> bool:
    """Mark a tenant removed and revoke its API and source keys (its data and versions stay);
    workers drop its queue. Keys stay revoked for good: a restore never brings them back."""
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(
            "UPDATE tenants SET removed_at = now() WHERE slug = $1 AND removed_at IS NULL", tenant
        )
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL", tenant)
        # Its source keys (the tracking API's write keys) too: a restore never brings them back.
        await conn.execute(
            "UPDATE source_keys SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL", tenant
        )
        await conn.execute("SELECT pg_notify($1, $2)", TENANTS_CHANNEL, json.dumps({"tenant": tenant}))
    return status.endswith(" 1")


async def restore_tenant(pool: asyncpg.Pool, tenant: str) -> bool:
    """Bring back a removed tenant with its data and config versions, never its keys: new keys
    must be issued. Workers take its queue again."""
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(
            "UPDATE tenants SET removed_at = NULL WHERE slug = $1 AND removed_at IS NOT NULL", tenant
        )
        await conn.execute("SELECT pg_notify($1, $2)", TENANTS_CHANNEL, json.dumps({"tenant": tenant}))
    return status.endswith(" 1")


def config_diff(old: dict[str, Any], new: dict[str, Any], old_label: str = "a", new_label: str = "b") -> dict[str, Any]:
    """What changed between two configs: the changed paths, and a unified diff of their YAML."""
    import difflib

    def dump(data: dict[str, Any]) -> list[str]:
        return yaml.safe_dump(data, sort_keys=True, allow_unicode=True).splitlines(keepends=True)

    changes: list[dict[str, Any]] = []
    _walk_diff(old, new, "", changes)
    unified = "".join(difflib.unified_diff(dump(old), dump(new), fromfile=old_label, tofile=new_label))
    return {"changes": changes, "unified": unified}


def _walk_diff(old: Any, new: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append({"path": sub, "change": "added", "new": new[key]})
            elif key not in new:
                out.append({"path": sub, "change": "removed", "old": old[key]})
            else:
                _walk_diff(old[key], new[key], sub, out)
    elif old != new:
        out.append({"path": path or "(root)", "change": "changed", "old": old, "new": new})
