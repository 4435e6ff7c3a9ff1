"""GET /healthz: 200 when PostgreSQL and Temporal answer, 503 naming what is down."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import PoolDep, TemporalDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(pool: PoolDep, temporal: TemporalDep) -> JSONResponse:
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
    body = {"status": "ok" if not down else f"down: {', '.join(down)}", "checks": checks}
    return JSONResponse(status_code=503 if down else 200, content=body)
