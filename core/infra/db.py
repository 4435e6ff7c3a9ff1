"""PostgreSQL access: the pool, tenant-scoped transactions (row-level security) and migrations."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any, NewType

import asyncpg
from asyncpg.pool import PoolConnectionProxy

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


# A tenant's statement ends after this long (issue 21): one tenant's query, however its config
# shaped it, cannot hold a shared connection for minutes. The one statement that grows with the
# audience (freezing a run's recipients, a segment over all the tenant's customers) gets
# BULK_STATEMENT_TIMEOUT_SECONDS; devstack's demo seeding, the operator's own data, passes None.
TENANT_STATEMENT_TIMEOUT_SECONDS = 30.0
BULK_STATEMENT_TIMEOUT_SECONDS = 900.0

# pennant_enter_tenant (migration 048) records the tenant where only it can write, once per
# transaction; every policy reads it back through pennant_tenant(). The login role has
# row_security off (reads RLS would filter fail loudly): the tenant transaction turns it on.
_ENTER_SQL = """SELECT pennant_enter_tenant($1), set_config('row_security', 'on', true),
                       set_config('statement_timeout', $2, true)"""


async def enter_tenant(
    conn: Any, tenant: str, *, statement_timeout: float | None = TENANT_STATEMENT_TIMEOUT_SECONDS
) -> None:
    """Scope the caller's open transaction to `tenant`'s rows without leaving the login role.

    For platform work that writes platform tables and one tenant's rows together (saving a
    config version and the tenant's current version); everything else uses tenant_tx.
    """
    # statement_timeout 0 is PostgreSQL's "no limit".
    await conn.execute(_ENTER_SQL, tenant, f"{round((statement_timeout or 0) * 1000)}ms")


# A connection inside `tenant_tx`: every statement on it sees and writes one tenant's rows. The
# stores take it, so handing them a connection straight from the pool (outside any tenant, where
# the app role's reads of tenant tables fail) is a type error, not a runtime surprise.
if TYPE_CHECKING:
    TenantConn = NewType("TenantConn", PoolConnectionProxy[asyncpg.Record])
else:  # asyncpg's proxy is not subscriptable at run time
    TenantConn = NewType("TenantConn", PoolConnectionProxy)


@asynccontextmanager
async def tenant_tx(
    pool: asyncpg.Pool, tenant: str, *, statement_timeout: float | None = TENANT_STATEMENT_TIMEOUT_SECONDS
) -> AsyncIterator[TenantConn]:
    """A transaction that can see and write only `tenant`'s rows.

    The transaction enters the tenant (recorded where SQL run as the application cannot change
    it: neither `set_config('pennant.tenant_id', ...)`, `RESET ROLE` nor a second enter reach
    another tenant) and switches to the unprivileged role pennant_tenant; everything is
    transaction-local, so a pooled connection carries nothing over. Statements end after
    `statement_timeout` seconds (None: no limit).
    """
    async with pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant, statement_timeout=statement_timeout)
        await conn.execute("SET LOCAL ROLE pennant_tenant")
        yield TenantConn(conn)


def _migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


# After every migration run: each tenant_isolation policy reads the tenant from pennant_tenant()
# and each table under row-level security is FORCEd, whatever a later migration wrote (one that
# copies the older `current_setting('pennant.tenant_id')` policy gets it rewritten here). Only
# what is stale is altered, so a start with nothing to do takes no table locks.
_ENFORCE_TENANT_POLICIES_SQL = """
DO $$
DECLARE r record;
BEGIN
    IF to_regprocedure('pennant_tenant()') IS NULL THEN
        RETURN;
    END IF;
    FOR r IN SELECT schemaname, tablename FROM pg_policies
             WHERE policyname = 'tenant_isolation' AND schemaname = 'public'
               AND (qual IS DISTINCT FROM '(tenant_id = ( SELECT pennant_tenant() AS pennant_tenant))'
                    OR with_check IS DISTINCT FROM '(tenant_id = ( SELECT pennant_tenant() AS pennant_tenant))') LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %I.%I USING (tenant_id = (SELECT pennant_tenant())) '
                       'WITH CHECK (tenant_id = (SELECT pennant_tenant()))', r.schemaname, r.tablename);
    END LOOP;
    FOR r IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relrowsecurity AND NOT c.relforcerowsecurity LOOP
        EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', r.nspname, r.relname);
    END LOOP;
END $$
"""


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the numbered SQL files not yet recorded in schema_migrations; returns their names.

    `pool` logs in as the owner role (Settings.owner_database_url): the application role owns
    nothing and may not create tables, roles or functions. As the application role, an
    up-to-date database is a no-op and a pending migration fails with a permission error."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
        try:
            # Checked first: CREATE ... IF NOT EXISTS still needs CREATE on the schema, which the
            # application role lacks even when the table is there.
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
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
            await conn.execute(_ENFORCE_TENANT_POLICIES_SQL)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


async def migrate_as_owner(owner_url: str) -> list[str]:
    """Migrate over a short-lived connection of the owner role (`owner_url`)."""
    pool = await create_pool(owner_url, min_size=1, max_size=1)
    try:
        return await migrate(pool)
    finally:
        await pool.close()


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
