"""API keys: generated once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

# A key made by new_key: readable head, then 32 random characters.
_NEW_KEY_RE = re.compile(r"^(.*_)([A-Za-z0-9_-]{32})$")
_LAST_USED_GRANULARITY = "interval '1 minute'"
# Arbitrary constant for pg_advisory_xact_lock: one admin-key revocation at a time.
_ADMIN_REVOKE_LOCK_ID = 0x4B455953


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin (tenant None) or one tenant's key."""

    tenant: str | None
    # Which key authenticated the call (api_keys.id); None when built by hand.
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        """Whether this key is an admin key (no tenant)."""
        return self.tenant is None

    def can_access(self, tenant: str) -> bool:
        """Whether this key may act on `tenant`'s resources."""
        return self.is_admin or self.tenant == tenant


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256, hex; the key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(prefix: str) -> str:
    """A fresh random key: `prefix`, an underscore and 32 URL-safe characters (192 bits)."""
    return f"{prefix}_{secrets.token_urlsafe(24)}"


def key_prefix(key: str) -> str:
    """What a key is shown as in lists: its readable head and 4 characters of the secret
    (`tk_freshmart_Ab3x`), or a short head of a key not made by `new_key`."""
    match = _NEW_KEY_RE.match(key)
    if match:
        return match.group(1) + match.group(2)[:4]
    return key[: min(8, len(key) // 4)]


async def store_key(pool: asyncpg.Pool, key: str, tenant: str | None, label: str = "") -> str:
    """Register `key` for `tenant` (None: admin) and return its id. Idempotent."""
    key_hash = hash_key(key)
    key_id = await pool.fetchval(
        """INSERT INTO api_keys (key_hash, tenant_id, label, prefix) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING id""",
        key_hash,
        tenant,
        label,
        key_prefix(key),
    )
    if key_id is None:
        key_id = await pool.fetchval("SELECT id FROM api_keys WHERE key_hash = $1", key_hash)
    return str(key_id)


async def lookup_key(pool: asyncpg.Pool, key: str) -> Principal | None:
    """The principal a presented key belongs to, or None for an unknown or revoked key.

    Reading is one indexed SELECT per request, so a revocation holds from the very next
    request; `last_used_at` is written only when it is over a minute old, which keeps a busy
    key from turning every request into a write.
    """
    key_hash = hash_key(key)
    row = await pool.fetchrow(
        f"""SELECT id, tenant_id, revoked_at,
                  last_used_at IS NULL OR last_used_at < now() - {_LAST_USED_GRANULARITY} AS stale
           FROM api_keys WHERE key_hash = $1""",
        key_hash,
    )
    if row is None or row["revoked_at"] is not None:
        return None
    if row["stale"]:
        await pool.execute(
            f"""UPDATE api_keys SET last_used_at = now()
               WHERE key_hash = $1 AND (last_used_at IS NULL OR last_used_at < now() - {_LAST_USED_GRANULARITY})""",
            key_hash,
        )
    return Principal(tenant=row["tenant_id"], key_id=str(row["id"]))


_KEY_COLUMNS = "id::text AS id, tenant_id AS tenant, label, prefix, created_at, last_used_at, revoked_at"


async def list_keys(pool: asyncpg.Pool, tenant: str | None, *, every_tenant: bool = False) -> list[dict[str, Any]]:
    """Keys of `tenant`, or admin keys (tenant None), or every key (`every_tenant`); oldest first."""
    rows = await pool.fetch(
        f"""SELECT {_KEY_COLUMNS} FROM api_keys
           WHERE $2 OR tenant_id IS NOT DISTINCT FROM $1 ORDER BY created_at, id""",
        tenant,
        every_tenant,
    )
    return [dict(r) for r in rows]


class LastAdminKeyError(Exception):
    """Revoking this key would leave no admin key that works."""


async def revoke_key(pool: asyncpg.Pool, key_id: str, tenant: str | None, *, any_tenant: bool = False) -> bool:
    """Revoke the key `key_id` of `tenant` (None: an admin key; `any_tenant`: whoever owns it).
    False when no such key exists; revoking a revoked key changes nothing and is True."""
    try:
        uid = uuid.UUID(key_id)
    except ValueError:
        return False
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT tenant_id, revoked_at FROM api_keys WHERE id = $1 FOR UPDATE", uid)
        if row is None or (not any_tenant and row["tenant_id"] != tenant):
            return False
        if row["revoked_at"] is not None:
            return True
        if row["tenant_id"] is None:
            # Serialise admin-key revocations so two at once cannot both pass the check below.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADMIN_REVOKE_LOCK_ID)
            others = await conn.fetchval(
                "SELECT count(*) FROM api_keys WHERE tenant_id IS NULL AND revoked_at IS NULL AND id <> $1", uid
            )
            if not others:
                raise LastAdminKeyError(key_id)
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", uid)
    return True
