"""The whole stack inside one process, on free ports and a temporary directory: embedded
PostgreSQL, the Temporal dev server, the SMTP sink, workers for every tenant and the API.
Benchmarks use it; it starts real servers and stops them all on exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import uvicorn
from starlette.types import ASGIApp
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.infra.db import create_pool, migrate
from core.infra.settings import Settings
from core.security.secrets import Keyring
from core.tenants.keys import new_key, store_key
from devstack.launcher import wait_for_port
from devstack.postgres import ensure_database, start_embedded
from devstack.temporal_server import start_local_environment
from workers.main import build_activities, process_shares
from workers.tenant_workers import TenantSelection, TenantWorkers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, port: int, host: str = "127.0.0.1", within: float = 30.0) -> AsyncIterator[str]:
    """Serve `app` under uvicorn on this event loop; its base URL, until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + within
        while not server.started:
            if task.done():
                task.result()  # it failed to start: raise its error
                raise RuntimeError(f"the server on {host}:{port} stopped before it started")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server on {host}:{port} did not start within {within:.0f}s")
            await asyncio.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class LocalStack:
    """The running in-process stack: its directory, settings, pool, Temporal, workers, API URL and admin key."""

    workdir: Path
    settings: Settings
    pool: asyncpg.Pool
    env: WorkflowEnvironment
    workers: TenantWorkers
    api_url: str
    admin_key: str

    @property
    def outbox(self) -> Path:
        """Where the SMTP sink stores each message it receives."""
        return self.workdir / "outbox"


@contextlib.asynccontextmanager
async def local_stack(
    tenant_configs_dir: Path = Path("tenant_configs"),
    provider_events: bool = True,
    selection: TenantSelection | None = None,
) -> AsyncIterator[LocalStack]:
    """Start the whole stack on free ports in a temporary directory; stop it and remove the directory on exit.

    The in-process workers serve the tenants `selection` includes (all by default; a benchmark
    that measures a worker process of its own passes `TenantSelection(frozenset())`)."""
    workdir = Path(tempfile.mkdtemp(prefix="pennant-local-"))
    workdir.chmod(0o755)
    pg = start_embedded(workdir / "pg", cleanup="delete")
    smtp_port, api_port = free_port(), free_port()
    # With `provider_events` the sink reports a delivery, bounce or complaint for every message
    # to the API, as under `pennant dev`; a benchmark may leave them out.
    events_secret = "local-stack-provider-events-secret"
    events_env = (
        {
            "PROVIDER_EVENTS_URL": f"http://127.0.0.1:{api_port}/v1/provider-events",
            "PROVIDER_EVENTS_SECRET": events_secret,
        }
        if provider_events
        else {}
    )
    # The sink runs in its own process, as under `pennant dev`: in this one it would compete
    # with the workers for the interpreter lock and understate delivery throughput.
    sink = subprocess.Popen(
        [sys.executable, "-m", "devstack.cli", "smtp-sink"],
        env={
            **os.environ,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "DATA_DIR": str(workdir),
            **events_env,
        },
        stdout=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", smtp_port, 30, sink)
    try:
        urls = await ensure_database(pg.get_uri(), "pennant")
        env = await start_local_environment()
        settings = Settings(
            data_dir=workdir,
            database_url=urls.app,
            database_owner_url=urls.owner,
            temporal_address=env.client.service_client.config.target_host,
            smtp_port=smtp_port,
            pennant_env="dev",
            link_signing_secret="local-stack-secret",
            secrets_keyring=Keyring.new_entry("local1"),
            provider_events_secret=events_secret,
            tenant_configs_dir=tenant_configs_dir.resolve(),
        )
        # `pool` is the owner's (the stack's callers seed and inspect any tenant with it); the
        # workers, like the API, log in as the application role.
        pool = await create_pool(urls.owner, max_size=20)
        await migrate(pool)
        app_pool = await create_pool(urls.app, max_size=20)
        shares = process_shares(settings)
        workers = TenantWorkers(
            env.client,
            app_pool,
            build_activities(app_pool, settings, shares=shares),
            selection or TenantSelection(),
            poll_seconds=1.0,
            presence=shares.note,
        )
        workers_task = asyncio.create_task(workers.run())
        admin_key = new_key("adm")
        await store_key(pool, admin_key, None, "local stack admin")
        try:
            async with serving(create_app(settings), api_port) as api_url:
                yield LocalStack(workdir, settings, pool, env, workers, api_url, admin_key)
        finally:
            workers_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await workers_task
            await app_pool.close()
            await pool.close()
            await env.shutdown()
    finally:
        sink.terminate()
        sink.wait(10)
        pg.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
