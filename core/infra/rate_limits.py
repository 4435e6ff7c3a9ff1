"""Token buckets shared by every API process, kept in PostgreSQL (migration 053).

A limit enforced in each process on its own is N times looser behind N processes, and a client
moved between processes by a load balancer starts afresh on each. One row per bucket, updated by
one SECURITY DEFINER function call (`pennant_take_tokens`), makes the count one for the whole
deployment at the cost of one short statement per decision; the application role may call the
function but cannot read or write the buckets themselves.

A bucket holds up to `burst` tokens and refills at `rate` tokens a second. `admit` takes `cost`
tokens when there are enough (or, with `need`, when at least `need` are there); `debit` takes
them regardless, so a bucket may go into debt that refilling repays. The pair serves a limit
that must be decided before the work is known (admit with cost 0: "is this bucket in debt?")
and charged once it is (debit the count).
"""

from __future__ import annotations

import asyncpg

_TAKE = "SELECT pennant_take_tokens($1, $2, $3, $4, $5, $6)"


async def admit(
    pool: asyncpg.Pool, key: str, *, rate: float, burst: float, cost: float = 1.0, need: float | None = None
) -> float:
    """Take `cost` tokens from bucket `key` if it holds at least `need` (default: `cost`).

    Returns 0.0 when taken, else the seconds until `need` tokens will be there (nothing taken).
    """
    wait = await pool.fetchval(_TAKE, key, rate, burst, cost, cost if need is None else need, False)
    return float(wait)


async def debit(pool: asyncpg.Pool, key: str, *, rate: float, burst: float, cost: float, need: float = 1.0) -> float:
    """Take `cost` tokens from bucket `key` whatever it holds (the bucket may go into debt).

    Returns 0.0 while the bucket could pay `cost` once more, else the seconds until it holds
    `need` tokens again (how long a caller counting failures should block).
    """
    wait = await pool.fetchval(_TAKE, key, rate, burst, cost, need, True)
    return float(wait)


async def remaining(pool: asyncpg.Pool, key: str, *, rate: float, burst: float) -> float:
    """Seconds until bucket `key` holds one token again (0.0 if it holds one now); takes nothing."""
    return await admit(pool, key, rate=rate, burst=burst, cost=0.0, need=1.0)
