"""GET /healthz: 200 when PostgreSQL and Temporal answer, 503 naming what is down."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from api.deps import PoolDep, TemporalDep
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(pool: PoolDep, temporal: TemporalDep, response: Response) -> Health:
    """Whether PostgreSQL and Temporal answer: 200, or 503 naming what is down."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), timeout=3)
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "down"; the message says which
        checks["postgres"] = f"down: {exc.__class__.__name__}: {exc}"
    try:
        await asyncio.wait_for(temporal.service_client.check_health(), timeout=3)
        checks["temporal"] = "ok"
    except Exception as exc:
        checks["temporal"] = f"down: {exc.__class__.__name__}: {exc}"
    down = [name for name, state in checks.items() if state != "ok"]
    response.status_code = 503 if down else 200
    return Health(status="ok" if not down else f"down: {', '.join(down)}", checks=checks)
