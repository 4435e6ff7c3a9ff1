"""The FastAPI front door: an app factory whose lifespan owns the pool and the Temporal client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.types import ASGIApp

from api import console, errors, idempotency, metrics, openapi
from api.auth_limit import AuthFailureGuard, AuthFailureLimiter
from api.input_guard import InputGuard
from api.routes import (
    campaigns,
    customers,
    events,
    health,
    ingest,
    keys,
    optimisation,
    profiles,
    provider_events,
    results,
    runs,
    schedules,
    secrets,
    segments,
    sending_domains,
    sources,
    suppressions,
    tenants,
    tracking,
    unsubscribe,
)
from api.security_headers import SecurityHeaders
from core.content.check_pool import check_pool
from core.infra.db import create_pool, migrate
from core.infra.settings import Settings, get_settings
from core.infra.telemetry import setup_telemetry
from core.infra.temporal import connect
from core.security.egress import configure_process
from core.tenants.keys import store_key


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Outside PENNANT_ENV=dev, refuse missing, short or shipped secrets before anything starts.
    settings.check_production()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set (`pennant dev` sets it for the embedded PostgreSQL)")
        app.state.pool = await create_pool(
            settings.database_url, min_size=settings.database_pool_min, max_size=settings.database_pool_max
        )
        try:
            # Idempotent and advisory-locked, so API and workers may start in any order. As the
            # owner role: the app role owns nothing and may not create admin keys.
            owner = await create_pool(settings.owner_database_url or settings.database_url, min_size=1, max_size=1)
            try:
                await migrate(owner)
                if settings.admin_key:
                    await store_key(owner, settings.admin_key, None, "ADMIN_KEY setting")
            finally:
                await owner.close()
            app.state.temporal = await connect(settings.temporal_address, settings.temporal_namespace)
            # Start the save-time check children now, beside serving, so the first config save
            # does not pay for the forkserver's start (about a second).
            warming = asyncio.create_task(check_pool().warm())
            # A failed warm-up only means the first check starts its child itself.
            warming.add_done_callback(lambda task: task.cancelled() or task.exception())
            yield
            warming.cancel()
        finally:
            await app.state.pool.close()

    setup_telemetry(settings)
    app = FastAPI(
        title="Pennant",
        version="0.1.0",
        description="Multi-tenant marketing campaigns on Temporal",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Tenant endpoints this process calls or saves are checked against the operator's EGRESS_ALLOW.
    configure_process(settings.egress_allow, settings.egress_dns_server)
    errors.install(app)
    # The last added runs first: refuse a blocked client before reading its body, and check
    # the body before an idempotency key is claimed for it.
    idempotency.install(app)
    openapi.install(app)
    metrics.install(app)  # GET /metrics and request timing
    app.add_middleware(InputGuard, fastapi_app=app, max_request_bytes=settings.max_request_bytes)
    app.state.auth_limiter = AuthFailureLimiter(settings.auth_failure_limit, settings.auth_failure_window_seconds)
    app.add_middleware(AuthFailureGuard, limiter=app.state.auth_limiter)
    for module in (
        health,
        tenants,
        keys,
        secrets,
        sending_domains,
        campaigns,
        runs,
        results,
        schedules,
        segments,
        suppressions,
        unsubscribe,
        provider_events,
        customers,
        events,
        sources,
        profiles,
        optimisation,
    ):
        app.include_router(module.router)
    console.install(app)  # the marketer console at /console
    FastAPIInstrumentor.instrument_app(app)
    # Last: the open and click endpoints answer in front of the whole stack, tracing included.
    tracking.install(app)
    # The Segment-compatible tracking API reads its own bodies (one bad event is not a bad body).
    ingest.install(app)
    # Outermost, around the tracking lane too: every response carries the security headers.
    build = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        return SecurityHeaders(build(), settings)

    app.build_middleware_stack = build_with_headers  # type: ignore[method-assign]
    return app
