"""Paths, ports, environment and telemetry of the servers the test session starts."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.inprocess import free_port
from devstack.tenants import DEMO_SECRETS

__all__ = [
    "ISOLATED_PREFIX",
    "PROVIDER_SECRETS",
    "PROVIDER_TIMEOUT_SECONDS",
    "ROOT",
    "SPANS",
    "TENANT_CONFIGS",
    "TEST_KEYRING",
    "free_port",
]

ROOT = Path(__file__).resolve().parent.parent.parent
TENANT_CONFIGS = ROOT / "tenant_configs"
# Every span the session's API, client and workers end (the `settings` fixture installs it).
SPANS = InMemorySpanExporter()
# The session's tenant-secrets keyring (a fixed test key: nothing real is encrypted under it).
TEST_KEYRING = "test1:" + "A" * 43
# The provider credentials every tenant a test makes gets in its secret store (the demo tenants'
# configs name them as secret:NAME); the simulator accepts any value.
PROVIDER_SECRETS = DEMO_SECRETS
# The workers' provider timeout in tests: short, so injected timeouts cost little time.
PROVIDER_TIMEOUT_SECONDS = 2.0
# Tenants whose slug starts with this are not served by the session's worker: a test serves them
# with a worker process of its own, which it may kill (tests/e2e/test_worker_crash.py).
ISOLATED_PREFIX = "iso-"
