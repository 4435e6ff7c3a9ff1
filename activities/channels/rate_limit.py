"""Per-tenant, per-channel send rate limits (`channels.<name>.rate_limit_per_second`).

One token bucket per (tenant, channel) in each worker process, shared by every batch that
process runs concurrently. The N processes of one `pennant worker --processes N` each take
1/N of the rate, so together they hold it (a process with no batch of that tenant leaves its
share unused: the limit is never exceeded, at times not reached). Separate `pennant worker`
commands serving the same tenant each hold the whole rate: shard tenants over hosts
(`--shard i/n`) so one command serves each.
"""

from __future__ import annotations

import asyncio
import time

from core.infra.metrics import RATE_LIMIT_WAIT


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


# The fraction of each configured rate this process may use (see the module docstring).
_process_share = 1.0


def set_process_share(share: float) -> None:
    """Make every bucket of this process allow `share` (0 < share <= 1) of its configured rate."""
    global _process_share
    if not 0 < share <= 1:
        raise ValueError(f"a process share of a rate is in (0, 1], not {share}")
    _process_share = share


class RateLimits:
    """The buckets of one worker process, rebuilt when a tenant's configured rate changes."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def bucket(self, tenant: str, channel: str, rate: float | None) -> TokenBucket | None:
        """The token bucket of (tenant, channel), or None when the channel has no limit."""
        if rate is None:
            return None
        limit = rate * _process_share
        current = self._buckets.get((tenant, channel))
        if current is None or current.rate != limit:
            current = self._buckets[(tenant, channel)] = TokenBucket(limit, tenant, channel)
        return current
