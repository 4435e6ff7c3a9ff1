"""Small helpers the run tests share: make a campaign, start a run, read the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

EMAIL_CAMPAIGN: dict[str, Any] = {
    "name": "Weekly deals",
    "segment": {},
    "channels": ["email"],
    "variants": [{"key": "A", "template": "weekly_deals"}],
}


async def create_campaign(tenant: Any, **changes: Any) -> str:
    response = await tenant.http.post(tenant.url("/campaigns"), json={**EMAIL_CAMPAIGN, **changes})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def start_run(tenant: Any, campaign_id: str) -> str:
    response = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


async def ledger_count(pool: asyncpg.Pool, tenant: str, run_id: str, where: str = "TRUE") -> int:
    return int(
        await pool.fetchval(
            f"SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid AND {where}", tenant, run_id
        )
    )


async def until(check: Callable[[], Awaitable[bool]], within: float = 30.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def assert_each_recipient_once(pool: asyncpg.Pool, tenant: str, run_id: str, channels: int = 1) -> int:
    """Every frozen recipient has exactly one ledger row per channel, and nobody else has one."""
    row = await pool.fetchrow(
        """SELECT
             (SELECT count(*) FROM run_recipients WHERE tenant_id = $1 AND run_id = $2::uuid) AS planned,
             (SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid) AS rows,
             (SELECT count(DISTINCT (customer_id, channel)) FROM deliveries
               WHERE tenant_id = $1 AND run_id = $2::uuid) AS distinct_rows,
             (SELECT count(*) FROM run_recipients r WHERE r.tenant_id = $1 AND r.run_id = $2::uuid
               AND (SELECT count(*) FROM deliveries d WHERE d.tenant_id = r.tenant_id AND d.run_id = r.run_id
                      AND d.customer_id = r.customer_id) <> $3) AS gaps,
             (SELECT count(*) FROM deliveries d WHERE d.tenant_id = $1 AND d.run_id = $2::uuid
               AND NOT EXISTS (SELECT 1 FROM run_recipients r WHERE r.tenant_id = d.tenant_id
                                 AND r.run_id = d.run_id AND r.customer_id = d.customer_id)) AS strangers""",
        tenant,
        run_id,
        channels,
    )
    assert row["rows"] == row["distinct_rows"] == row["planned"] * channels, dict(row)
    assert row["gaps"] == 0 and row["strangers"] == 0, dict(row)
    return int(row["planned"])
