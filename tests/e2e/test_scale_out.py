"""Scale-out: worker processes polling the same tenant queue share one run's batches, and every
recipient still gets exactly one ledger row.

Two ways to get several processes on a queue: separate `pennant worker` processes (as on
several hosts), and one `pennant worker --processes 2` that runs and supervises two children.
The tenants' slugs start with `iso-`, so the session's in-process worker leaves them alone.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from activities.names import DELIVER_BATCH
from core.infra.settings import Settings
from core.infra.temporal import task_queue_for
from core.tenants.config_schema import Execution
from devstack.worker_env import WorkerProcesses
from tests.helpers.faults import ROOT, client_worker_env
from tests.helpers.runs import assert_each_recipient_once, create_campaign, start_run, wait_for_run
from tests.helpers.tenants import Tenant, isolated_api_tenant
from tests.helpers.waiting import until

CUSTOMERS = 3_000
# 30 batches, 4 in flight: enough for two processes to share.
EXECUTION = Execution(batch_size=100, max_concurrent_batches=4, activities_per_second=None)


@pytest.fixture
async def shared_tenant(pool: asyncpg.Pool, api_url: str) -> AsyncIterator[Tenant]:
    """An `iso-` tenant (no session worker serves it) whose run is shared by the processes (EXECUTION)."""
    async with isolated_api_tenant(pool, api_url, CUSTOMERS, execution=EXECUTION) as tenant:
        yield tenant


@pytest.fixture
def worker_processes(settings: Settings, temporal_client: Client, workdir: Path) -> Iterator[WorkerProcesses]:
    """`pennant worker` processes on the session's servers, one process each; all killed after the test."""
    with WorkerProcesses(
        {**client_worker_env(settings, temporal_client), "WORKER_PROCESSES": "1"}, workdir
    ) as processes:
        yield processes


def batch_lines(log_text: str, run_id: str) -> list[dict[str, Any]]:
    """The run's `deliver_batch ok` lines of a worker log (one per batch attempt that completed)."""
    found = []
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line the Temporal SDK's own logger wrote, not ours
        if entry.get("activity") == DELIVER_BATCH and entry.get("outcome") == "ok" and entry.get("run") == run_id:
            found.append(entry)
    return found


def settled(lines: list[dict[str, Any]]) -> int:
    """Recipients the batches settled (sent, failed or skipped)."""
    return sum(e["sent"] + e["failed"] + e["skipped"] for e in lines)


def _serving(log_text: str, slug: str) -> bool:
    return f"serving task queue {task_queue_for(slug)}" in log_text


@pytest.mark.slow
async def test_two_worker_processes_share_a_run_and_each_recipient_is_sent_once(
    shared_tenant: Tenant, worker_processes: WorkerProcesses, pool: asyncpg.Pool
) -> None:
    tenant = shared_tenant
    workers = [worker_processes.start(tenant.slug), worker_processes.start(tenant.slug)]

    def both_serving() -> bool:
        for proc in workers:
            worker_processes.assert_alive(proc)
        return all(_serving(worker_processes.log_text(proc), tenant.slug) for proc in workers)

    await until(both_serving, within=60, what="both worker processes to serve the tenant's queue")
    run_id = await start_run(tenant, await create_campaign(tenant))
    run = await wait_for_run(tenant, run_id, timeout=180)
    assert run["status"] == "completed", run

    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == CUSTOMERS
    # Each log file is one process's: attribute its batches to it.
    lines = [batch_lines(worker_processes.log_text(proc), run_id) for proc in workers]
    shares = [len(batches) for batches in lines]
    recipients = [settled(batches) for batches in lines]
    print(f"\nbatches per process: {shares}; recipients settled per process: {recipients}")
    assert all(n > 0 for n in shares), f"one process ran every batch: {shares}"
    # Nothing failed or was retried here, so the batches' counts add up to the audience exactly.
    assert sum(recipients) == CUSTOMERS, recipients


@pytest.mark.slow
async def test_pennant_worker_processes_2_shares_a_run_and_forwards_sigterm(
    shared_tenant: Tenant, worker_processes: WorkerProcesses, pool: asyncpg.Pool, workdir: Path
) -> None:
    tenant = shared_tenant
    log_path = workdir / f"worker-{tenant.slug}-supervisor.log"
    parent = _start_supervisor(worker_processes.env, log_path, tenant.slug, processes=2)
    worker_processes.started.append(parent)  # killed after the test if still running
    try:

        def children_serving() -> bool:
            assert parent.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return log_path.read_text(errors="replace").count(f"serving task queue {task_queue_for(tenant.slug)}") == 2

        await until(children_serving, within=90, what="both child processes to serve the tenant's queue")
        run_id = await start_run(tenant, await create_campaign(tenant))
        run = await wait_for_run(tenant, run_id, timeout=180)
        assert run["status"] == "completed", run
        assert await assert_each_recipient_once(pool, tenant.slug, run_id) == CUSTOMERS
        lines = batch_lines(log_path.read_text(errors="replace"), run_id)
        shares = Counter(e["worker_process"] for e in lines)
        print(f"\nbatches per child process: {dict(shares)}; recipients settled: {settled(lines)}")
        assert shares[0] > 0 and shares[1] > 0, shares
        assert settled(lines) == CUSTOMERS

        # SIGTERM to the parent reaches the children: all exit, the parent with status 0.
        children = {int(json.loads(line)["pid"]) for line in _json_lines(log_path) if "pid" in json.loads(line)}
        assert len(children) == 2, children
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"child {pid} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _start_supervisor(env: dict[str, str], log_path: Path, slug: str, processes: int) -> subprocess.Popen[bytes]:
    """`pennant worker --tenants <slug> --processes N`, logging to `log_path`."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "devstack.cli", "worker", "--tenants", slug, "--processes", str(processes)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _json_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            json.loads(line)
        except ValueError:
            continue
        lines.append(line)
    return lines


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_the_processes_of_one_worker_command_share_a_tenants_rate_limit() -> None:
    from activities.channels.rate_limit import RateLimits, set_process_share

    set_process_share(1 / 2)
    try:
        bucket = RateLimits().bucket("t", "sms", 200.0)
        assert bucket is not None and bucket.rate == 100.0
    finally:
        set_process_share(1.0)
    bucket = RateLimits().bucket("t", "sms", 200.0)
    assert bucket is not None and bucket.rate == 200.0


def test_worker_processes_metrics_ports_never_collide_and_a_clash_is_refused_at_start(settings: Settings) -> None:
    from workers.main import child_ports, port_clash

    adjacent = settings.model_copy(update={"worker_metrics_port": 9464, "temporal_metrics_port": 9465})
    ports = [port for index in range(8) for port in child_ports(adjacent, index).values()]
    assert len(ports) == len(set(ports)) == 16, ports
    assert child_ports(adjacent, 0) == {"worker_metrics_port": 9464, "temporal_metrics_port": 9465}

    assert port_clash(adjacent, 8) is None
    # Two apart, two processes: process 1's worker port would be process 0's SDK port (supervise
    # logs this and exits 2 instead of starting them).
    clashing = settings.model_copy(update={"worker_metrics_port": 9464, "temporal_metrics_port": 9466})
    clash = port_clash(clashing, 2)
    assert clash is not None and "WORKER_METRICS_PORT of worker process 1 would be 9466" in clash, clash
    assert "TEMPORAL_METRICS_PORT of worker process 0" in clash, clash
