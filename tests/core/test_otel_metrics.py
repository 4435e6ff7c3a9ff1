"""With OTEL_EXPORTER=otlp, Pennant's metrics also go out over OTLP/HTTP: a real HTTP receiver
gets them with their labels as attributes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from core.infra.metrics import BATCH_DURATION, MESSAGES, mirror_to_otel
from core.infra.settings import Settings
from core.infra.telemetry import otlp_meter_provider


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[ExportMetricsServiceRequest]]]:
    """An OTLP/HTTP metrics receiver on a free port: its base URL and the requests it got."""
    received: list[ExportMetricsServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/metrics":
                received.append(ExportMetricsServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_metrics_are_mirrored_over_otlp(receiver: tuple[str, list[ExportMetricsServiceRequest]]) -> None:
    url, received = receiver
    settings = Settings(otel_exporter="otlp", otel_exporter_otlp_endpoint=url, otel_service_name="pennant-test")
    provider = otlp_meter_provider(settings, export_interval_millis=60_000)
    mirror_to_otel(provider.get_meter("pennant"))
    try:
        MESSAGES.labels("otel-tenant", "email", "sent", "").inc(3)
        BATCH_DURATION.labels("otel-tenant", "ok").observe(0.2)
        assert provider.force_flush(10_000)
    finally:
        mirror_to_otel(None)
        provider.shutdown()
    points: dict[str, list[dict[str, Any]]] = {}
    for request in received:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    sums = [(p.attributes, p.as_int or p.as_double) for p in metric.sum.data_points]
                    counts = [(p.attributes, p.count) for p in metric.histogram.data_points]
                    for attributes, value in sums + counts:
                        labels = {a.key: a.value.string_value for a in attributes}
                        points.setdefault(metric.name, []).append({**labels, "value": value})
    assert {"tenant": "otel-tenant", "channel": "email", "status": "sent", "reason": "", "value": 3} in points[
        "pennant_messages"
    ]
    assert {"tenant": "otel-tenant", "outcome": "ok", "value": 1} in points["pennant_batch_duration_seconds"]
