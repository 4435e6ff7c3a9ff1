"""Source keys: a tenant's Segment write keys, one per site or app, labelled and revocable.

A write key ships in every page of the retailer's site, so it is public: it is accepted on the
tracking routes only (api/routes/ingest.py) and nowhere else, and stored, like API keys, only
as its SHA-256 (core.tenants.keys.hash_key).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.tenants.keys import hash_key, key_prefix, new_key

# Source keys read `sk_<tenant>_…`, so a key pasted in the wrong place is recognisable.
SOURCE_KEY_PREFIX = "sk"
MAX_LABEL = 200
_LAST_USED_GRANULARITY = "interval '1 minute'"
_COLUMNS = "id::text AS id, tenant_id AS tenant, label, prefix, created_at, last_used_at, revoked_at"


@dataclass(frozen=True)
class Source:
    """The tenant and source key a tracking call authenticated with (id None: a tenant API key)."""

    tenant: str
    source_id: str | None


async def create_source(pool: asyncpg.Pool, tenant: str, label: str) -> tuple[str, dict[str, Any]]:
    """A new source key for `tenant`: the key itself (shown once) and its stored row."""
    key = new_key(f"{SOURCE_KEY_PREFIX}_{tenant}")
    row = await pool.fetchrow(
        f"INSERT INTO source_keys (key_hash, tenant_id, label, prefix) VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}",
        hash_key(key),
        tenant,
        label,
        key_prefix(key),
    )
    assert row is not None
    return key, dict(row)


async def list_sources(pool: asyncpg.Pool, tenant: str) -> list[dict[str, Any]]:
    """The tenant's source keys (revoked ones too), oldest first."""
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM source_keys WHERE tenant_id = $1 ORDER BY created_at, id", tenant)
    return [dict(r) for r in rows]


async def revoke_source(pool: asyncpg.Pool, tenant: str, source_id: str) -> dict[str, Any] | None:
    """Revoke the tenant's source key `source_id` (from the very next call); its row, or None
    when the tenant has no such key. Revoking a revoked key changes nothing."""
    try:
        uid = uuid.UUID(source_id)
    except ValueError:
        return None
    row = await pool.fetchrow(
        f"""UPDATE source_keys SET revoked_at = coalesce(revoked_at, now())
            WHERE id = $1 AND tenant_id = $2 RETURNING {_COLUMNS}""",
        uid,
        tenant,
    )
    return dict(row) if row else None


async def lookup_source(pool: asyncpg.Pool, key: str) -> Source | None:
    """The tenant and source of a presented write key, or None for an unknown or revoked one
    (one indexed read per call, so a revocation holds at once; last use written once a minute)."""
    key_hash = hash_key(key)
    row = await pool.fetchrow(
        f"""SELECT k.id, k.tenant_id, k.revoked_at, t.removed_at,
                   k.last_used_at IS NULL OR k.last_used_at < now() - {_LAST_USED_GRANULARITY} AS stale
            FROM source_keys k JOIN tenants t ON t.slug = k.tenant_id WHERE k.key_hash = $1""",
        key_hash,
    )
    if row is None or row["revoked_at"] is not None or row["removed_at"] is not None:
        return None
    if row["stale"]:
        await pool.execute(
            f"""UPDATE source_keys SET last_used_at = now() WHERE key_hash = $1
                AND (last_used_at IS NULL OR last_used_at < now() - {_LAST_USED_GRANULARITY})""",
            key_hash,
        )
    return Source(tenant=row["tenant_id"], source_id=str(row["id"]))
