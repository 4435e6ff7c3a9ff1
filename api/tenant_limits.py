"""Per-tenant limits on the writes that cost the platform something per call: secret writes
(each is an encryption and an audit row) and `:suggest` (each may call the tenant's provider).
One tenant's script hammering them gets 429 with Retry-After; every other tenant is unaffected.

In-process sliding windows, like the auth-failure limiter (api/auth_limit.py): behind several
API processes each counts on its own, so the effective limit is N times this one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from fastapi import Depends, HTTPException, Request

from api.deps import TenantDep

# Calls per tenant per minute: ample for people and deploy scripts, small for a runaway loop.
SECRET_WRITES_PER_MINUTE = 30
SUGGESTIONS_PER_MINUTE = 10
_WINDOW_SECONDS = 60.0


def per_tenant_limit(action: str, per_minute: int) -> Any:
    """A dependency refusing the tenant's `per_minute + 1`th `action` within a minute (429)."""

    async def check(tenant: TenantDep, request: Request) -> None:
        state = request.app.state
        if getattr(state, "tenant_limits", None) is None:
            state.tenant_limits = {}
        windows: dict[tuple[str, str], deque[float]] = state.tenant_limits
        now = time.monotonic()
        window = windows.setdefault((action, tenant), deque())
        while window and now - window[0] >= _WINDOW_SECONDS:
            window.popleft()
        if len(window) >= per_minute:
            retry = max(1, math.ceil(_WINDOW_SECONDS - (now - window[0])))
            raise HTTPException(
                429,
                f"{action}: at most {per_minute} a minute per tenant; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        window.append(now)

    return Depends(check)
