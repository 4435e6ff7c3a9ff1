"""Results query at scale: seed one run with N ledger rows (two variants and a 10% holdout) and
3N events (2.5N message events, 0.5N customer events) straight into PostgreSQL with
generate_series (one INSERT per table, so the per-recipient rollup's triggers run as for any
other write; each statement's time is printed), then time the results (and the hourly series)
warm, several times: the SQL alone and through the API. Goal: results under 1 s at N = 1,000,000.

    .venv/bin/python -m benchmarks.results_query [N] [--reps 7] [--explain]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import statistics
import sys
import time
import uuid

import asyncpg

from benchmarks.common import make_tenant
from core.infra.db import tenant_tx
from core.results import report as results
from devstack.inprocess import local_stack

# Customer g: holdout when g % 10 = 0, else variant A when odd, B when even. Of the variants'
# customers, 2% are skipped (no consent) and 1% failed; sends spread over six hours.
_VARIANT = "CASE WHEN {g} % 10 = 0 THEN 'holdout' WHEN {g} % 2 = 1 THEN 'A' ELSE 'B' END"
_SEED_SQL = [
    """INSERT INTO campaigns (tenant_id, id, name, definition) VALUES ($1, $2, 'bench',
       '{"name": "bench", "channels": ["email"], "holdout_percent": 10,
         "variants": [{"key": "A", "template": "weekly_deals"}, {"key": "B", "template": "weekly_deals"}]}')""",
    """INSERT INTO runs (tenant_id, id, campaign_id, workflow_id, status)
       VALUES ($1, $3, $2, 'bench:' || $3::uuid::text, 'completed')""",
    f"""INSERT INTO deliveries (tenant_id, run_id, customer_id, channel, variant, status, reason,
                                idempotency_key, created_at)
        SELECT $1, $3, g, 'email', {_VARIANT.format(g="g")},
               CASE WHEN g % 10 = 0 OR g % 50 = 2 THEN 'skipped' WHEN g % 100 = 4 THEN 'failed' ELSE 'sent' END,
               CASE WHEN g % 10 = 0 THEN 'holdout' WHEN g % 50 = 2 THEN 'no_consent'
                    WHEN g % 100 = 4 THEN 'rejected' END,
               $3::uuid::text || ':' || g, $5::timestamptz + (g % 6) * interval '1 hour'
        FROM generate_series(1, $4::bigint) g""",
    # Events of the variants' customers only (the holdout got nothing): a customer c with
    # c % 10 = 0 becomes c - 1. Kinds by i % 20: 6 delivered, 7 opens (every 7th machine),
    # 4 clicks, a bounce, an unsubscribe and a complaint.
    """INSERT INTO message_events (tenant_id, run_id, customer_id, channel, kind, machine, occurred_at)
       SELECT $1, $3, c - (c % 10 = 0)::int, 'email',
              CASE WHEN i % 20 < 6 THEN 'delivered' WHEN i % 20 < 13 THEN 'open' WHEN i % 20 < 17 THEN 'click'
                   WHEN i % 20 = 17 THEN 'bounce' WHEN i % 20 = 18 THEN 'unsubscribe' ELSE 'complaint' END,
              i % 20 BETWEEN 6 AND 12 AND i % 7 = 0,
              $5::timestamptz + (i % 48) * interval '1 hour'
       FROM generate_series(1, ($4 * 5 / 2)::bigint) i, LATERAL (SELECT (i * 48271) % $4 + 1 AS c) pick""",
    f"""INSERT INTO customer_events (tenant_id, event_id, customer_id, type, occurred_at, amount, currency,
                                     run_id, channel, variant)
        SELECT $1, 'e' || i, c, CASE WHEN i % 5 = 0 THEN 'add_to_cart' ELSE 'purchase' END,
               $5::timestamptz + (i % 72) * interval '1 hour', (i % 200) + 0.99, 'USD', $3, 'email',
               {_VARIANT.format(g="c")}
        FROM generate_series(1, ($4 / 2)::bigint) i, LATERAL (SELECT (i * 16807) % $4 + 1 AS c) pick""",
]


async def seed(pool: asyncpg.Pool, tenant: str, n: int) -> tuple[str, str]:
    """Seed the campaign, its run, n ledger rows and 3n events; (campaign id, run id)."""
    campaign, run = uuid.uuid4(), uuid.uuid4()
    start = time.perf_counter()
    args = (tenant, campaign, run, n, dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC))
    async with pool.acquire() as conn:
        for sql, table in zip(
            _SEED_SQL, ("campaigns", "runs", "deliveries", "message_events", "customer_events"), strict=True
        ):
            began = time.perf_counter()
            # Each statement names some of the parameters: pass those, renumbered from $1.
            used = sorted({int(p) for p in re.findall(r"\$(\d)", sql)})
            for new, old in enumerate(used, start=1):
                sql = sql.replace(f"${old}", f"$p{new}")
            status = await conn.execute(sql.replace("$p", "$"), *(args[i - 1] for i in used))
            print(f"results_query  seed {table:<15} {status:<16} {time.perf_counter() - began:6.1f} s")
        # What autovacuum would do shortly after a load: fresh statistics and visibility map.
        for table in ("deliveries", "message_events", "customer_events", "recipient_results"):
            await conn.execute(f"VACUUM ANALYZE {table}")
    print(f"results_query  seeded {n:,} ledger rows and {3 * n:,} events in {time.perf_counter() - start:.0f} s")
    return str(campaign), str(run)


def _figures(samples: list[float]) -> str:
    return f"p50={statistics.median(samples):.0f} ms max={max(samples):.0f} ms (n={len(samples)})"


async def run(n: int = 1_000_000, reps: int = 7, explain: bool = False) -> None:
    """Seed, then time the results and series queries and print the figures."""
    async with local_stack() as stack:
        slug, http = await make_tenant(stack, customers=0)
        async with http:
            campaign, run_id = await seed(stack.pool, slug, n)
            if explain:
                async with tenant_tx(stack.pool, slug) as conn:
                    plan = await conn.fetch(
                        "EXPLAIN (ANALYZE, BUFFERS) " + results._RESULTS_SQL, slug, [uuid.UUID(run_id)], "purchase"
                    )
                print("\n".join(r[0] for r in plan))
            timings: dict[str, list[float]] = {"sql": [], "api": [], "series sql": [], "series api": []}
            for i in range(reps + 1):  # the first round warms the caches and is not counted
                t0 = time.perf_counter()
                async with tenant_tx(stack.pool, slug) as conn:
                    body = await results.results(conn, slug, scope="run", campaign_id=campaign, run_ids=[run_id])
                t1 = time.perf_counter()
                resp = await http.get(f"/runs/{run_id}/results", timeout=60)
                t2 = time.perf_counter()
                async with tenant_tx(stack.pool, slug) as conn:
                    await results.series(conn, slug, scope="run", campaign_id=campaign, run_ids=[run_id])
                t3 = time.perf_counter()
                series = await http.get(f"/runs/{run_id}/results/series", timeout=60)
                t4 = time.perf_counter()
                assert resp.status_code == 200 and series.status_code == 200, (resp.text, series.text)
                if i:
                    for name, dt_s in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                        timings[name].append(dt_s * 1000)
            total = sum(g.recipients for g in body.groups)
            assert total == n, (total, n)
            for name, samples in timings.items():
                label = "results" if "series" not in name else "series "
                print(f"results_query  {label} {name.split()[-1]:<3} at {n:,} ledger rows: {_figures(samples)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=1_000_000, help="ledger rows (events: 3n)")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions after one warm-up")
    parser.add_argument("--explain", action="store_true", help="print the results query's plan")
    args = parser.parse_args()
    asyncio.run(run(args.n, args.reps, args.explain))
    sys.stdout.flush()
    os._exit(0)  # Temporal's runtime can abort at interpreter exit (sdk-python#300)
