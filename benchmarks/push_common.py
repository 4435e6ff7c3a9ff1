"""What the push benchmarks (million, isolation) share: the provider simulator in a process of
its own, a push tenant with N customers inserted in one statement, and a run through the API
waited on to its end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from activities.lookups import campaign_spec, pinned_config
from benchmarks.common import stop_process
from core.campaigns.spec import Variant
from core.configs.checks import load_config_file
from core.engagement.tracking import RunTracking
from core.infra.db import tenant_tx
from core.runs.models import TERMINAL_STATUSES
from core.security.secrets import Keyring
from core.tenants.config_schema import Execution, Experiments, Policies, TenantConfig
from core.tenants.config_store import save_config
from core.tenants.keys import new_key, store_key
from devstack.inprocess import LocalStack, free_port
from devstack.launcher import wait_for_port
from devstack.tenants import seed_demo_secrets

# The env variable the benchmark tenants' push credential refers to (the simulator takes any key).
# The figures: batches of 1,000, 8 in flight.
BENCH_EXECUTION = Execution(
    batch_size=1000, max_concurrent_batches=8, max_concurrent_activities=20, activities_per_second=None
)
TEMPLATE = "coffee_morning"

_INSERT_CUSTOMERS = """
INSERT INTO customers (tenant_id, id, external_id, first_name, last_name, locale, time_zone,
                       loyalty_tier, push_token, consent_push)
SELECT $1, g, 'cust-' || g, 'First' || g, 'Last' || g, 'en-US', 'America/Denver',
       (ARRAY['none', 'bronze', 'silver', 'gold'])[1 + g % 4], encode(sha256(g::text::bytea), 'hex'), true
FROM generate_series(1, $2::bigint) AS g
"""


@contextlib.contextmanager
def provider_simulator(log_path: Path) -> Iterator[tuple[str, int]]:
    """`pennant provider-sim` on a free port in its own process (no provider events sent to the
    API); PROVIDER_BASE_URL and the push key are set in this process's environment, so a
    stack started afterwards sends there. Yields the URL and the simulator's pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_EVENTS")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.cli", "provider-sim", "--host", "127.0.0.1", "--port", str(port)],
            env={**env, "PROVIDER_BASE_URL": url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        os.environ["PROVIDER_BASE_URL"] = url
        yield url, proc.pid
    finally:
        stop_process(proc)


@dataclass
class PushTenant:
    """A benchmark tenant: its slug, an API client with its key, and a push campaign's id."""

    slug: str
    http: httpx.AsyncClient
    campaign_id: str


async def insert_customers(pool: asyncpg.Pool, slug: str, count: int) -> None:
    """Customers 1..`count` of `slug`, each with a push token and push consent, in one statement."""
    async with tenant_tx(pool, slug) as conn:
        await conn.execute(_INSERT_CUSTOMERS, slug, count)
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE customers")


async def push_tenant(
    stack: LocalStack, customers: int, prefix: str = "push", execution: Execution = BENCH_EXECUTION
) -> PushTenant:
    """QuickStop's config under a fresh slug: push only, no rate limit, quiet hours, caps or
    holdout (a run sends at once and measures the pipeline), batches of 1,000, 8 in flight unless
    `execution` says otherwise; a push
    campaign created through the API."""
    base = load_config_file(stack.settings.tenant_configs_dir / "quickstop.yaml")
    slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
    assert base.channels.push is not None
    push = base.channels.push.model_copy(
        update={"rate_limit_per_second": None, "credentials": {"server_key": "secret:PUSH_SERVER_KEY"}}
    )
    config = base.model_copy(
        update={
            "slug": slug,
            "channels": base.channels.model_copy(update={"push": push}),
            "policies": Policies(),
            "experiments": Experiments(),
            "execution": execution,
        }
    )
    await seed_demo_secrets(stack.pool, Keyring.parse(stack.settings.secrets_keyring), config)
    await save_config(stack.pool, config, "benchmark")
    await insert_customers(stack.pool, slug, customers)
    key = new_key("tk")
    await store_key(stack.pool, key, slug, "benchmark")
    while slug not in stack.workers.tenants:
        await asyncio.sleep(0.01)
    http = httpx.AsyncClient(
        base_url=f"{stack.api_url}/v1/tenants/{slug}", headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    campaign = {"name": "Push bench", "channels": ["push"], "variants": [{"key": "A", "template": TEMPLATE}]}
    created = await http.post("/campaigns", json=campaign)
    assert created.status_code == 201, created.text
    return PushTenant(slug, http, created.json()["id"])


@dataclass
class RunOutcome:
    """One run through the API: its id, final body, POST latency and start → completed."""

    run_id: str
    body: dict[str, Any]
    post_ms: float
    elapsed_s: float


async def start_run(tenant: PushTenant) -> tuple[str, float, float]:
    """Start a run of the tenant's campaign through the API: its id, POST latency (ms) and the
    perf_counter instant the POST began."""
    t0 = time.perf_counter()
    started = await tenant.http.post(f"/campaigns/{tenant.campaign_id}/runs")
    post_ms = (time.perf_counter() - t0) * 1000
    assert started.status_code == 202, started.text
    return started.json()["run_id"], post_ms, t0


async def wait_run(
    tenant: PushTenant, run_id: str, t0: float, poll_seconds: float = 0.25
) -> tuple[dict[str, Any], float]:
    """Poll a run until it finishes: its final body and the seconds since `t0`."""
    while True:
        body = (await tenant.http.get(f"/runs/{run_id}")).json()
        if body["status"] in TERMINAL_STATUSES:
            return body, time.perf_counter() - t0
        await asyncio.sleep(poll_seconds)


async def wait_row(pool: asyncpg.Pool, tenant: PushTenant, run_id: str, t0: float, poll_seconds: float) -> float:
    """Poll the run's row, what GET answers once a run has finished, until its status is final:
    the seconds since `t0`. It reads PostgreSQL, not the API, because GET of a live run queries
    its workflow, and a query every 10 ms is a workflow task every 10 ms on the very worker
    being measured."""
    while True:
        async with tenant_tx(pool, tenant.slug) as conn:
            status = await conn.fetchval("SELECT status FROM runs WHERE tenant_id = $1 AND id = $2::uuid",
                                         tenant.slug, run_id)  # fmt: skip
        if status in TERMINAL_STATUSES:
            return time.perf_counter() - t0
        await asyncio.sleep(poll_seconds)


async def run_to_end(tenant: PushTenant, poll_seconds: float = 0.25, rows: asyncpg.Pool | None = None) -> RunOutcome:
    """Start a run of the tenant's campaign through the API and poll it until it finishes: through
    the API, or through the run's row when `rows` is the stack's pool (`wait_row`)."""
    run_id, post_ms, t0 = await start_run(tenant)
    if rows is None:
        body, elapsed = await wait_run(tenant, run_id, t0, poll_seconds)
    else:
        elapsed = await wait_row(rows, tenant, run_id, t0, poll_seconds)
        body = (await tenant.http.get(f"/runs/{run_id}")).json()
    return RunOutcome(run_id, body, post_ms, elapsed)


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """Resident memory now and its peak (VmRSS, VmHWM) of `pid`, in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def reset_peak_rss() -> None:
    """Start this process's VmHWM again from its current RSS (Linux: clear_refs 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def load_average() -> str:
    """The machine's load, for the record beside each figure."""
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min) on {os.cpu_count()} CPUs"


@dataclass
class RawRun:
    """What a benchmark's raw loop renders a campaign with, as a run of it would: the tenant's
    current config, the campaign's first variant, a run id of its own and its tracking."""

    config: TenantConfig
    variant: Variant
    run_id: str
    tracking: RunTracking
    campaign_ctx: dict[str, str]


async def raw_run(stack: LocalStack, tenant: PushTenant) -> RawRun:
    """A RawRun of the tenant's campaign on the stack."""
    config = await pinned_config(stack.pool, tenant.slug, None)
    async with tenant_tx(stack.pool, tenant.slug) as conn:
        spec = await campaign_spec(conn, tenant.slug, tenant.campaign_id)
    run_id = str(uuid.uuid4())
    secret, base = stack.settings.link_signing_secret or "", stack.settings.public_base_url.rstrip("/")
    tracking = RunTracking(secret, base, tenant.slug, run_id, config.engagement)
    return RawRun(config, spec.variants[0], run_id, tracking, {"id": tenant.campaign_id, "name": spec.name})
