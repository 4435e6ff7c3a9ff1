"""The worker process: builds the activities once and serves the selected tenant queues."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client

from activities.audience import AudienceActivities
from activities.channels.base import ChannelAdapter
from activities.channels.email_smtp import SmtpEmailAdapter
from activities.channels.metered import MeteredAdapter
from activities.channels.push_http import HttpPushAdapter
from activities.channels.rate_limit import set_process_share
from activities.channels.sms_http import HttpSmsAdapter
from activities.channels.webhook_http import HttpWebhookAdapter
from activities.config import ConfigActivities
from activities.cross_channel import CrossChannelActivities
from activities.delivery import DeliveryActivities
from activities.experiments import ExperimentActivities
from activities.run_start import RunStartActivities
from activities.run_status import RunStatusActivities
from activities.testsend import TestSendActivities
from core.deliverability.dkim import DkimKeys
from core.infra.fair_turns import ProcessShares
from core.infra.logs import setup_logging
from core.infra.settings import Settings
from core.infra.telemetry import setup_telemetry
from core.security.egress import EgressGuard
from core.security.secrets import SecretResolver
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
    pool: asyncpg.Pool, settings: Settings, http: httpx.AsyncClient | None = None, shares: ProcessShares | None = None
) -> list[Callable[..., Any]]:
    """Every activity a tenant worker registers, with its dependencies injected once.

    `http` is the shared provider client; one is made when not given (it lives as long as
    the process). `shares` are the process's CPU turns and batch slots (`process_shares`), made
    when not given.
    """
    http = http or provider_http_client()
    shares = shares or process_shares(settings)
    secrets = SecretResolver(pool, settings.secrets_keyring)
    # Endpoints a tenant set go through the guard (EGRESS_ALLOW), within a provider call's time.
    guard = EgressGuard.from_settings(settings, deadline_seconds=PROVIDER_TIMEOUT.read or 10.0)
    providers: dict[str, ChannelAdapter] = {
        "email": SmtpEmailAdapter(
            settings.smtp_host, settings.smtp_port, settings.smtp_timeout_seconds, guard, DkimKeys(pool, secrets)
        ),
        "sms": HttpSmsAdapter(http, settings.provider_base_url, secrets, guard=guard),
        "push": HttpPushAdapter(http, settings.provider_base_url, secrets, guard=guard),
        "webhook": HttpWebhookAdapter(http, settings.provider_base_url, secrets, guard=guard),
    }
    # Each provider call is timed and its outcome counted (pennant_provider_* metrics).
    adapters: dict[str, ChannelAdapter] = {name: MeteredAdapter(a) for name, a in providers.items()}
    delivery = DeliveryActivities(
        pool,
        adapters,
        public_base_url=settings.public_base_url,
        link_secret=settings.link_signing_secret or "",
        # One per process, shared by every tenant's Worker: tenants take turns at rendering.
        turns=shares.cpu,
        slots=shares.slots,
    )
    return [
        ConfigActivities(pool).load_config,
        RunStartActivities(pool).begin_run,
        AudienceActivities(pool).plan_audience,
        AudienceActivities(pool).list_batches,
        AudienceActivities(pool).skip_remaining,
        CrossChannelActivities(pool).fallback_due,
        CrossChannelActivities(pool).plan_fallback,
        delivery.deliver_batch,
        ExperimentActivities(pool).prepare_experiment,
        ExperimentActivities(pool).record_decide_at,
        ExperimentActivities(pool).decide_winner,
        RunStatusActivities(pool).mark_run,
        RunStatusActivities(pool).register_run,
        TestSendActivities(pool, adapters["email"], settings.public_base_url).test_send,
    ]


def process_shares(settings: Settings) -> ProcessShares:
    """The process's CPU turns and batch slots (`worker_batch_slots`), shared by every tenant."""
    return ProcessShares(settings.worker_batch_slots)


async def serve(client: Client, pool: asyncpg.Pool, settings: Settings, selection: TenantSelection) -> None:
    """Serve the selected tenants' queues until cancelled, sharing one provider HTTP client and
    the CPU turns and batch slots, which every activity tells whose work it is (`ProcessShares.note`)."""
    async with provider_http_client() as http:
        shares = process_shares(settings)
        activities = build_activities(pool, settings, http, shares)
        workers = TenantWorkers(client, pool, activities, selection, presence=shares.note)
        stats = None
        if settings.worker_metrics_port:
            stats = asyncio.create_task(QueueStats(client).run(lambda: workers.polling))
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
    """Connect to PostgreSQL and Temporal, then serve the selected tenants until SIGTERM or SIGINT."""
    from core.infra.db import create_pool
    from core.infra.temporal import connect

    # A stop signal cancels this task: every tenant Worker shuts down (in-flight activities are
    # cancelled and retried elsewhere) instead of the process vanishing mid-call.
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    selection = TenantSelection(frozenset(tenants) if tenants else None, parse_shard(shard))
    assert settings.database_url, "DATABASE_URL must be set for a worker"
    pool = await create_pool(settings.database_url, max_size=settings.database_pool_max)
    try:
        install_temporal_runtime(settings)  # before the client, which takes the default runtime
        client = await connect(settings.temporal_address, settings.temporal_namespace)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(client, pool, settings, selection)
    finally:
        await pool.close()


def run(
    settings: Settings, tenants: list[str] | None = None, shard: str | None = None, processes: int | None = None
) -> int:
    """Entry point of `pennant worker`: serve until stopped, in this process or (`processes`
    above 1; default one per core) in that many child processes that poll the same queues.
    The exit status."""
    # Outside PENNANT_ENV=dev, refuse missing, short or shipped secrets before serving anything.
    settings.check_production()
    count = processes or settings.worker_processes or os.cpu_count() or 1
    if count > 1:
        return supervise(settings, tenants, shard, count)
    _serve_process(settings, tenants, shard)
    return 0


def _serve_process(settings: Settings, tenants: list[str] | None, shard: str | None, index: int | None = None) -> None:
    """Configure logging, telemetry and metrics, then serve in this process until stopped."""
    setup_logging(settings.log_format, settings.log_level)
    if index is not None:
        _tag_log_records(index)
    setup_telemetry(settings)  # activity spans, so each log line carries its trace id
    port = serve_metrics(settings)
    if port:
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    if settings.temporal_metrics_port:
        log.info("Temporal SDK metrics on http://%s:%d/metrics", settings.metrics_host, settings.temporal_metrics_port)
    with contextlib.suppress(asyncio.CancelledError):  # stopped before it was serving
        asyncio.run(amain(settings, tenants, shard))


def _tag_log_records(index: int) -> None:
    # Every line a child logs names the child (and its pid), so one log stream shows which
    # process ran which batch.
    pid = os.getpid()

    def tag(record: logging.LogRecord) -> bool:
        record.__dict__.update(worker_process=index, pid=pid)
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)


# How long the parent waits for its children after forwarding SIGTERM, and at least how long
# it waits before starting a child again that died (so a crash loop does not spin).
STOP_GRACE_SECONDS = 30.0
RESTART_BACKOFF_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1


def _child_main(settings: Settings, tenants: list[str] | None, shard: str | None, index: int, count: int) -> None:
    """One child of `pennant worker --processes N`: its own event loop, pool and Temporal client."""
    if sys.platform == "linux":
        # Die with the parent, even when it is SIGKILLed and cannot forward anything: an
        # orphaned child would go on serving queues nobody supervises.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(1)  # the parent died before the line above
    # The children serve the same tenants: each sends at 1/count of a tenant's channel rate limit.
    set_process_share(1 / count)
    status = 0
    try:
        _serve_process(settings.model_copy(update=child_ports(settings, index)), tenants, shard, index)
    except BaseException:
        logging.getLogger("pennant.workers").exception("worker process %d failed", index)
        status = 1
    # Temporal's runtime can abort at interpreter exit (sdk-python#300): flush, then leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# Child i's metrics ports are the configured ones plus PORT_STEP·i: with the usual adjacent pair
# (9464 and 9465) the two series interleave and never meet. A step of 1 made child 1's Pennant
# metrics take child 0's Temporal SDK port, and one of them failed to start again every second.
PORT_STEP = 2


def child_ports(settings: Settings, index: int) -> dict[str, int]:
    """The metrics ports of worker process `index` (those configured, offset by PORT_STEP·index)."""
    ports: dict[str, int] = {}
    if settings.worker_metrics_port:
        ports["worker_metrics_port"] = settings.worker_metrics_port + PORT_STEP * index
    if settings.temporal_metrics_port:
        ports["temporal_metrics_port"] = settings.temporal_metrics_port + PORT_STEP * index
    return ports


def port_clash(settings: Settings, count: int) -> str | None:
    """Why `count` processes' metrics ports would collide, or None."""
    seen: dict[int, str] = {}
    for index in range(count):
        for name, port in child_ports(settings, index).items():
            if port in seen:
                return (
                    f"{name.upper()} of worker process {index} would be {port}, already {seen[port]}; "
                    f"choose WORKER_METRICS_PORT and TEMPORAL_METRICS_PORT an odd number apart"
                )
            seen[port] = f"{name.upper()} of worker process {index}"
    return None


def supervise(settings: Settings, tenants: list[str] | None, shard: str | None, count: int) -> int:
    """Run `count` worker processes (spawned, not forked: each starts its own Temporal runtime
    and event loop), start again one that dies, and on SIGTERM or SIGINT forward SIGTERM and wait
    for them; the exit status."""
    setup_logging(settings.log_format, settings.log_level)
    clash = port_clash(settings, count)
    if clash:
        log.error("cannot start %d worker processes: %s", count, clash)
        return 2
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(index: int) -> BaseProcess:
        child = context.Process(
            target=_child_main,
            args=(settings, tenants, shard, index, count),
            name=f"pennant-worker-{index}",
            daemon=False,
        )
        child.start()
        log.info("worker process %d of %d started (pid %s)", index, count, child.pid)
        return child

    children = {index: start(index) for index in range(count)}
    started = dict.fromkeys(children, time.monotonic())
    while not stopping:
        # A short wait so that a stop signal is noticed within a fraction of a second.
        multiprocessing.connection.wait([c.sentinel for c in children.values()], timeout=0.2)
        for index, child in list(children.items()):
            if child.exitcode is None or stopping:
                continue
            log.error("worker process %d (pid %s) exited with %s; starting it again", index, child.pid, child.exitcode)
            time.sleep(max(0.0, RESTART_BACKOFF_SECONDS - (time.monotonic() - started[index])))
            children[index] = start(index)
            started[index] = time.monotonic()
    log.info("stopping %d worker processes", count)
    for child in children.values():
        if child.exitcode is None and child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children.values():
        child.join(max(0.0, deadline - time.monotonic()))
        if child.exitcode is None:
            log.warning("worker process %s did not stop within %.0f s; killing it", child.pid, STOP_GRACE_SECONDS)
            child.kill()
            child.join()
    return 0
