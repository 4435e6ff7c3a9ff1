"""`GET /metrics` on the API (Prometheus text format) and the timing of every API request.

The API process's registry holds its own metrics (requests, tracking events, config versions
saved) and gauges read from PostgreSQL on each scrape (runs per tenant and unfinished status),
so any API process answers for the whole platform's active runs.
"""

from __future__ import annotations

import hmac
import time

import asyncpg
from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.infra.metrics import HTTP_REQUESTS, RUNS
from core.runs.models import ACTIVE_STATUSES, STORED_STATUSES

# The statuses a run row holds while the run is unfinished.
_UNFINISHED = sorted(s.value for s in ACTIVE_STATUSES if s in STORED_STATUSES)
# Across tenants, through the owner's narrow function (migration 048): counts, never rows.
_RUNS_SQL = "SELECT tenant_id, status, n FROM pennant_run_counts($1::text[])"


async def refresh_run_gauges(pool: asyncpg.Pool) -> None:
    """Set pennant_runs{tenant,status} from the runs table (every tenant)."""
    rows = await pool.fetch(_RUNS_SQL, _UNFINISHED)
    RUNS.clear()  # a tenant whose last run finished drops out instead of freezing at its old count
    for row in rows:
        RUNS.labels(row["tenant_id"], row["status"]).set(row["n"])


class RequestTimer:
    """Times each HTTP request by method, route template (never the raw path) and status."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; observe its duration once it has answered."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).observe(time.perf_counter() - started)


def install(app: FastAPI) -> None:
    """Add GET /metrics and the request timer to the app."""
    app.add_middleware(RequestTimer)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Every metric of this process, in Prometheus text format."""
        token = request.app.state.settings.metrics_token
        if token:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise HTTPException(401, "metrics need `Authorization: Bearer <METRICS_TOKEN>`")
        await refresh_run_gauges(request.app.state.pool)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
