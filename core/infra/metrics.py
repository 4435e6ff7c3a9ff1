"""Pennant's Prometheus metrics, defined once per process (prometheus-client's default registry),
and mirrored to OpenTelemetry metrics (OTLP) when `OTEL_EXPORTER=otlp`.

Labels stay bounded: tenant, channel, status, reason, outcome, kind; never a customer or a run.
The API serves them at /metrics (api/metrics.py), each worker process on `worker_metrics_port`
(workers/metrics.py); the Temporal SDK's own worker metrics are on `temporal_metrics_port`.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import Any

import prometheus_client
from opentelemetry.metrics import Meter

# Provider calls and batches range from milliseconds (a sink on localhost) to the provider
# timeout and beyond (a batch of a few hundred messages).
_PROVIDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RENDER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Series:
    """One labelled series: records into Prometheus, and into OpenTelemetry when mirrored."""

    def __init__(self, prometheus: Any, mirror: Any, attributes: dict[str, str]):
        self._prometheus = prometheus
        self._mirror = mirror
        self._attributes = attributes

    def inc(self, amount: float = 1) -> None:
        """Add to a counter."""
        self._prometheus.inc(amount)
        if self._mirror is not None:
            self._mirror.add(amount, self._attributes)

    def observe(self, amount: float) -> None:
        """Record one value of a histogram."""
        self._prometheus.observe(amount)
        if self._mirror is not None:
            self._mirror.record(amount, self._attributes)

    def set(self, value: float) -> None:
        """Set a gauge."""
        self._prometheus.set(value)
        if self._mirror is not None:
            self._mirror.set(value, self._attributes)


class Family:
    """A metric and its label names; `labels(...)` gives the series to record into."""

    def __init__(self, kind: str, name: str, documentation: str, labelnames: Sequence[str], **options: Any):
        self.kind, self.name, self.documentation, self.labelnames = kind, name, documentation, tuple(labelnames)
        self.buckets: Sequence[float] | None = options.get("buckets")
        metric_class = {"counter": prometheus_client.Counter, "histogram": prometheus_client.Histogram}
        self.prometheus = metric_class.get(kind, prometheus_client.Gauge)(name, documentation, labelnames, **options)
        self.mirror: Any = None
        self._series: dict[tuple[str, ...], Series] = {}
        FAMILIES.append(self)

    def labels(self, *values: str) -> Series:
        """The series with these label values (in the order of the label names)."""
        found = self._series.get(values)
        if found is None:
            attributes = dict(zip(self.labelnames, values, strict=True))
            found = self._series[values] = Series(self.prometheus.labels(*values), self.mirror, attributes)
        return found

    def remove(self, *values: str) -> None:
        """Drop one series (a gauge of a tenant no longer served)."""
        self._series.pop(values, None)
        self.prometheus.remove(*values)

    def clear(self) -> None:
        """Drop every series."""
        self._series.clear()
        self.prometheus.clear()

    def mirror_to(self, meter: Meter | None) -> None:
        """Record into an OpenTelemetry instrument of `meter` as well (None: stop)."""
        if meter is None:
            self.mirror = None
        elif self.kind == "counter":
            self.mirror = meter.create_counter(self.name, description=self.documentation)
        elif self.kind == "histogram":
            unit = "s" if self.name.endswith("_seconds") else ""
            self.mirror = meter.create_histogram(
                self.name, unit, self.documentation, explicit_bucket_boundaries_advisory=self.buckets
            )
        else:
            self.mirror = meter.create_gauge(self.name, description=self.documentation)
        self._series.clear()  # series made before hold the previous mirror


FAMILIES: list[Family] = []


MESSAGES = Family(
    "counter",
    "pennant_messages",
    "Messages recorded in the ledger, by outcome (sent, failed, skipped) and reason.",
    ["tenant", "channel", "status", "reason"],
)
BATCH_DURATION = Family(
    "histogram",
    "pennant_batch_duration_seconds",
    "Time one batch activity attempt took, by outcome (ok, error, cancelled).",
    ["tenant", "outcome"],
    buckets=_BATCH_BUCKETS,
)
PROVIDER_REQUEST_DURATION = Family(
    "histogram",
    "pennant_provider_request_duration_seconds",
    "Time one provider call for a chunk of messages took, by outcome (ok, permanent, transient, rate_limited).",
    ["tenant", "channel", "outcome"],
    buckets=_PROVIDER_BUCKETS,
)
PROVIDER_MESSAGES = Family(
    "counter",
    "pennant_provider_messages",
    "Messages handed to a provider, by what became of each (ok, permanent, transient, rate_limited).",
    ["tenant", "channel", "outcome"],
)
RATE_LIMIT_WAIT = Family(
    "histogram",
    "pennant_rate_limit_wait_seconds",
    "Time a chunk waited for the tenant's channel rate limit.",
    ["tenant", "channel"],
    buckets=_WAIT_BUCKETS,
)
RENDER_DURATION = Family(
    "histogram",
    "pennant_render_duration_seconds",
    "Time rendering one message took.",
    ["tenant", "channel"],
    buckets=_RENDER_BUCKETS,
)
RUN_TRANSITIONS = Family(
    "counter",
    "pennant_run_transitions",
    "Runs entering a status (running: started delivering; completed, cancelled, failed: finished).",
    ["tenant", "status"],
)
RUNS = Family(
    "gauge",
    "pennant_runs",
    "Runs in each unfinished status right now, from PostgreSQL (refreshed on each scrape of the API).",
    ["tenant", "status"],
)
TRACKING_EVENTS = Family(
    "counter",
    "pennant_tracking_events",
    "Engagement events recorded (open, click, unsubscribe, delivered, bounce, complaint, …).",
    ["tenant", "kind"],
)
INGESTED_EVENTS = Family(
    "counter",
    "pennant_ingested_events",
    "Events in through the tracking API (/v1/batch …) by outcome: accepted, duplicate, rejected.",
    ["tenant", "outcome"],
)
REJECTED_EVENTS = Family(
    "counter",
    "pennant_rejected_events",
    "Events the tracking API rejected, by the field at fault (type, event, userId, timestamp, …).",
    ["tenant", "field"],
)
INGEST_DURATION = Family(
    "histogram",
    "pennant_ingest_seconds",
    "One tracking API call: body read, checked and committed.",
    ["tenant"],
    buckets=_WAIT_BUCKETS,
)
CONFIG_VERSIONS_SAVED = Family(
    "counter",
    "pennant_config_versions_saved",
    "New tenant config versions stored.",
    ["tenant"],
)
TASK_QUEUE_BACKLOG = Family(
    "gauge",
    "pennant_task_queue_backlog",
    'Approximate tasks waiting in a tenant\'s activity queue, or (tenant "(shared)") in the '
    "shared workflow queue (Temporal's DescribeTaskQueue stats).",
    ["tenant", "task_type"],
)
TASK_QUEUE_BACKLOG_AGE = Family(
    "gauge",
    "pennant_task_queue_backlog_age_seconds",
    "Age of the oldest task waiting in a tenant's activity queue or the shared workflow queue.",
    ["tenant", "task_type"],
)
HTTP_REQUESTS = Family(
    "histogram",
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


def mirror_to_otel(meter: Meter | None) -> None:
    """Record every Pennant metric into OpenTelemetry instruments of `meter` too (None: stop)."""
    for family in FAMILIES:
        family.mirror_to(meter)
