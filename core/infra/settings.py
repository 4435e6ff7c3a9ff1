"""Process settings, read once from the environment (names are the upper-cased field names)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Batches a worker process delivers at once unless WORKER_BATCH_SLOTS says otherwise. Two sent a
# 100k push run as fast as eight did (benchmarks/million.py: 4,202 against 4,014 recipients/s).
BATCH_SLOTS = 2


class Settings(BaseSettings):
    """Every knob Pennant reads. docker-compose.yml sets these same names."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Where the local stack keeps its state (Temporal SQLite file, PostgreSQL data, outbox).
    data_dir: Path = Path(".data")
    # Unset means "start the embedded PostgreSQL under data_dir/pg".
    database_url: str | None = None
    database_pool_min: int = 1
    database_pool_max: int = 10

    # Processes `pennant worker` runs, each polling the same tenant queues (--processes
    # overrides); unset means one per CPU core.
    worker_processes: int | None = Field(default=None, ge=1)
    # Delivery batches one worker process works on at once, all tenants together; batches
    # beyond it wait in the process and are granted by fair share and least recent use
    # (core/infra/fair_turns.py), so a neighbour's small run goes next instead of behind a big run's
    # whole backlog (benchmarks/isolation.py).
    worker_batch_slots: int = Field(default=BATCH_SLOTS, ge=1, le=256)

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Bootstrap admin key; `pennant dev` generates one when unset.
    admin_key: str | None = None
    # Request bodies above this size are refused with 413 before they are read (api/input_guard.py).
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Per API process and client address: this many failed authentications within the window
    # and the client is answered 429 with Retry-After until the oldest failure leaves the window.
    auth_failure_limit: int = Field(default=20, ge=1)
    auth_failure_window_seconds: float = Field(default=60.0, gt=0)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_timeout_seconds: float = 10.0

    # Default base URL of the SMS, push and webhook providers when a tenant's channel sets no
    # `endpoint`: the devstack provider simulator (`pennant provider-sim`).
    provider_base_url: str = "http://127.0.0.1:8030"

    tenant_configs_dir: Path = Path("tenant_configs")
    demo_customers_per_tenant: int = Field(default=10_000, ge=0)

    # Logs: one JSON object per line (tenant, campaign, run, trace id), or `text` for humans.
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    # Each worker process serves Pennant's metrics on this port (/metrics), and the Temporal
    # SDK's worker metrics on temporal_metrics_port; unset or 0 means off. The API serves its
    # own at /metrics on api_port. metrics_host is where both worker endpoints listen.
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    temporal_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # When set, /metrics on the API answers only `Authorization: Bearer <metrics_token>`.
    metrics_token: str | None = None

    otel_exporter: Literal["none", "console", "otlp"] = "none"
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "pennant"

    # Where recipients reach the public endpoints (unsubscribe links in emails).
    public_base_url: str = "http://localhost:8000"
    # Secret for signed links (unsubscribe); `pennant dev` generates one when unset.
    link_signing_secret: str | None = None
    # Secret providers sign their events with (POST /v1/provider-events/…); unset refuses them
    # all. `pennant dev` generates one and gives it to the SMTP sink and provider simulator.
    provider_events_secret: str | None = None
    # Where the devstack SMTP sink and provider simulator post the events they emit (the API's
    # /v1/provider-events); unset, they emit none.
    provider_events_url: str | None = None

    @property
    def outbox_dir(self) -> Path:
        """Where the local SMTP sink stores messages."""
        return self.data_dir / "outbox"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once."""
    return Settings()
