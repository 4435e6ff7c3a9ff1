"""The per-recipient results rollup (migration 045): its triggers keep it equal to what the ledger
and the event tables say, whatever way the rows arrive — the delivery ledger's one-statement chunk
write and its replays, multi-row event inserts, ledger rows changed or removed by hand — and it is
tenant-isolated like every tenant table."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from activities.delivery import _LEDGER_SQL
from core.infra.db import tenant_tx

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
_EVENTS_SQL = """
INSERT INTO message_events (tenant_id, run_id, customer_id, channel, kind, machine, occurred_at)
SELECT $1, $2, c, ch, k, m, $6 FROM unnest($3::bigint[], $4::text[], $5::text[], $7::bool[]) AS e(c, ch, k, m)
"""
_CUSTOMER_EVENTS_SQL = """
INSERT INTO customer_events (tenant_id, event_id, customer_id, type, occurred_at, amount, run_id, variant)
SELECT $1, id, c, t, $2, a, r, 'A' FROM unnest($3::text[], $4::bigint[], $5::text[], $6::numeric[], $7::uuid[])
    AS e(id, c, t, a, r)
ON CONFLICT (tenant_id, event_id) DO NOTHING
"""
# What the rollup should say, counted from the raw tables (as results were before the rollup).
_RECOUNT_SQL = """
SELECT k.customer_id, l.variant, coalesce(l.sent, 0) AS sent, coalesce(l.failed, 0) AS failed,
       coalesce(l.skipped, 0) AS skipped
FROM (SELECT customer_id FROM recipient_results WHERE run_id = $1
      UNION SELECT customer_id FROM deliveries WHERE run_id = $1) k
LEFT JOIN (SELECT customer_id, min(variant) AS variant, count(*) FILTER (WHERE status = 'sent') AS sent,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(*) FILTER (WHERE status = 'skipped') AS skipped
           FROM deliveries WHERE run_id = $1 GROUP BY customer_id) l USING (customer_id)
ORDER BY 1
"""


def _ledger_row(tenant: str, run: uuid.UUID, customer: int, channel: str, variant: str, status: str) -> tuple[Any, ...]:
    key = f"{run}:{customer}:{channel}"
    return (tenant, str(run), customer, channel, variant, status, None, None, key, None, None)


def _ledger_columns(rows: list[tuple[Any, ...]]) -> list[Any]:
    """The ledger write's parameters: tenant, run, then one array per column."""
    return [rows[0][0], rows[0][1], *([row[i] for row in rows] for i in range(2, 11))]


async def _rollup(conn: Any, run: uuid.UUID) -> dict[int, dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM recipient_results WHERE run_id = $1", run)
    return {r["customer_id"]: dict(r) for r in rows}


async def test_the_rollup_follows_the_ledger_and_the_events(pool: asyncpg.Pool) -> None:
    tenant, run = f"rollup-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    ledger = [
        _ledger_row(tenant, run, 1, "email", "B", "sent"),
        _ledger_row(tenant, run, 1, "sms", "A", "failed"),  # the variant is the least of its rows'
        _ledger_row(tenant, run, 2, "email", "A", "skipped"),
        _ledger_row(tenant, run, 3, "email", "holdout", "skipped"),
    ]
    async with tenant_tx(pool, tenant) as conn:
        await conn.execute(_LEDGER_SQL, *_ledger_columns(ledger), [])  # every channel via the platform
    async with tenant_tx(pool, tenant) as conn:
        # A retried batch writes the same rows again: ON CONFLICT DO NOTHING, counted once.
        await conn.execute(_LEDGER_SQL, *_ledger_columns(ledger), [])  # every channel via the platform
        await conn.execute(
            _EVENTS_SQL, tenant, run,
            [1, 1, 1, 1, 1, 1, 1, 2, 99],
            ["email", "email", "email", "sms", "email", "email", "email", "email", "email"],
            ["delivered", "open", "open", "open", "click", "complaint", "unsubscribe", "bounce", "open"],
            T0,
            [False, True, False, False, True, False, False, False, False],
        )  # fmt: skip
        await conn.execute(
            _CUSTOMER_EVENTS_SQL, tenant, T0,
            ["p1", "p2", "c1", "loose"],
            [1, 1, 1, 1],
            ["purchase", "purchase", "add_to_cart", "purchase"],
            [Decimal("10.50"), Decimal("4.25"), None, Decimal("99")],
            [run, run, run, None],  # an event attributed to no run is nobody's result
        )  # fmt: skip
        await conn.execute(_CUSTOMER_EVENTS_SQL, tenant, T0, ["p1"], [1], ["purchase"], [Decimal("10.50")], [run])
        got = await _rollup(conn, run)

    assert set(got) == {1, 2, 3, 99}  # 99: events only, no ledger row, so not a recipient
    one = got[1]
    assert (one["variant"], one["sent"], one["failed"], one["skipped"]) == ("A", 1, 1, 0)
    assert (one["delivered"], one["opened"], one["clicked"], one["complained"], one["unsubscribed"]) == (
        True, True, False, True, True
    )  # fmt: skip
    assert (one["opens"], one["machine_opens"], one["clicks"], one["machine_clicks"]) == (3, 1, 1, 1)
    assert one["event_counts"] == {"purchase": 2, "add_to_cart": 1} and one["revenue"] == Decimal("14.75")
    assert (got[2]["skipped"], got[2]["bounced"], got[2]["opened"]) == (1, True, False)
    assert (got[3]["variant"], got[3]["skipped"], got[3]["event_counts"]) == ("holdout", 1, {})
    assert (got[99]["sent"] + got[99]["failed"] + got[99]["skipped"], got[99]["opens"]) == (0, 1)

    # Ledger rows changed or removed by hand: their recipients are counted again.
    async with tenant_tx(pool, tenant) as conn:
        await conn.execute(
            "UPDATE deliveries SET status = 'sent', variant = 'C' WHERE run_id = $1 AND customer_id = 2", run
        )
        await conn.execute("DELETE FROM deliveries WHERE run_id = $1 AND customer_id = 1 AND channel = 'sms'", run)
        await conn.execute("UPDATE deliveries SET customer_id = 4 WHERE run_id = $1 AND customer_id = 3", run)
        got = await _rollup(conn, run)
        want = {r["customer_id"]: dict(r) for r in await conn.fetch(_RECOUNT_SQL, run)}
    assert {c: {k: got[c][k] for k in ("variant", "sent", "failed", "skipped")} for c in got} == {
        c: {k: want[c][k] for k in ("variant", "sent", "failed", "skipped")} for c in want
    }
    assert (got[1]["variant"], got[1]["sent"], got[1]["failed"]) == ("B", 1, 0)
    assert (got[2]["variant"], got[2]["sent"], got[2]["skipped"]) == ("C", 1, 0)
    assert (got[3]["skipped"], got[4]["variant"], got[4]["skipped"]) == (0, "holdout", 1)
    assert got[1]["opens"] == 3  # the events are untouched by the recount

    # Another tenant sees none of it.
    async with tenant_tx(pool, f"{tenant}-other") as conn:
        assert await conn.fetchval("SELECT count(*) FROM recipient_results WHERE run_id = $1", run) == 0
