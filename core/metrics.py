"""Pennant's Prometheus metrics, defined once per process (prometheus-client's default registry).

Labels stay bounded: tenant, channel, status, reason, outcome, kind; never a customer or a run.
The API serves them at /metrics (api/metrics.py), each worker process on `worker_metrics_port`
(workers/metrics.py); the Temporal SDK's own worker metrics are on `temporal_metrics_port`.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

# Provider calls and batches range from milliseconds (a sink on localhost) to the provider
# timeout and beyond (a batch of a few hundred messages).
_PROVIDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RENDER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

MESSAGES = Counter(
    "pennant_messages",
    "Messages recorded in the ledger, by outcome (sent, failed, skipped) and reason.",
    ["tenant", "channel", "status", "reason"],
)
BATCH_DURATION = Histogram(
    "pennant_batch_duration_seconds",
    "Time one batch activity attempt took, by outcome (ok, error, cancelled).",
    ["tenant", "outcome"],
    buckets=_BATCH_BUCKETS,
)
PROVIDER_REQUEST_DURATION = Histogram(
    "pennant_provider_request_duration_seconds",
    "Time one provider call for a chunk of messages took, by outcome (ok, permanent, transient, rate_limited).",
    ["tenant", "channel", "outcome"],
    buckets=_PROVIDER_BUCKETS,
)
PROVIDER_MESSAGES = Counter(
    "pennant_provider_messages",
    "Messages handed to a provider, by what became of each (ok, permanent, transient, rate_limited).",
    ["tenant", "channel", "outcome"],
)
RATE_LIMIT_WAIT = Histogram(
    "pennant_rate_limit_wait_seconds",
    "Time a chunk waited for the tenant's channel rate limit.",
    ["tenant", "channel"],
    buckets=_WAIT_BUCKETS,
)
RENDER_DURATION = Histogram(
    "pennant_render_duration_seconds",
    "Time rendering one message took.",
    ["tenant", "channel"],
    buckets=_RENDER_BUCKETS,
)
RUN_TRANSITIONS = Counter(
    "pennant_run_transitions",
    "Runs entering a status (running: started delivering; completed, cancelled, failed: finished).",
    ["tenant", "status"],
)
RUNS = Gauge(
    "pennant_runs",
    "Runs in each unfinished status right now, from PostgreSQL (refreshed on each scrape of the API).",
    ["tenant", "status"],
)
TRACKING_EVENTS = Counter(
    "pennant_tracking_events",
    "Engagement events recorded (open, click, unsubscribe, delivered, bounce, complaint, …).",
    ["tenant", "kind"],
)
CONFIG_VERSIONS_SAVED = Counter(
    "pennant_config_versions_saved",
    "New tenant config versions stored.",
    ["tenant"],
)
TASK_QUEUE_BACKLOG = Gauge(
    "pennant_task_queue_backlog",
    "Approximate tasks waiting in a tenant's task queue (Temporal's DescribeTaskQueue stats).",
    ["tenant", "task_type"],
)
TASK_QUEUE_BACKLOG_AGE = Gauge(
    "pennant_task_queue_backlog_age_seconds",
    "Age of the oldest task waiting in a tenant's task queue.",
    ["tenant", "task_type"],
)
HTTP_REQUESTS = Histogram(
    "pennant_http_request_duration_seconds",
    "API requests by route template, method and status code.",
    ["method", "route", "status"],
    buckets=_PROVIDER_BUCKETS,
)

# Skip reasons are identifiers from code (holdout, no_consent, suppressed, …); a failure's
# reason is the provider's own text, which would make a label per distinct message.
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,39}")


def reason_label(status: str, reason: str | None) -> str:
    """A bounded label for a ledger reason: identifiers as they are, provider text as one value."""
    if not reason:
        return ""
    if _IDENTIFIER.fullmatch(reason):
        return reason
    return "provider_rejected" if status == "failed" else "other"


def count_messages(tenant: str, rows: Iterable[tuple[str, str, str | None]]) -> None:
    """Count ledger rows given as (channel, status, reason): one increment per label set."""
    tally = Tally((channel, status, reason_label(status, reason)) for channel, status, reason in rows)
    for (channel, status, reason), n in tally.items():
        MESSAGES.labels(tenant, channel, status, reason).inc(n)
