"""Row-level security: a tenant transaction sees and writes only its own tenant's rows."""

from __future__ import annotations

import asyncpg
import pytest

from core.infra.db import tenant_tx
from tests.helpers.tenants import MakeTenant


async def test_a_tenant_transaction_sees_and_writes_only_its_own_rows(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    a = await make_tenant(customers=5)
    b = await make_tenant(customers=7)
    async with tenant_tx(pool, a.slug) as conn:
        assert await conn.fetchval("SELECT count(*) FROM customers") == 5
        # Even asking for B's rows by name finds nothing.
        assert await conn.fetchval("SELECT count(*) FROM customers WHERE tenant_id = $1", b.slug) == 0
        assert await conn.fetchval("SELECT count(*) FROM tenant_config_versions WHERE tenant_id = $1", b.slug) == 0
        assert await conn.execute("UPDATE customers SET first_name = 'x' WHERE tenant_id = $1", b.slug) == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_tx(pool, a.slug) as conn:
            await conn.execute(
                "INSERT INTO suppressions (tenant_id, channel, address) VALUES ($1, 'email', 'x@example.com')", b.slug
            )
    # Without a tenant set, the unprivileged role sees nothing at all.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE pennant_tenant")
        assert await conn.fetchval("SELECT count(*) FROM customers") == 0
    assert await pool.fetchval("SELECT count(*) FROM customers WHERE tenant_id = $1", b.slug) == 7
