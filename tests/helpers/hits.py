"""Opens and clicks written straight through the tracking code's own hit writer
(core.engagement.tracking.insert_hits), which flags machine ones as a real pixel or redirect hit would be;
and the customers a run sent to, per variant."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

from core.engagement.tracking import Hit, Kind, Token, agent_reason, insert_hits
from core.infra.db import tenant_tx

HUMAN_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
BOT_AGENT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
MACHINE_SECONDS = 5


async def record_hits(
    pool: asyncpg.Pool,
    tenant: str,
    run_id: str,
    customer_ids: Sequence[int],
    kind: Kind,
    *,
    machine: bool = False,
    channel: str = "email",
) -> None:
    """An open or click of the run's message to each of `customer_ids`: a person's an hour from
    now (past the machine window), or a bot's (flagged machine by its user agent)."""
    agent = BOT_AGENT if machine else HUMAN_AGENT
    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    hits = [Hit(Token(tenant, run_id, cid, channel, kind), at, agent, agent_reason(agent)) for cid in customer_ids]
    async with tenant_tx(pool, tenant) as conn:
        await insert_hits(conn, tenant, hits, MACHINE_SECONDS)


async def sent_by_variant(pool: asyncpg.Pool, tenant: str, run_id: str) -> dict[str, list[int]]:
    """The customers the run has sent to, per variant, in id order."""
    rows = await pool.fetch(
        """SELECT variant, customer_id FROM deliveries
           WHERE tenant_id = $1 AND run_id = $2::uuid AND status = 'sent' ORDER BY customer_id""",
        tenant,
        run_id,
    )
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r["variant"], []).append(r["customer_id"])
    return out
