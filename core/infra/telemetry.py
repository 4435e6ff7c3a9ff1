"""OpenTelemetry, set up once per process; the exporter is a setting (none, console, otlp)."""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from core.infra.logs import bind
from core.infra.metrics import mirror_to_otel
from core.infra.settings import Settings

_provider: TracerProvider | None = None


def setup_telemetry(settings: Settings, extra_processors: list[SpanProcessor] | None = None) -> TracerProvider:
    """Install the global tracer provider (idempotent: later calls only add processors)."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
        if settings.otel_exporter == "console":
            _provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif settings.otel_exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = settings.otel_exporter_otlp_endpoint
            exporter = (
                OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces") if endpoint else OTLPSpanExporter()
            )
            _provider.add_span_processor(BatchSpanProcessor(exporter))
            # Pennant's metrics go out beside the traces as well as on /metrics.
            meters = otlp_meter_provider(settings)
            metrics.set_meter_provider(meters)
            mirror_to_otel(meters.get_meter("pennant"))
        trace.set_tracer_provider(_provider)
    for processor in extra_processors or []:
        _provider.add_span_processor(processor)
    return _provider


def otlp_meter_provider(settings: Settings, export_interval_millis: float | None = None) -> MeterProvider:
    """A meter provider exporting over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (or the SDK's default)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    endpoint = settings.otel_exporter_otlp_endpoint
    exporter = OTLPMetricExporter(endpoint=f"{endpoint.rstrip('/')}/v1/metrics") if endpoint else OTLPMetricExporter()
    return MeterProvider(
        resource=Resource.create({"service.name": settings.otel_service_name}),
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=export_interval_millis)],
    )


def tag_current_span(**attributes: str) -> None:
    """Tag the active span with pennant.* attributes (tenant, campaign, run), and the task's log lines with them."""
    bind(**attributes)
    span = trace.get_current_span()
    for key, value in attributes.items():
        span.set_attribute(f"pennant.{key}", value)


def shutdown_telemetry() -> None:
    """Flush and stop the trace exporters."""
    if _provider is not None:
        _provider.force_flush()
