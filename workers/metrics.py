"""What a worker process tells operators: its /metrics endpoint, the Temporal SDK's worker
metrics, per-tenant task-queue backlog, and one log line (with timing) per activity."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer
from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.names import DELIVER_BATCH
from core.infra.logs import bind
from core.infra.metrics import BATCH_DURATION, TASK_QUEUE_BACKLOG, TASK_QUEUE_BACKLOG_AGE
from core.infra.settings import Settings
from core.infra.temporal import WORKFLOW_QUEUE, task_queue_for
from core.runs.models import Counts

log = logging.getLogger("pennant.activities")

_TASK_TYPES = {"workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY}


# Where the worker's guarded endpoint serves the Temporal SDK's metrics when METRICS_TOKEN is set.
TEMPORAL_METRICS_PATH = "/temporal-metrics"


def _sdk_metrics_bind(settings: Settings) -> str:
    """Where the SDK's own exporter listens. It takes no token, so with METRICS_TOKEN set it
    listens on loopback only and the guarded endpoint relays it (TEMPORAL_METRICS_PATH)."""
    host = "127.0.0.1" if settings.metrics_token else settings.metrics_host
    return f"{host}:{settings.temporal_metrics_port}"


def _relay_sdk_metrics(settings: Settings) -> bytes:
    """One scrape of the SDK's loopback exporter."""
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.temporal_metrics_port}/metrics", timeout=5) as answer:
        body: bytes = answer.read()
    return body


def serve_metrics(settings: Settings) -> int | None:
    """Serve this process's Pennant metrics on worker_metrics_port (a thread); the port, or None
    when off. With METRICS_TOKEN set, only `Authorization: Bearer <token>` is answered, as on the
    API (the metrics name every tenant), and the Temporal SDK's metrics, whose exporter takes no
    token, are served here too at TEMPORAL_METRICS_PATH."""
    if not settings.worker_metrics_port:
        return None
    if not settings.metrics_token:
        server, _ = start_http_server(settings.worker_metrics_port, settings.metrics_host)
        return int(server.server_port)
    metrics = make_wsgi_app()
    token = settings.metrics_token.encode()

    def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        given = str(environ.get("HTTP_AUTHORIZATION", "")).removeprefix("Bearer ").strip().encode()
        if not hmac.compare_digest(given, token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"metrics need `Authorization: Bearer <METRICS_TOKEN>`\n"]
        if environ.get("PATH_INFO") == TEMPORAL_METRICS_PATH and settings.temporal_metrics_port:
            try:
                body = _relay_sdk_metrics(settings)
            except OSError:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"the Temporal SDK's metrics exporter did not answer\n"]
            start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
            return [body]
        answer: Iterable[bytes] = metrics(environ, start_response)
        return answer

    served = make_server(
        settings.metrics_host, settings.worker_metrics_port, guarded, ThreadingWSGIServer, handler_class=_Quiet
    )
    threading.Thread(target=served.serve_forever, name="metrics", daemon=True).start()
    return int(served.server_port)


class _Quiet(WSGIRequestHandler):
    """No line per scrape on stderr (as prometheus-client's own server)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


def install_temporal_runtime(settings: Settings) -> None:
    """Give the process its one Temporal runtime: no per-Worker heartbeat, and (when
    temporal_metrics_port is set) the SDK's worker metrics (task slots, schedule-to-start
    latency, poll and task counts) at http://<metrics_host>:<temporal_metrics_port>/metrics, or,
    with METRICS_TOKEN set, on loopback only and behind the token at the worker's
    TEMPORAL_METRICS_PATH.

    Must run before the process's first Temporal client connects: clients take the default runtime.
    """
    # Worker heartbeating (on by default) starts a host-sampling thread in every Worker, one
    # per tenant queue: half the threads of a 500-tenant process, for a worker list in the UI.
    # The queue backlog metrics and the SDK's poll metrics say what operators need instead.
    metrics = None
    if settings.temporal_metrics_port:
        metrics = PrometheusConfig(bind_address=_sdk_metrics_bind(settings), durations_as_seconds=True)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=metrics), worker_heartbeat_interval=None)
    Runtime.set_default(runtime, error_if_already_set=False)


class ActivityObserver(Interceptor):
    """Binds each activity's tenant, campaign and run to its log context, logs one line when it
    ends (with its duration and, for a batch, its counts) and times batch attempts."""

    def __init__(self, presence: Callable[[str], None] | None = None) -> None:
        # Told each tenant whose activity starts or ends here (`ProcessShares.note`).
        self.presence = presence

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity of the worker."""
        return _ObservedActivity(next, self.presence)


def _context_of(args: Any) -> dict[str, str | None]:
    inp = args[0] if args else None
    return {
        "tenant": getattr(inp, "tenant", None),
        "campaign": getattr(inp, "campaign_id", None),
        "run": getattr(inp, "run_id", None),
    }


class _ObservedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, presence: Callable[[str], None] | None) -> None:
        super().__init__(next)
        self.presence = presence

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        context = _context_of(input.args)
        tenant = context["tenant"]
        if self.presence is not None and tenant:
            self.presence(tenant)
        info = activity.info()
        bind(**context, workflow_id=info.workflow_id)
        name = info.activity_type
        started = time.monotonic()
        outcome = "error"
        try:
            result = await super().execute_activity(input)
            outcome = "ok"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            elapsed = time.monotonic() - started
            extra: dict[str, Any] = {
                "activity": name,
                "attempt": info.attempt,
                "outcome": outcome,
                "duration_ms": round(elapsed * 1000, 1),
            }
            if outcome == "ok" and isinstance(result, Counts):
                extra.update(sent=result.sent, failed=result.failed, skipped=result.skipped)
            if name == DELIVER_BATCH and tenant:
                BATCH_DURATION.labels(tenant, outcome).observe(elapsed)
            if self.presence is not None and tenant:
                self.presence(tenant)
            # A failed attempt is logged by the SDK with its traceback; this line says how long it took.
            log.log(logging.INFO if outcome == "ok" else logging.WARNING, "%s %s", name, outcome, extra=extra)


class QueueStats:
    """Publishes the approximate backlog and backlog age of each polled tenant's activity queue
    (`TenantWorkers.polling`: the tenants with work; an idle tenant's queue is not described,
    which for 500 tenants was 50 calls a second) and of the shared workflow queue (as tenant
    `SHARED`), asked of Temporal every `every` seconds and as soon as those tenants change."""

    SHARED = "(shared)"

    def __init__(self, client: Client, every: float = 10.0):
        self.client = client
        self.every = every
        self._published: set[str] = set()

    async def _publish(self, label: str, queue: str, task_type: str) -> None:
        request = DescribeTaskQueueRequest(
            namespace=self.client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=_TASK_TYPES[task_type],
            report_stats=True,
        )
        try:
            stats = (await self.client.workflow_service.describe_task_queue(request)).stats
        except RPCError as exc:
            log.warning("could not read the stats of %s: %s", queue, exc.message)
            return
        age = stats.approximate_backlog_age
        TASK_QUEUE_BACKLOG.labels(label, task_type).set(stats.approximate_backlog_count)
        TASK_QUEUE_BACKLOG_AGE.labels(label, task_type).set(age.seconds + age.nanos / 1e9)

    async def refresh(self, tenants: list[str]) -> None:
        """Ask Temporal for the queues' stats; forget the tenants no longer served."""
        for gone in self._published - set(tenants):
            with contextlib.suppress(KeyError):
                TASK_QUEUE_BACKLOG.remove(gone, "activity")
                TASK_QUEUE_BACKLOG_AGE.remove(gone, "activity")
        self._published &= set(tenants)
        await self._publish(self.SHARED, WORKFLOW_QUEUE, "workflow")
        for tenant in tenants:
            await self._publish(tenant, task_queue_for(tenant), "activity")
            self._published.add(tenant)

    async def run(self, tenants: Callable[[], Iterable[str]]) -> None:
        """Refresh until cancelled; `tenants` is called for the tenants served right now."""
        due = 0.0
        while True:
            served = list(tenants())
            if time.monotonic() >= due or set(served) != self._published:
                await self.refresh(served)
                due = time.monotonic() + self.every
            await asyncio.sleep(1.0)
