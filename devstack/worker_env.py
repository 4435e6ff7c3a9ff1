"""The environment a `pennant worker` process is started with to use a given set of servers
(the fault tests' and benchmarks' own worker processes)."""

from __future__ import annotations

import os

from core.settings import Settings


def worker_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """This process's environment with `settings`' servers and secrets (PostgreSQL, Temporal,
    SMTP, provider base URL, link signing), no trace exporter, then `overrides`."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "SMTP_HOST": settings.smtp_host,
        "SMTP_PORT": str(settings.smtp_port),
        "PUBLIC_BASE_URL": settings.public_base_url,
        "LINK_SIGNING_SECRET": settings.link_signing_secret or "",
        "PROVIDER_BASE_URL": settings.provider_base_url,
        "OTEL_EXPORTER": "none",
        **overrides,
    }
