"""Least privilege in the database (issue 21, item 6): the application's login role, forced
row-level security, and what SQL run inside a tenant transaction can and cannot reach.

`pool` is the owner role (the embedded superuser), `app_pool` the role the API and workers log
in as. Only the database is needed: tenants are stored straight into it.
"""

from __future__ import annotations

import asyncpg
import pytest

from core.infra.db import BULK_STATEMENT_TIMEOUT_SECONDS, TENANT_STATEMENT_TIMEOUT_SECONDS, migrate, tenant_tx
from core.tenants.config_store import active_tenants, get_config
from core.tenants.keys import new_key, store_key
from tests.helpers.tenants import store_tenant

# Tables without a row-level-security policy on purpose: the platform's own, read across
# tenants (a key is looked up before its tenant is known).
# source_keys: write keys, looked up before the call is in any tenant (like api_keys).
PLATFORM_TABLES_WITH_TENANT_ID = {"api_keys", "source_keys"}


@pytest.fixture(scope="module")
async def two_tenants(pool: asyncpg.Pool) -> tuple[str, str]:
    """Tenants A (3 customers) and B (4 customers), stored as the owner."""
    return await store_tenant(pool, "roles-a-", customers=3), await store_tenant(pool, "roles-b-", customers=4)


async def test_the_app_role_is_no_superuser_owns_nothing_and_cannot_bypass_rls(app_pool: asyncpg.Pool) -> None:
    role = await app_pool.fetchrow(
        """SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles
           WHERE rolname = current_user"""
    )
    assert dict(role) == {
        "rolname": "pennant_app",
        "rolsuper": False,
        "rolbypassrls": False,
        "rolcreaterole": False,
        "rolcreatedb": False,
    }
    owned = await app_pool.fetchval(
        """SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"""
    )
    functions = await app_pool.fetchval(
        """SELECT count(*) FROM pg_proc WHERE proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"""
    )
    assert (owned, functions) == (0, 0)
    assert await app_pool.fetchval("SHOW row_security") == "off"
    # Not a member of the owner role or any built-in role that reads or writes server files.
    assert not await app_pool.fetchval(
        """SELECT pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER')
               OR pg_has_role(current_user, 'pg_read_server_files', 'MEMBER')
               OR pg_has_role(current_user, 'pg_write_server_files', 'MEMBER')"""
    )


async def test_every_tenant_table_forces_row_level_security(app_pool: asyncpg.Pool) -> None:
    unforced = await app_pool.fetch(
        """SELECT relname FROM pg_class
           WHERE relnamespace = 'public'::regnamespace AND relrowsecurity AND NOT relforcerowsecurity"""
    )
    assert [r["relname"] for r in unforced] == []
    unguarded = await app_pool.fetch(
        """SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity"""
    )
    assert {r["relname"] for r in unguarded} == PLATFORM_TABLES_WITH_TENANT_ID
    # Every policy reads the tenant from pennant_tenant(), which no statement can redirect (the
    # exact text migrate() compares against, so a start with nothing stale alters nothing).
    expected = "(tenant_id = ( SELECT pennant_tenant() AS pennant_tenant))"
    stale = await app_pool.fetch(
        """SELECT tablename FROM pg_policies WHERE schemaname = 'public'
           AND (qual IS DISTINCT FROM $1 OR with_check IS DISTINCT FROM $1)""",
        expected,
    )
    assert [r["tablename"] for r in stale] == []


async def test_inside_a_tenant_transaction_no_escape_reaches_another_tenant(
    pool: asyncpg.Pool, app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, b = two_tenants
    owner = await pool.fetchval("SELECT current_user")
    b_rows = "SELECT count(*) FROM customers WHERE tenant_id = $1"

    async with tenant_tx(app_pool, a) as conn:
        assert await conn.fetchval("SELECT count(*) FROM customers") == 3
        assert await conn.fetchval(b_rows, b) == 0
        # The setting the policies used to read: changing it changes nothing.
        await conn.execute("SELECT set_config('pennant.tenant_id', $1, true)", b)
        assert await conn.fetchval(b_rows, b) == 0
        assert await conn.fetchval("SELECT count(*) FROM customers") == 3
        # ...also within one statement, as injected SQL would.
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM (SELECT set_config('pennant.tenant_id', $1, true)) s, customers c "
                "WHERE c.tenant_id = $1",
                b,
            )
            == 0
        )
        # Back to the login role: still row-level security, still tenant A.
        await conn.execute("RESET ROLE")
        assert await conn.fetchval("SELECT current_user") == "pennant_app"
        assert await conn.fetchval(b_rows, b) == 0
        assert await conn.fetchval("SELECT count(*) FROM customers") == 3

    async with tenant_tx(app_pool, a) as conn:
        await conn.execute("SET ROLE pennant_app")
        assert await conn.fetchval(b_rows, b) == 0
        # set_config('role', ...) is SET ROLE from inside a query.
        await conn.execute("SELECT set_config('role', 'none', true)")
        assert await conn.fetchval(b_rows, b) == 0

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied to set role"):
        async with tenant_tx(app_pool, a) as conn:
            await conn.execute(f'SET ROLE "{owner}"')

    # Entering another tenant is once per transaction, and not for the tenant role at all.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for function"):
        async with tenant_tx(app_pool, a) as conn:
            await conn.execute("SELECT pennant_enter_tenant($1)", b)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="entered a tenant already"):
        async with tenant_tx(app_pool, a) as conn:
            await conn.execute("RESET ROLE")
            await conn.execute("SELECT pennant_enter_tenant($1)", b)

    # Turning row-level security off makes reads fail, never unfiltered.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_tx(app_pool, a) as conn:
            await conn.execute("SET LOCAL row_security = off")
            await conn.fetchval(b_rows, b)

    # The platform's cross-tenant functions refuse inside a tenant transaction.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="cross-tenant read inside a tenant transaction"):
        async with tenant_tx(app_pool, a) as conn:
            await conn.execute("RESET ROLE")
            await conn.fetch("SELECT * FROM pennant_active_tenants()")

    # The next transaction on the same pooled connections starts with no tenant.
    async with app_pool.acquire() as conn:
        assert await conn.fetchval("SELECT pennant_tenant()") is None


async def test_a_look_alike_tenant_record_is_ignored(
    database_url: str, pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    """The application cannot plant the record pennant_tenant() reads: a temporary table of the
    same name that it made itself counts for nothing, and entering refuses to use it."""
    a, b = two_tenants
    conn = await asyncpg.connect(database_url)  # its own session: the planted table dies with it
    try:
        await conn.execute("CREATE TEMP TABLE pennant_tenant_context (tenant text NOT NULL)")
        await conn.execute("INSERT INTO pg_temp.pennant_tenant_context VALUES ($1)", b)
        async with conn.transaction():
            await conn.execute("SET LOCAL row_security = on")
            await conn.execute("SET LOCAL ROLE pennant_tenant")
            assert await conn.fetchval("SELECT pennant_tenant()") is None
            assert await conn.fetchval("SELECT count(*) FROM customers WHERE tenant_id = $1", b) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="is not the platform's"):
            await conn.execute("SELECT pennant_enter_tenant($1)", a)
    finally:
        await conn.close()


async def test_copy_to_program_is_refused(app_pool: asyncpg.Pool, two_tenants: tuple[str, str]) -> None:
    a, _ = two_tenants
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="COPY to or from an external program"):
        async with tenant_tx(app_pool, a) as conn:
            await conn.execute("RESET ROLE")
            await conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="COPY to or from an external program"):
        await app_pool.execute("COPY (SELECT 1) TO PROGRAM 'true'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied to COPY to a file"):
        await app_pool.execute("COPY (SELECT 1) TO '/tmp/pennant-copy-test'")


async def test_the_app_role_cannot_make_admin_keys(
    pool: asyncpg.Pool, app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, _ = two_tenants
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="admin keys are created with the owner role"):
        await store_key(app_pool, new_key("adm"), None, "forged admin")
    # Nor turn a tenant key into one.
    tenant_key_id = await store_key(app_pool, new_key("tk"), a, "tenant key by the app")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await app_pool.execute("UPDATE api_keys SET tenant_id = NULL WHERE id = $1::uuid", tenant_key_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await app_pool.execute("DELETE FROM api_keys WHERE id = $1::uuid", tenant_key_id)
    # The owner role can.
    assert await store_key(pool, new_key("adm"), None, "admin by the owner")


async def test_a_read_outside_a_tenant_transaction_fails_instead_of_returning_nothing(
    app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, b = two_tenants
    for sql in (
        "SELECT count(*) FROM customers",
        "SELECT count(*) FROM deliveries",
        "SELECT count(*) FROM tenant_config_versions",
        "SELECT count(*) FROM idempotency_keys",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await app_pool.fetchval(sql)
    # The reads the platform needs across tenants go through the owner's narrow functions.
    tenants = await active_tenants(app_pool)
    assert {a, b} <= tenants.keys()
    assert await app_pool.fetch("SELECT * FROM pennant_run_counts(ARRAY['running'])") is not None
    found = await get_config(app_pool, b)
    assert found is not None and found[1].slug == b


async def test_tenant_statements_run_under_a_statement_timeout(
    app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, _ = two_tenants
    async with tenant_tx(app_pool, a) as conn:
        assert await conn.fetchval("SHOW statement_timeout") == f"{round(TENANT_STATEMENT_TIMEOUT_SECONDS)}s"
    async with tenant_tx(app_pool, a, statement_timeout=BULK_STATEMENT_TIMEOUT_SECONDS) as conn:
        assert await conn.fetchval("SHOW statement_timeout") == f"{round(BULK_STATEMENT_TIMEOUT_SECONDS / 60)}min"
    async with tenant_tx(app_pool, a, statement_timeout=None) as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "0"
    with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
        async with tenant_tx(app_pool, a, statement_timeout=0.05) as conn:
            await conn.execute("SELECT pg_sleep(10)")
    # Transaction-local: the pooled connection is back to no timeout.
    async with app_pool.acquire() as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "0"


async def test_the_app_role_applies_no_migration_but_finds_an_up_to_date_database(app_pool: asyncpg.Pool) -> None:
    assert await migrate(app_pool) == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await app_pool.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'forged')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for schema public"):
        await app_pool.execute("CREATE TABLE forged (x int)")
