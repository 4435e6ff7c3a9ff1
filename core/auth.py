"""API keys: generated once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin (tenant None) or one tenant's key."""

    tenant: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    def can_access(self, tenant: str) -> bool:
        return self.is_admin or self.tenant == tenant


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


async def store_key(pool: asyncpg.Pool, key: str, tenant: str | None, label: str = "") -> None:
    """Register `key` for `tenant` (None: admin). Idempotent."""
    await pool.execute(
        "INSERT INTO api_keys (key_hash, tenant_id, label) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        hash_key(key),
        tenant,
        label,
    )


async def lookup_key(pool: asyncpg.Pool, key: str) -> Principal | None:
    """The principal a presented key belongs to, or None for an unknown key."""
    row = await pool.fetchrow("SELECT tenant_id FROM api_keys WHERE key_hash = $1", hash_key(key))
    return None if row is None else Principal(tenant=row["tenant_id"])
