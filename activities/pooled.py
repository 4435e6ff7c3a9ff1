"""The base of the activity classes whose one dependency is the PostgreSQL pool."""

from __future__ import annotations

import asyncpg


class PooledActivities:
    """Activities that read and write through the worker's PostgreSQL pool (built once by `workers/`)."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
