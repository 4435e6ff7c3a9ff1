"""Per-tenant limits on the writes that cost the platform something per call: secret writes
(each is an encryption and an audit row) and `:suggest` (each may call the tenant's provider).
One tenant's script hammering them gets 429 with Retry-After; every other tenant is unaffected.

Token buckets shared by every API process (core/infra/rate_limits.py), so the limit is one for
the deployment however many processes serve it: a burst of `per_minute` calls, refilling at
`per_minute` a minute.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Depends, HTTPException

from api.deps import PoolDep, TenantDep
from core.infra import rate_limits

# Calls per tenant per minute: ample for people and deploy scripts, small for a runaway loop.
SECRET_WRITES_PER_MINUTE = 30
SUGGESTIONS_PER_MINUTE = 10


def per_tenant_limit(action: str, per_minute: int) -> Any:
    """A dependency refusing the tenant's `action` once its `per_minute` allowance is spent (429)."""

    async def check(tenant: TenantDep, pool: PoolDep) -> None:
        wait = await rate_limits.admit(pool, f"{action}:{tenant}", rate=per_minute / 60.0, burst=per_minute)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise HTTPException(
                429,
                f"{action}: at most {per_minute} a minute per tenant; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    return Depends(check)
