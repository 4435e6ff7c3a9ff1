"""The audit trail of a tenant's boundary: who changed a secret, an endpoint or credential in the
config, an API key, or the tenant itself, and when. Entries name things (a secret's name, a config
path, a key id), never values; they are written in the tenant's own transaction, so an entry is
recorded exactly when its change commits."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
from pydantic import BaseModel

from core.infra.db import TenantConn, tenant_tx
from core.tenants.config_schema import TenantConfig
from core.tenants.keys import Principal


class AuditEntry(BaseModel):
    """One change: when, by whom, what, on which thing, with non-secret detail."""

    at: dt.datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


def actor_of(principal: Principal) -> str:
    """How an entry names the caller: the kind of key and its id (never the key)."""
    return f"{'admin' if principal.is_admin else 'tenant'} key {principal.key_id or 'unknown'}"


async def record(
    conn: TenantConn, tenant: str, principal: Principal, action: str, target: str = "", **detail: Any
) -> None:
    """Add an entry in `conn`'s tenant transaction (so it commits with the change it records)."""
    await conn.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        tenant,
        actor_of(principal),
        action,
        target,
        detail,
    )


async def record_in(
    pool: asyncpg.Pool, tenant: str, principal: Principal, action: str, target: str = "", **detail: Any
) -> None:
    """`record` in a transaction of its own (for changes made by stores that own theirs)."""
    async with tenant_tx(pool, tenant) as conn:
        await record(conn, tenant, principal, action, target, **detail)


async def entries(pool: asyncpg.Pool, tenant: str, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
    """The tenant's newest entries first (optionally one action's, or a prefix such as `secret.`)."""
    async with tenant_tx(pool, tenant) as conn:
        rows = await conn.fetch(
            """SELECT at, actor, action, target, detail FROM audit_log
                WHERE $2::text IS NULL OR action = $2 OR action LIKE $2 || '%'
                ORDER BY at DESC, id DESC LIMIT $1""",
            limit,
            action,
        )
    return [AuditEntry(**dict(r)) for r in rows]


def boundary_paths(config: TenantConfig) -> dict[str, Any]:
    """The parts of a config the trail watches: every channel endpoint, every secret reference,
    and the suggestions provider's endpoint; path → value (endpoints and references, not secrets)."""
    found: dict[str, Any] = dict(config.secret_refs())
    for channel, settings in config.channels.configured():
        found[f"channels.{channel}.endpoint"] = settings.endpoint
    if config.suggestions.provider is not None:
        found["suggestions.provider.endpoint"] = config.suggestions.provider.endpoint
    return found


def changed_boundary(old: TenantConfig | None, new: TenantConfig) -> list[str]:
    """The watched paths whose value differs between `old` and `new`, sorted."""
    before, after = boundary_paths(old) if old else {}, boundary_paths(new)
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
