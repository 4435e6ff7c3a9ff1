"""Paths, ports, environment and telemetry of the servers the test session starts."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.inprocess import free_port

__all__ = [
    "ISOLATED_PREFIX",
    "PROVIDER_ENV",
    "PROVIDER_TIMEOUT_SECONDS",
    "ROOT",
    "SPANS",
    "TENANT_CONFIGS",
    "free_port",
]

ROOT = Path(__file__).resolve().parent.parent.parent
TENANT_CONFIGS = ROOT / "tenant_configs"
# Every span the session's API, client and workers end (the `settings` fixture installs it).
SPANS = InMemorySpanExporter()
# Credentials the tenant configs reference (env:NAME); the simulator accepts any value.
PROVIDER_ENV = {
    "FRESHMART_SMS_SID": "ACtest0000000000000000000000000000",
    "FRESHMART_SMS_TOKEN": "test-sms-token",
    "QUICKSTOP_PUSH_KEY": "test-push-server-key",
    "FRESHMART_WEBHOOK_SECRET": "test-webhook-secret",
}
# The workers' provider timeout in tests: short, so injected timeouts cost little time.
PROVIDER_TIMEOUT_SECONDS = 2.0
# Tenants whose slug starts with this are not served by the session's worker: a test serves them
# with a worker process of its own, which it may kill (tests/test_worker_crash.py).
ISOLATED_PREFIX = "iso-"
