"""Customers as the API and the console both use them: how many customers a segment selects
now and a few of them (the same SQL a run freezes), and the suppression list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from core.common.refusals import NotFound
from core.customers.segments import SegmentError, compile_segment
from core.customers.suppressions import normalise, suppress
from core.infra.db import tenant_tx
from core.tenants.config_schema import TenantConfig

SAMPLE_SIZE = 10
# An estimate is interactive: a segment too costly to count in this long is refused, not
# left holding a connection (a run's planning has no such limit).
ESTIMATE_TIMEOUT = "10s"


@dataclass(frozen=True)
class Estimate:
    """How many customers a segment selects, and the first SAMPLE_SIZE of them (id, first
    name, email)."""

    count: int
    sample: list[dict[str, Any]]


async def estimate_segment(
    pool: asyncpg.Pool, tenant: str, config: TenantConfig, segment: dict[str, Any] | str
) -> Estimate:
    """Count the customers an inline or named segment selects. SegmentError names what does
    not compile, or a segment too costly to count within ESTIMATE_TIMEOUT."""
    inline = {"segment": segment} if isinstance(segment, str) else segment
    compiled = compile_segment(inline, config.segments, path="segment", first_param=2)
    where = f"c.tenant_id = $1 AND ({compiled.where})"
    try:
        async with tenant_tx(pool, tenant) as conn:
            await conn.execute(f"SET LOCAL statement_timeout = '{ESTIMATE_TIMEOUT}'")
            count = await conn.fetchval(f"SELECT count(*) FROM customers c WHERE {where}", tenant, *compiled.params)
            rows = await conn.fetch(
                f"SELECT c.id, c.first_name, c.email FROM customers c WHERE {where} ORDER BY c.id LIMIT {SAMPLE_SIZE}",
                tenant,
                *compiled.params,
            )
    except asyncpg.QueryCanceledError:
        raise SegmentError(
            [f"segment: too costly to estimate within {ESTIMATE_TIMEOUT}; simplify it or narrow it"]
        ) from None
    return Estimate(count=count, sample=[dict(r) for r in rows])


async def list_suppressions(pool: asyncpg.Pool, tenant: str, channel: str | None, limit: int) -> list[dict[str, Any]]:
    """The suppressed addresses (channel, address, reason, created_at), newest first,
    optionally of one channel."""
    async with tenant_tx(pool, tenant) as conn:
        rows = await conn.fetch(
            """SELECT channel, address, reason, created_at FROM suppressions
               WHERE tenant_id = $1 AND ($2::text IS NULL OR channel = $2)
               ORDER BY created_at DESC LIMIT $3""",
            tenant,
            channel,
            limit,
        )
    return [dict(r) for r in rows]


async def add_suppression(pool: asyncpg.Pool, tenant: str, channel: str, address: str, reason: str) -> str:
    """Suppress an address on a channel; the address as stored (normalised)."""
    async with tenant_tx(pool, tenant) as conn:
        await suppress(conn, tenant, channel, address, reason)
    return normalise(channel, address)


async def remove_suppression(pool: asyncpg.Pool, tenant: str, channel: str, address: str) -> None:
    """Lift a suppression; NotFound when the address is not suppressed on the channel."""
    async with tenant_tx(pool, tenant) as conn:
        status = await conn.execute(
            "DELETE FROM suppressions WHERE tenant_id = $1 AND channel = $2 AND address = $3",
            tenant,
            channel,
            normalise(channel, address),
        )
    if not status.endswith(" 1"):
        raise NotFound(f"'{address}' is not suppressed on {channel}")
