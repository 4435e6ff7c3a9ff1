"""Process settings, read once from the environment (names are the upper-cased field names)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Batches a worker process delivers at once unless WORKER_BATCH_SLOTS says otherwise: few, since
# more slots in one process do not send faster, they only hold more memory and connections
# (benchmarks/million.py measures it; its docstring has the figures).
BATCH_SLOTS = 2


class Settings(BaseSettings):
    """Every knob Pennant reads. docker-compose.yml sets these same names."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Where the local stack keeps its state (Temporal SQLite file, PostgreSQL data, outbox).
    data_dir: Path = Path(".data")
    # Unset means "start the embedded PostgreSQL under data_dir/pg".
    database_url: str | None = None
    # The owner role's URL (owns the schema; runs migrations, creates admin keys). The app's
    # DATABASE_URL logs in as pennant_app, which owns nothing and cannot bypass row-level
    # security. Unset: DATABASE_URL does both (a single-role deployment).
    database_owner_url: str | None = None
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
    # `dev` (set by `pennant dev`, the devstack and the tests) lets the API and workers start with
    # generated or short secrets; anything else is production: they refuse to start unless the
    # secrets below are set, long and none of the values this repository ships (check_production).
    pennant_env: Literal["dev", "production"] = "production"
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
    # Sending domains (core/deliverability/domains.py): what a domain's SPF record includes and
    # where its bounce subdomain points; the name server the records check asks (`host:port`;
    # unset: the system's), which is `pennant dev`'s loopback DNS server (DNS_PORT) in dev and
    # tests; and whether a campaign from a domain whose records are missing is refused at start.
    mail_spf_include: str = "spf.pennant.example"
    mail_bounce_host: str = "bounces.pennant.example"
    dns_nameserver: str | None = None
    dns_port: int = 5354
    require_sending_domain_records: bool = False

    # Default base URL of the SMS, push and webhook providers when a tenant's channel sets no
    # `endpoint`: the devstack provider simulator (`pennant provider-sim`).
    provider_base_url: str = "http://127.0.0.1:8030"

    # Outbound calls a tenant aims (core/security/egress.py) reach only public addresses over
    # TLS, except these `scheme://host:port[/path-prefix]` entries (comma or space separated,
    # names resolved at start): `http://` and `smtp+plain://` entries allow plaintext, any entry
    # skips the address-class check for its address, port and path. Dev: the simulator's message
    # paths and the SMTP sink, never the simulator's /_sim control routes.
    egress_allow: str = ""
    # The DNS server ("host:port") the guard resolves tenant endpoints through; unset, the system's.
    egress_dns_server: str | None = None

    tenant_configs_dir: Path = Path("tenant_configs")
    demo_customers_per_tenant: int = Field(default=10_000, ge=0)
    # `pennant dev` keeps a light stream of shopper events flowing for the demo tenants.
    demo_events: bool = True

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
    # Secrets for signed links (unsubscribe, tracking); `pennant dev` generates one when unset.
    # A keyring: several comma-separated keys, newest first. New links are signed with the first;
    # links already in sent mail verify under any of them, so rotating is "prepend the new key,
    # drop the oldest once its links have expired".
    link_signing_secret: str | None = None
    # Secret providers sign their events with (POST /v1/provider-events/…); unset refuses them
    # all. `pennant dev` generates one and gives it to the SMTP sink and provider simulator.
    provider_events_secret: str | None = None
    # The keyring tenant secrets are encrypted under (core/security/secrets.py):
    # `kid:base64(32 bytes)`, comma-separated, current key first; older keys still decrypt.
    # `pennant dev` generates one when unset; `pennant tenants secrets new-key` prints an entry.
    secrets_keyring: str | None = None
    # Where the devstack SMTP sink and provider simulator post the events they emit (the API's
    # /v1/provider-events); unset, they emit none.
    provider_events_url: str | None = None

    # The HMAC key of console session cookies and sign-in forms, shared by nothing else (a leaked
    # link key must not forge sessions). Unset (dev only): a random key per process.
    console_session_secret: str | None = None
    # Whether console cookies are `Secure` and responses carry HSTS. Unset: when the request came
    # over https, as uvicorn sees it (behind a TLS-terminating proxy, that needs the proxy's
    # X-Forwarded-Proto trusted through FORWARDED_ALLOW_IPS); true: always (the operator says the
    # console is only served over TLS); false: never.
    console_secure_cookies: bool | None = None
    # Proxies whose X-Forwarded-Proto and X-Forwarded-For `pennant api` (uvicorn) trusts: addresses
    # or networks, comma-separated, `*` for any. Behind a TLS-terminating proxy, the proxy's address
    # here makes its https requests https to the API (Secure cookies, HSTS, the client's address).
    forwarded_allow_ips: str = "127.0.0.1"

    @property
    def owner_database_url(self) -> str | None:
        """Where migrations and admin-key bootstrap connect: the owner URL, else DATABASE_URL."""
        return self.database_owner_url or self.database_url

    @property
    def outbox_dir(self) -> Path:
        """Where the local SMTP sink stores messages."""
        return self.data_dir / "outbox"

    @property
    def link_signing_keys(self) -> list[str]:
        """The link-signing keyring, newest first (empty when unset)."""
        return signing_keys(self.link_signing_secret)

    def production_problems(self) -> list[str]:
        """Why these settings are unsafe outside `pennant_env=dev`: one line per setting, naming it."""
        if self.pennant_env == "dev":
            return []
        found: list[str] = []
        secrets = {
            "ADMIN_KEY": [self.admin_key] if self.admin_key else [],
            "LINK_SIGNING_SECRET": self.link_signing_keys,
            "PROVIDER_EVENTS_SECRET": [self.provider_events_secret] if self.provider_events_secret else [],
            "CONSOLE_SESSION_SECRET": [self.console_session_secret] if self.console_session_secret else [],
        }
        for name, values in secrets.items():
            if not values:
                found.append(f"{name}: not set")
            found.extend(f"{name}: {why}" for why in map(_weakness, values) if why)
        # One secret per trust: a key reused for two purposes lets one forge the other's tokens.
        seen: dict[str, str] = {}
        for name, values in secrets.items():
            for value in values:
                if value in seen and seen[value] != name:
                    found.append(f"{name}: the same value as {seen[value]} (each needs its own)")
                seen.setdefault(value, name)
        beyond = [
            host
            for host, serving in ((self.api_host, True), (self.metrics_host, bool(self.worker_metrics_port)))
            if serving and not _loopback(host)
        ]
        # Its keys are checked where they are parsed (core/security/secrets.py Keyring).
        keyring = (self.secrets_keyring or "").strip()
        if not keyring:
            found.append("SECRETS_KEYRING: not set (`pennant tenants secrets new-key` prints an entry)")
        elif "test1:" + "A" * 43 in keyring:
            found.append("SECRETS_KEYRING: holds the test suite's key (generate your own)")
        if beyond and not self.metrics_token:
            found.append(f"METRICS_TOKEN: not set, and metrics are reachable beyond loopback ({', '.join(beyond)})")
        elif self.metrics_token and (why := _weakness(self.metrics_token)):
            found.append(f"METRICS_TOKEN: {why}")
        return found

    def check_production(self) -> None:
        """Refuse to start (UnsafeSettings naming each setting) unless safe or `pennant_env=dev`."""
        found = self.production_problems()
        if found:
            raise UnsafeSettings(found)


# Secrets shorter than this are refused outside dev: 32 bytes is 256 bits of a random key.
MIN_SECRET_BYTES = 32
# Values this repository has shipped in compose, the devstack and the tests: anyone can read them.
SHIPPED_SECRETS = frozenset(
    {
        "change-me",
        "change-me-too",
        "change-me-three",
        "test-signing-secret",
        "test-provider-events-secret",
        "local-stack-secret",
        "local-stack-provider-events-secret",
        "dev-sms-token",
        "dev-push-server-key",
        "test-sms-token",
        "test-push-server-key",
        "test-webhook-secret",
        "s3cret",
        "admin",
        "pennant",
    }
)


def _weakness(value: str) -> str | None:
    """Why `value` is no secret (a value this repository ships, or too short), or None."""
    folded = value.strip().lower()
    if folded in SHIPPED_SECRETS or "change-me" in folded or "changeme" in folded:
        return "a value this repository ships (generate your own)"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"shorter than {MIN_SECRET_BYTES} bytes"
    return None


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost, or 0.0.0.0-like spellings: assume reachable


def signing_keys(value: str | None) -> list[str]:
    """A comma-separated keyring as its keys, newest first, blanks dropped."""
    return [key.strip() for key in (value or "").split(",") if key.strip()]


class UnsafeSettings(RuntimeError):
    """The settings are not fit for production; `problems` names each setting and why."""

    def __init__(self, problems: list[str]):
        super().__init__(
            "refusing to start outside PENNANT_ENV=dev: " + "; ".join(problems) + " (see .env.example and the README)"
        )
        self.problems = problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once."""
    return Settings()
