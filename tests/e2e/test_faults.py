"""Faults on the real servers, mid-run: a worker SIGKILLed three times (20,000 recipients), the
Temporal dev server stopped and restarted on its database file, PostgreSQL restarted (and kept
down past two batch attempts), and a provider answering 20% 5xx with bursts of 429 +
Retry-After. Every run completes with each recipient in the ledger exactly once, and the sink
that received the messages holds each one once: the provider simulator by idempotency key
(push, SMS), the SMTP sink by Message-ID (email).

Tenants are `iso-` tenants served only by `pennant worker` processes these tests start (and
kill); the Temporal and PostgreSQL faults run on servers of the test's own, so restarting them
disturbs no other test.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from core.infra.db import create_pool, migrate
from core.infra.settings import Settings
from core.tenants.config_schema import Execution
from devstack.postgres import DatabaseUrls
from devstack.provider_simulator import SimulatorControl
from devstack.worker_env import WorkerProcesses
from tests.helpers.faults import (
    TemporalDevServer,
    assert_simulator_once,
    assert_sink_once,
    isolated_tenant,
    private_postgres,
    seeded_people,
    serve_api,
    start_postgres,
    stop_postgres,
    worker_env,
)
from tests.helpers.runs import assert_each_recipient_once, create_campaign, ledger_count
from tests.helpers.tenants import Tenant
from tests.helpers.waiting import until

pytestmark = pytest.mark.slow

# The worker-kill run is the large one; the other faults are shown on a quarter of it, which
# keeps the module within a few minutes on a small shared machine.
RECIPIENTS = 20_000
FAULT_RECIPIENTS = 5_000
# The PostgreSQL restart sends email and SMS (one request per message) to each recipient.
TWO_CHANNEL_RECIPIENTS = 2_500
# How long PostgreSQL stays down in the restart test, batches in flight all along.
OUTAGE_SECONDS = 3.0
# How long the Temporal server stays down (longer if the batches in flight take longer to settle).
TEMPORAL_OUTAGE = 5.0
# Longer than two batch attempts' backoff: the outage a run with max_batch_attempts=2 outlasts.
LONG_POSTGRES_OUTAGE = 8.0
# A long database outage needs only a run that is under way when it starts.
SHORT_RECIPIENTS = 1_000
# Batches of 500 (ten email/SMS chunks, one push request each), several at a time: a run lasts seconds, not
# minutes, and a fault always lands with batches in flight.
EXECUTION = Execution(batch_size=500, max_concurrent_batches=6, activities_per_second=None)
# Under 5xx every failed batch backs off; smaller batches, more of them at once, overlap those waits.
# A push batch is one provider request (push chunks hold 500), so batches of 50 make the hundred
# requests that three 429 bursts of four need to land within the run.
PROVIDER_FAULT_EXECUTION = Execution(batch_size=50, max_concurrent_batches=12, activities_per_second=None)
PUSH_CAMPAIGN: dict[str, Any] = {
    "name": "Coffee morning",
    "channels": ["push"],
    "variants": [{"key": "A", "template": "coffee_morning"}],
}
# How long a run may take once its fault is over: the batches a fault interrupted are retried
# only after their 20 s heartbeat timeout.
RUN_WITHIN = 150.0


@pytest.fixture(scope="module")
async def people(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """RECIPIENTS demo customers, seeded once for the module and copied into each test's tenant."""
    return await seeded_people(pool, RECIPIENTS)


StartWorkers = Callable[[dict[str, str]], WorkerProcesses]


@pytest.fixture
def workers_started(workdir: Path) -> Iterator[StartWorkers]:
    """workers_started(env) → a WorkerProcesses; every process started is killed after the test."""
    made: list[WorkerProcesses] = []

    def make(env: dict[str, str]) -> WorkerProcesses:
        procs = WorkerProcesses(env, workdir)
        made.append(procs)
        return procs

    yield make
    for procs in made:
        procs.close()


@pytest.fixture
def iso_workers(settings: Settings, temporal_client: Client, workers_started: StartWorkers) -> WorkerProcesses:
    """`pennant worker` processes for `iso-` tenants, on the session's PostgreSQL and Temporal servers."""
    target = temporal_client.service_client.config.target_host
    return workers_started(worker_env(settings, target, temporal_client.namespace))


async def start(tenant: Tenant, **campaign: Any) -> tuple[str, str]:
    """Create the campaign and start its run through the API: (run id, workflow id)."""
    campaign_id = await create_campaign(tenant, **campaign)
    response = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"]), str(response.json()["workflow_id"])


async def finished(tenant: Tenant, run_id: str, within: float = RUN_WITHIN) -> dict[str, Any]:
    """Poll GET /runs/{id} until the run is terminal; an answer that is not 200 (the API's own
    database or Temporal coming back) is polled again, within the same bound. The body carries
    `not_ok`: how many polls were answered with something else, by status."""
    body: dict[str, Any] = {}
    not_ok: Counter[int] = Counter()

    async def done() -> bool:
        nonlocal body
        try:
            response = await tenant.http.get(tenant.url(f"/runs/{run_id}"))
        except httpx.TransportError:
            not_ok[0] += 1
            return False
        if response.status_code != 200:
            not_ok[response.status_code] += 1
            return False
        body = response.json()
        return body.get("status") in ("completed", "cancelled", "failed")

    await until(done, within=within, what=f"run {run_id} to finish (last seen {body})", every=0.25)
    return {**body, "not_ok": dict(not_ok)}


def steady(pool: asyncpg.Pool, tenant: str, run_id: str, quiet: float) -> Callable[[], Awaitable[bool]]:
    """A check that the run's ledger has not changed for `quiet` seconds."""
    last_count: int | None = None
    changed_at = time.monotonic()

    async def check() -> bool:
        nonlocal last_count, changed_at
        n = await ledger_count(pool, tenant, run_id)
        if n != last_count:
            last_count, changed_at = n, time.monotonic()
        return time.monotonic() - changed_at >= quiet

    return check


@dataclass
class FaultRun:
    """A run on an isolated tenant, served by one worker process the test may kill and restart."""

    pool: asyncpg.Pool
    tenant: Tenant
    run_id: str
    procs: WorkerProcesses
    worker: subprocess.Popen[bytes]
    seeded: float

    def alive(self) -> None:
        """Fail the test if the current worker process has exited."""
        self.procs.assert_alive(self.worker)

    def growing(self, beyond: int) -> Callable[[], Awaitable[bool]]:
        """A check that the run's ledger has more than `beyond` rows (and the worker is alive)."""

        async def check() -> bool:
            self.alive()
            return await self.ledger_rows() > beyond

        return check

    async def ledger_rows(self) -> int:
        """How many ledger rows the run has."""
        return await ledger_count(self.pool, self.tenant.slug, self.run_id)

    async def finished(self) -> dict[str, Any]:
        """The run's final body once it is terminal (see `finished`)."""
        return await finished(self.tenant, self.run_id)


@asynccontextmanager
async def fault_run(
    procs: WorkerProcesses,
    pool: asyncpg.Pool,
    api: str,
    slug: str,
    people: list[asyncpg.Record],
    execution: Execution,
    campaign: dict[str, Any],
) -> AsyncIterator[FaultRun]:
    """Seed an isolated `slug` tenant with `people`, start one worker for it and start a run of
    `campaign` through the API at `api`."""
    async with isolated_tenant(pool, api, slug, people, execution) as tenant:
        seeded = time.monotonic()
        worker = procs.start(tenant.slug)
        run_id, _ = await start(tenant, **campaign)
        yield FaultRun(pool, tenant, run_id, procs, worker, seeded)


async def test_worker_killed_three_times_mid_run_delivers_each_push_once(
    pool: asyncpg.Pool, api_url: str, sim: SimulatorControl, people: list[asyncpg.Record], iso_workers: WorkerProcesses
) -> None:
    began = time.monotonic()
    procs = iso_workers
    async with fault_run(procs, pool, api_url, "quickstop", people, EXECUTION, PUSH_CAMPAIGN) as run:
        at_kill: list[int] = []
        seen = 0
        for _ in range(3):
            # Kill only once this worker has recorded something: each kill interrupts real work.
            await until(run.growing(seen), within=60, what="the worker to deliver")
            procs.kill(run.worker)
            seen = await run.ledger_rows()
            at_kill.append(seen)
            assert seen < RECIPIENTS, f"the run ended before kill {len(at_kill)}"
            run.worker = procs.start(run.tenant.slug)
        body = await run.finished()
        assert body["status"] == "completed", body

        assert await assert_each_recipient_once(pool, run.tenant.slug, run.run_id) == RECIPIENTS
        delivered = await assert_simulator_once(sim, pool, run.tenant.slug, run.run_id, "push")
        assert delivered > 0
        stats = await sim.stats()
    print(
        f"\nworker kill: {RECIPIENTS} recipients, 3 SIGKILLs at ledger rows {at_kill}, {delivered} pushes "
        f"each accepted once ({stats['duplicates']} repeated keys answered from the simulator's memory); "
        f"run {time.monotonic() - run.seeded:.1f}s, test {time.monotonic() - began:.1f}s"
    )


async def test_temporal_restarted_on_its_database_file_mid_run_delivers_each_email_once(
    settings: Settings, pool: asyncpg.Pool, workdir: Path, people: list[asyncpg.Record], workers_started: StartWorkers
) -> None:
    began = time.monotonic()
    temporal = TemporalDevServer(workdir / f"temporal-{uuid.uuid4().hex[:8]}.db", workdir / "temporal-fault.log")
    await temporal.start()
    try:
        app_settings = settings.model_copy(update={"temporal_address": temporal.address})
        procs = workers_started(worker_env(settings, temporal.address))
        async with (
            serve_api(app_settings) as api,
            fault_run(procs, pool, api, "freshmart", people[:FAULT_RECIPIENTS], EXECUTION, {}) as run,
        ):
            slug, run_id = run.tenant.slug, run.run_id
            await until(run.growing(1_000), within=60, what="the run to be under way")
            temporal.stop()
            stopped = time.monotonic()
            at_stop = await run.ledger_rows()
            # Keep Temporal down for the outage, and until the batches in flight have done what they
            # can without it.
            settled = steady(pool, slug, run_id, 1.0)

            async def outage_over() -> bool:
                return await settled() and time.monotonic() - stopped >= TEMPORAL_OUTAGE

            await until(outage_over, within=30, what="the in-flight batches to settle")
            down = await run.ledger_rows()
            assert down < FAULT_RECIPIENTS, "the run finished before Temporal was stopped"
            outage = time.monotonic() - stopped
            await temporal.start()
            run.alive()  # the worker rode out the outage
            body = await run.finished()
            assert body["status"] == "completed", body

            assert await assert_each_recipient_once(pool, slug, run_id) == FAULT_RECIPIENTS
            emails = await assert_sink_once(pool, workdir / "outbox", slug, run_id)
    finally:
        temporal.stop()
    print(
        f"\ntemporal restart: {FAULT_RECIPIENTS} recipients, down {outage:.1f}s from ledger rows {at_stop} "
        f"(settled at {down}), API polls after restart not 200: {body['not_ok']}, "
        f"{emails} emails each stored once; run {time.monotonic() - run.seeded:.1f}s, "
        f"test {time.monotonic() - began:.1f}s"
    )


@pytest.fixture
async def own_postgres(workdir: Path) -> AsyncIterator[tuple[Any, DatabaseUrls]]:
    """A PostgreSQL server of the test's own (so restarting it disturbs no other test): (server, urls)."""
    async with private_postgres(workdir, "fault") as own:
        yield own


@dataclass
class PostgresOutage:
    """A run taken through a PostgreSQL outage: the run (its pool is on the restarted server), how
    long the database was down and the run's final body."""

    run: FaultRun
    outage: float
    body: dict[str, Any]


PostgresOutageRun = Callable[
    [str, list[asyncpg.Record], Execution, dict[str, Any], int, float], AbstractAsyncContextManager[PostgresOutage]
]


@pytest.fixture
async def own_temporal(workdir: Path) -> AsyncIterator[TemporalDevServer]:
    """A Temporal dev server of the test's own. A deployment's workers share one database: any
    worker polling the shared workflow queue may run a run's workflow and its bookkeeping, so a
    test on a database of its own needs a Temporal of its own too."""
    temporal = TemporalDevServer(workdir / f"temporal-{uuid.uuid4().hex[:8]}.db", workdir / "temporal-own.log")
    await temporal.start()
    try:
        yield temporal
    finally:
        temporal.stop()


@pytest.fixture
def postgres_outage(
    settings: Settings,
    own_temporal: TemporalDevServer,
    own_postgres: tuple[Any, DatabaseUrls],
    workers_started: StartWorkers,
) -> PostgresOutageRun:
    """postgres_outage(slug, people, execution, campaign, under_way, down_for): a run taken through
    an outage of the test's own PostgreSQL (with a Temporal server of its own). It starts a run
    there, stops the server once the ledger holds more than `under_way` rows, keeps it down
    `down_for` seconds and until the worker's tenant sync has met the outage, starts it again and
    waits for the run to end; the pool and tenant stay open inside."""
    server, urls = own_postgres
    target = own_temporal.address
    app_settings = settings.model_copy(
        update={"database_url": urls.app, "database_owner_url": urls.owner, "temporal_address": target}
    )

    @asynccontextmanager
    async def run_through(
        slug: str,
        people: list[asyncpg.Record],
        execution: Execution,
        campaign: dict[str, Any],
        under_way: int,
        down_for: float,
    ) -> AsyncIterator[PostgresOutage]:
        procs = workers_started(worker_env(app_settings, target))
        pool = await create_pool(urls.owner, max_size=4)
        try:
            await migrate(pool)
            async with (
                serve_api(app_settings) as api,
                fault_run(procs, pool, api, slug, people, execution, campaign) as run,
            ):
                await until(run.growing(under_way), within=60, what="the run to be under way")
                stop_postgres(server)
                stopped = time.monotonic()

                async def felt() -> bool:
                    # Down for `down_for` at least (the fault under test), and until the worker's own
                    # tenant sync has met it; batches in flight meanwhile wait, or fail and retry.
                    synced = run.worker.poll() is not None or "tenant sync failed" in procs.log_text(run.worker)
                    return synced and time.monotonic() - stopped >= down_for

                await until(felt, within=30, what="the worker's tenant sync to fail on the stopped database")
                outage = time.monotonic() - stopped
                start_postgres(server)
                run.alive()
                yield PostgresOutage(run, outage, await run.finished())
        finally:
            await pool.close()

    return run_through


async def test_postgres_restarted_mid_run_delivers_each_email_and_sms_once(
    postgres_outage: PostgresOutageRun, sim: SimulatorControl, people: list[asyncpg.Record], workdir: Path
) -> None:
    began = time.monotonic()
    recipients, channels = people[:TWO_CHANNEL_RECIPIENTS], {"channels": ["email", "sms"]}
    async with postgres_outage("freshmart", recipients, EXECUTION, channels, 2_000, OUTAGE_SECONDS) as fault:
        pool, slug, run_id, body = fault.run.pool, fault.run.tenant.slug, fault.run.run_id, fault.body
        assert body["status"] == "completed", body
        took = time.monotonic() - fault.run.seeded

        assert await assert_each_recipient_once(pool, slug, run_id, channels=2) == TWO_CHANNEL_RECIPIENTS
        texts = await assert_simulator_once(sim, pool, slug, run_id, "sms")
        print(
            f"\npostgres restart: {TWO_CHANNEL_RECIPIENTS} recipients x 2 channels, down {fault.outage:.1f}s, "
            f"API polls after restart not 200: {body['not_ok']}, "
            f"{texts} SMS each accepted once; run {took:.1f}s, test {time.monotonic() - began:.1f}s"
        )
        emails = await assert_sink_once(pool, workdir / "outbox", slug, run_id)
        print(f"postgres restart: {emails} emails each stored once")


async def test_provider_5xx_and_429_bursts_deliver_each_push_once(
    pool: asyncpg.Pool, api_url: str, sim: SimulatorControl, people: list[asyncpg.Record], iso_workers: WorkerProcesses
) -> None:
    began = time.monotonic()
    bursts = 3

    async def faults(burst: int) -> None:
        # Replacing the plan re-arms the 429 burst; the 5xx rate stays at 20% throughout.
        await sim.set_faults(
            error_rate_5xx=0.2, seed=burst, rate_limit={"count": 4, "retry_after": 1}, channels=["push"]
        )

    # Armed before the tenant is seeded and its worker started: nothing is sent until the run starts.
    await faults(1)
    recipients = people[:FAULT_RECIPIENTS]
    async with fault_run(
        iso_workers, pool, api_url, "quickstop", recipients, PROVIDER_FAULT_EXECUTION, PUSH_CAMPAIGN
    ) as run:
        for burst in range(2, bursts + 1):
            beyond = FAULT_RECIPIENTS * (burst - 1) // (bursts + 1)
            await until(run.growing(beyond), within=90, what="the run to progress")
            await faults(burst)
        body = await run.finished()
        assert body["status"] == "completed", body
        took = time.monotonic() - run.seeded
        stats = await sim.stats()
        await sim.set_faults()

        assert await assert_each_recipient_once(pool, run.tenant.slug, run.run_id) == FAULT_RECIPIENTS
        delivered = await assert_simulator_once(sim, pool, run.tenant.slug, run.run_id, "push")
    assert stats["rate_limited"] == 4 * bursts, stats
    assert stats["server_errors"] > 0, stats
    print(
        f"\nprovider faults: {FAULT_RECIPIENTS} recipients, {stats['requests']} push requests, "
        f"{stats['server_errors']} answered 5xx, {stats['rate_limited']} answered 429 in {bursts} bursts, "
        f"{delivered} pushes each accepted once; run {took:.1f}s, test {time.monotonic() - began:.1f}s"
    )


async def test_postgres_down_longer_than_the_batch_attempts_last_resumes_the_run(
    postgres_outage: PostgresOutageRun, sim: SimulatorControl, people: list[asyncpg.Record]
) -> None:
    began = time.monotonic()
    # Two attempts per batch make "longer than the attempts last" a few seconds rather than fifteen.
    execution = Execution(batch_size=100, max_concurrent_batches=4, activities_per_second=None, max_batch_attempts=2)
    # Down well past two attempts' backoff (1 s, then 2 s): batches fail and retry, or wait, as they choose.
    recipients = people[:SHORT_RECIPIENTS]
    async with postgres_outage("quickstop", recipients, execution, PUSH_CAMPAIGN, 100, LONG_POSTGRES_OUTAGE) as fault:
        pool, slug, run_id, outage = fault.run.pool, fault.run.tenant.slug, fault.run.run_id, fault.outage
        assert fault.body["status"] == "completed", (f"down {outage:.1f}s", fault.body)
        assert await assert_each_recipient_once(pool, slug, run_id) == SHORT_RECIPIENTS
        pushes = await assert_simulator_once(sim, pool, slug, run_id, "push")
    print(
        f"\npostgres long outage: {SHORT_RECIPIENTS} recipients, down {outage:.1f}s, {pushes} pushes each accepted "
        f"once; test {time.monotonic() - began:.1f}s"
    )
