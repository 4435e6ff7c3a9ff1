"""PostgreSQL access: the pool, tenant-scoped transactions (row-level security) and migrations."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import asyncpg

MIGRATIONS_PACKAGE = "core.infra.migrations"
# Arbitrary constant: serialises concurrent migration runners (api and worker starting together).
_MIGRATION_LOCK_ID = 0x50454E4E


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns in and out as Python objects.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A connection pool whose connections speak jsonb as Python objects."""
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, init=_init_connection)
    assert pool is not None
    return pool


@asynccontextmanager
async def tenant_tx(pool: asyncpg.Pool, tenant: str) -> AsyncIterator[Any]:
    """A transaction that can see and write only `tenant`'s rows.

    The connection switches to the unprivileged role pennant_tenant for the transaction and
    sets `pennant.tenant_id`, which every row-level-security policy compares against; both
    are transaction-local, so a pooled connection carries nothing over.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE pennant_tenant")
        await conn.execute("SELECT set_config('pennant.tenant_id', $1, true)", tenant)
        yield conn


def _migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the numbered SQL files not yet recorded in schema_migrations; returns their names."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in _migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
                applied_now.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


# What asyncpg raises while PostgreSQL restarts or cannot be reached: a unix socket that is gone
# (FileNotFoundError), a refused connection, a dropped one, a server shutting down. Callers that
# can wait out an outage catch these and retry; anything else is a real error.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
