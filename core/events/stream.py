"""The tenant's event stream read back: a customer's profile (fields, attributes, consent) and
events (newest first, paged by a keyset cursor), and the partitions the stream is written to."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from core.infra.db import TenantConn

# Monthly partitions are made this far ahead of the current month (migration 055).
MONTHS_AHEAD = 3
MAX_PAGE = 500
# Rows of one tenant deleted per upkeep call past its retention (bounded transactions).
EXPIRE_BATCH = 50_000

_PROFILE_SQL = """
SELECT id, external_id, email, phone, first_name, last_name, locale, time_zone, loyalty_tier, city, country,
       birth_date, consent_email, consent_sms, consent_push, attributes, created_at, updated_at
FROM customers WHERE tenant_id = $1 AND external_id = $2"""


async def ensure_partitions(pool: asyncpg.Pool) -> int:
    """The stream's upkeep: make the missing monthly partitions (last month to MONTHS_AHEAD
    ahead), sweep dedupe rows past their window, and expire events past each tenant's
    events.retention_days (migration 056); the number of partitions made. Platform work:
    call it outside any tenant transaction."""
    made = int(await pool.fetchval("SELECT pennant_ensure_event_partitions($1)", MONTHS_AHEAD))
    await pool.fetchval("SELECT pennant_sweep_event_dedupe()")
    await pool.fetchval("SELECT pennant_expire_events($1)", EXPIRE_BATCH)
    return made


async def customer_profile(conn: TenantConn, tenant: str, external_id: str) -> dict[str, Any] | None:
    """The customer the tenant knows as `external_id`: fields, attributes and consent; None if none."""
    row = await conn.fetchrow(_PROFILE_SQL, tenant, external_id)
    if row is None:
        return None
    profile = dict(row)
    profile["consent"] = {c: profile.pop(f"consent_{c}") for c in ("email", "sms", "push")}
    return profile


async def customer_events(
    conn: TenantConn, tenant: str, customer_id: int, *, limit: int, before: tuple[dt.datetime, int] | None
) -> list[dict[str, Any]]:
    """The customer's events, newest first: at most `limit`, older than the `before` cursor
    (timestamp, id) when given."""
    rows = await conn.fetch(
        """SELECT id, message_id, type, event, user_id, anonymous_id, properties, traits, context,
                  "timestamp", received_at
           FROM events WHERE tenant_id = $1 AND customer_id = $2
             AND ($3::timestamptz IS NULL OR ("timestamp", id) < ($3, $4))
           ORDER BY "timestamp" DESC, id DESC LIMIT $5""",
        tenant,
        customer_id,
        before[0] if before else None,
        before[1] if before else 0,
        min(limit, MAX_PAGE),
    )
    return [dict(r) for r in rows]


async def recent_events(conn: TenantConn, tenant: str, *, after_id: int, limit: int) -> list[dict[str, Any]]:
    """The tenant's events of the last day with ids above `after_id`, oldest id first (what
    `pennant events tail` follows); reads only the partitions of the last day."""
    rows = await conn.fetch(
        """SELECT id, message_id, type, event, user_id, anonymous_id, customer_id, properties, "timestamp",
                  received_at
           FROM events WHERE tenant_id = $1 AND "timestamp" >= now() - interval '1 day' AND id > $2
           ORDER BY id LIMIT $3""",
        tenant,
        after_id,
        min(limit, MAX_PAGE),
    )
    return [dict(r) for r in rows]
