"""The worker process: builds the activities once and serves the selected tenant queues."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client

from activities.audience import AudienceActivities
from activities.channels.base import ChannelAdapter
from activities.channels.email_smtp import SmtpEmailAdapter
from activities.channels.metered import MeteredAdapter
from activities.channels.push_http import HttpPushAdapter
from activities.channels.sms_http import HttpSmsAdapter
from activities.channels.webhook_http import HttpWebhookAdapter
from activities.config import ConfigActivities
from activities.delivery import DeliveryActivities
from activities.run_status import RunStatusActivities
from activities.testsend import TestSendActivities
from core.logs import setup_logging
from core.settings import Settings
from core.telemetry import setup_telemetry
from workers.metrics import QueueStats, install_temporal_runtime, serve_metrics
from workers.tenant_workers import TenantSelection, TenantWorkers

log = logging.getLogger("pennant.workers")


# Per request to an SMS, push or webhook provider; a slower answer is a transient error.
PROVIDER_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def provider_http_client(timeout: httpx.Timeout | float = PROVIDER_TIMEOUT) -> httpx.AsyncClient:
    """The one HTTP client every HTTP channel adapter of a worker process shares (one pool)."""
    return httpx.AsyncClient(
        timeout=timeout,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": "pennant-worker"},
        follow_redirects=False,
    )


def build_activities(
    pool: asyncpg.Pool, settings: Settings, http: httpx.AsyncClient | None = None
) -> list[Callable[..., Any]]:
    """Every activity a tenant worker registers, with its dependencies injected once.

    `http` is the shared provider client; one is made when not given (it lives as long as
    the process).
    """
    http = http or provider_http_client()
    providers: dict[str, ChannelAdapter] = {
        "email": SmtpEmailAdapter(settings.smtp_host, settings.smtp_port, settings.smtp_timeout_seconds),
        "sms": HttpSmsAdapter(http, settings.provider_base_url),
        "push": HttpPushAdapter(http, settings.provider_base_url),
        "webhook": HttpWebhookAdapter(http, settings.provider_base_url),
    }
    # Each provider call is timed and its outcome counted (pennant_provider_* metrics).
    adapters: dict[str, ChannelAdapter] = {name: MeteredAdapter(a) for name, a in providers.items()}
    delivery = DeliveryActivities(
        pool,
        adapters,
        public_base_url=settings.public_base_url,
        link_secret=settings.link_signing_secret or "",
    )
    return [
        ConfigActivities(pool).load_config,
        AudienceActivities(pool).plan_audience,
        AudienceActivities(pool).list_batches,
        AudienceActivities(pool).skip_remaining,
        delivery.deliver_batch,
        RunStatusActivities(pool).mark_run,
        RunStatusActivities(pool).register_run,
        TestSendActivities(pool, adapters["email"], settings.public_base_url).test_send,
    ]


async def serve(client: Client, pool: asyncpg.Pool, settings: Settings, selection: TenantSelection) -> None:
    """Serve the selected tenants' queues until cancelled, sharing one provider HTTP client."""
    async with provider_http_client() as http:
        workers = TenantWorkers(client, pool, build_activities(pool, settings, http), selection)
        stats = None
        if settings.worker_metrics_port:
            stats = asyncio.create_task(QueueStats(client).run(lambda: workers.tenants))
        try:
            await workers.run()
        finally:
            if stats is not None:
                stats.cancel()


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse `--shard i/n` into (i, n); None when not given."""
    if not text:
        return None
    index, _, count = text.partition("/")
    i, n = int(index), int(count)
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: expected i/n with 0 <= i < n")
    return i, n


async def amain(settings: Settings, tenants: list[str] | None, shard: str | None) -> None:
    """Connect to PostgreSQL and Temporal, then serve the selected tenants."""
    from core.db import create_pool
    from core.temporal import connect

    selection = TenantSelection(frozenset(tenants) if tenants else None, parse_shard(shard))
    assert settings.database_url, "DATABASE_URL must be set for a worker"
    pool = await create_pool(settings.database_url, max_size=settings.database_pool_max)
    try:
        install_temporal_runtime(settings)  # before the client, which takes the default runtime
        client = await connect(settings.temporal_address, settings.temporal_namespace)
        await serve(client, pool, settings, selection)
    finally:
        await pool.close()


def run(settings: Settings, tenants: list[str] | None = None, shard: str | None = None) -> None:
    """Entry point of `pennant worker`: configure logging and serve until stopped."""
    setup_logging(settings.log_format, settings.log_level)
    setup_telemetry(settings)  # activity spans, so each log line carries its trace id
    port = serve_metrics(settings)
    if port:
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    if settings.temporal_metrics_port:
        log.info("Temporal SDK metrics on http://%s:%d/metrics", settings.metrics_host, settings.temporal_metrics_port)
    asyncio.run(amain(settings, tenants, shard))
