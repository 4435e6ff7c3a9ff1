"""Per-tenant, per-channel send rate limits (`channels.<name>.rate_limit_per_second`).

One token bucket per (tenant, channel) in each worker process, shared by every batch that
process runs concurrently. With several worker processes serving the same tenant, each holds
the rate on its own: shard tenants (`pennant worker --shard i/n`) so one process serves each.
"""

from __future__ import annotations

import asyncio
import time

from core.metrics import RATE_LIMIT_WAIT


class TokenBucket:
    """Allows `rate` sends per second on average, with bursts of up to one second's worth."""

    def __init__(self, rate: float, tenant: str = "", channel: str = ""):
        self.rate = rate
        self.wait_seconds = RATE_LIMIT_WAIT.labels(tenant, channel)
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, n: int = 1) -> float:
        """Wait until `n` sends are allowed; returns the seconds waited."""
        waited = 0.0
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                take = min(n, self.capacity)
                if self.tokens >= take:
                    self.tokens -= take
                    n -= int(take)
                    if n <= 0:
                        self.wait_seconds.observe(waited)
                        return waited
                    continue
                pause = (take - self.tokens) / self.rate
                await asyncio.sleep(pause)
                waited += pause


class RateLimits:
    """The buckets of one worker process, rebuilt when a tenant's configured rate changes."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def bucket(self, tenant: str, channel: str, rate: float | None) -> TokenBucket | None:
        """The token bucket of (tenant, channel), or None when the channel has no limit."""
        if rate is None:
            return None
        current = self._buckets.get((tenant, channel))
        if current is None or current.rate != rate:
            current = self._buckets[(tenant, channel)] = TokenBucket(rate, tenant, channel)
        return current
