"""Many tenants, one worker process: how long until a fresh `pennant worker` serves N tenant
queues, what the process and the Temporal server cost while every tenant is idle (RSS,
threads, CPU), and start → completed of small runs in a few of those tenants.

    python -m benchmarks.many_tenants --tenants 500 --idle-seconds 120

Goals (issue 10): idle CPU under 2% of a core for the worker and for the Temporal server, RSS
under 300 MB, a few dozen threads; a 10-recipient run's start → completed p95 under 250 ms.
The worker is a subprocess of its own (`--worker-tree` runs another checkout's code against
the same stack, for a before/after on one machine); the rest is the in-process stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from benchmarks.common import stop_process, summary
from benchmarks.push_common import PushTenant, run_to_end
from core.configs.checks import load_config_file
from core.infra.temporal import task_queue_for
from core.tenants.config_schema import Execution, Experiments, Policies, TenantConfig
from core.tenants.config_store import save_config
from core.tenants.keys import new_key, store_key
from devstack.demo_data import seed_customers
from devstack.inprocess import LocalStack, local_stack
from devstack.worker_env import worker_env as stack_worker_env
from workers.tenant_workers import TenantSelection

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = 10
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """What /proc says about one process at one instant."""

    cpu_seconds: float
    rss_mb: float
    threads: int


def sample(pid: int) -> Sample:
    """CPU time used so far (user + system), resident memory and thread count of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Sample(cpu, int(status["VmRSS"].split()[0]) / 1024, int(status["Threads"]))


def thread_names(pid: int, top: int = 6) -> str:
    """The most common thread names of `pid` (digits stripped), e.g. `workflow-processing:500`."""
    names: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            names[(task / "comm").read_text().strip().rstrip("0123456789_-")] += 1
    return ", ".join(f"{name}:{n}" for name, n in names.most_common(top))


def temporal_server_pid() -> int:
    """The Temporal dev server this process started (the in-process stack's)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and b"start-dev" in (proc / "cmdline").read_bytes():
                return int(proc.name)
    raise LookupError("no Temporal dev server among this process's children")


def tenant_config(base: TenantConfig, slug: str) -> TenantConfig:
    """FreshMart's config under `slug`, without quiet hours, caps, holdout or rate limits, so a
    run sends at once at any time of day and measures the pipeline."""
    channels = base.channels.model_copy(
        update={
            name: getattr(base.channels, name).model_copy(update={"rate_limit_per_second": None})
            for name in base.channels.enabled()
        }
    )
    return base.model_copy(
        update={
            "slug": slug,
            "channels": channels,
            "policies": Policies(consent_required={"email": False}),
            "experiments": Experiments(),
            "execution": Execution(activities_per_second=None),
        }
    )


async def create_tenants(pool: asyncpg.Pool, base: TenantConfig, count: int, prefix: str) -> list[str]:
    """Save `count` tenant configs (a few at a time: each save validates and compiles templates)."""
    slugs = [f"{prefix}{i:04d}" for i in range(count)]
    limit = asyncio.Semaphore(8)

    async def one(slug: str) -> None:
        async with limit:
            await save_config(pool, tenant_config(base, slug), "benchmark")

    await asyncio.gather(*(one(s) for s in slugs))
    return slugs


def worker_env(stack: LocalStack) -> dict[str, str]:
    """The environment of a `pennant worker` process on the stack's servers."""
    # One process: the figure is per process.
    return stack_worker_env(stack.settings, LOG_FORMAT="json", WORKER_PROCESSES="1")


@contextlib.contextmanager
def worker_process(stack: LocalStack, tree: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`pennant worker` (one process, by WORKER_PROCESSES, which older checkouts ignore) from the
    checkout `tree`, logging to `log_path`; stopped on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.cli", "worker"],
            env=worker_env(stack),
            cwd=tree,  # first on sys.path: that checkout's code runs
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        stop_process(proc)


async def wait_serving(proc: subprocess.Popen[bytes], log_path: Path, slugs: list[str], within: float) -> float:
    """Wait until the worker logs that it serves every one of `slugs`' queues; the seconds taken."""
    t0 = time.perf_counter()
    wanted = {f"serving task queue {task_queue_for(s)}" for s in slugs}
    while True:
        text = log_path.read_text(errors="replace")
        if all(w in text for w in wanted):
            return time.perf_counter() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}:\n{text[-3000:]}")
        if time.perf_counter() - t0 > within:
            raise TimeoutError(f"the worker served {sum(w in text for w in wanted)} of {len(wanted)} within {within}s")
        await asyncio.sleep(0.2)


async def small_runs(stack: LocalStack, slugs: list[str], runs_per_tenant: int) -> tuple[list[float], list[float]]:
    """Run a 10-recipient email campaign `runs_per_tenant` times in each of `slugs`, one run at
    a time; start → completed per run, as the database records it (created → finished) and as
    the client sees it (POST → the run's row says completed, polled every 10 ms: what GET answers
    once a run has finished; `push_common.wait_row` says why not GET itself)."""
    recorded: list[float] = []
    observed: list[float] = []
    for slug in slugs:
        await seed_customers(stack.pool, slug, RECIPIENTS)
        key = new_key("tk")
        await store_key(stack.pool, key, slug, "benchmark")
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=f"{stack.api_url}/v1/tenants/{slug}", headers=headers, timeout=30
        ) as http:
            campaign = {"name": "Small", "channels": ["email"], "variants": [{"key": "A", "template": "weekly_deals"}]}
            created = await http.post("/campaigns", json=campaign)
            assert created.status_code == 201, created.text
            tenant = PushTenant(slug, http, created.json()["id"])
            for _ in range(runs_per_tenant):
                outcome = await run_to_end(tenant, poll_seconds=0.01, rows=stack.pool)
                observed.append(outcome.elapsed_s * 1000)
                assert outcome.body["status"] == "completed", outcome.body
                row = await stack.pool.fetchrow(
                    "SELECT created_at, finished_at FROM runs WHERE tenant_id = $1 AND id = $2::uuid",
                    slug,
                    outcome.run_id,
                )
                assert row is not None
                recorded.append((row["finished_at"] - row["created_at"]).total_seconds() * 1000)
    return recorded, observed


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


async def run(
    tenants: int = 100,
    idle_seconds: float = 10.0,
    run_tenants: int = 3,
    runs_per_tenant: int = 5,
    tree: Path = ROOT,
    settle_seconds: float = 5.0,
) -> None:
    """Measure and print the figures (see the module docstring)."""
    print(f"many tenants  {tenants} tenants, worker code from {tree}; {_load()}", flush=True)
    # The in-process stack serves nothing itself: the worker under test is the only one.
    async with local_stack(provider_events=False, selection=TenantSelection(frozenset())) as stack:
        base = load_config_file(stack.settings.tenant_configs_dir / "freshmart.yaml")
        t0 = time.perf_counter()
        slugs = await create_tenants(stack.pool, base, tenants, f"many-{uuid.uuid4().hex[:6]}-")
        print(f"many tenants  {tenants} tenant configs saved in {time.perf_counter() - t0:.1f} s", flush=True)
        log_path = stack.workdir / "worker.log"
        with worker_process(stack, tree, log_path) as proc:
            serve_s = await wait_serving(proc, log_path, slugs, within=max(120.0, tenants * 0.5))
            print(f"many tenants  worker started → serving all {tenants} queues: {serve_s:.1f} s", flush=True)
            await asyncio.sleep(settle_seconds)  # pollers settle to their minimum
            server = temporal_server_pid()
            w0, s0, t0 = sample(proc.pid), sample(server), time.perf_counter()
            await asyncio.sleep(idle_seconds)
            w1, s1, elapsed = sample(proc.pid), sample(server), time.perf_counter() - t0
            worker_cpu = 100 * (w1.cpu_seconds - w0.cpu_seconds) / elapsed
            print(
                f"many tenants  idle {idle_seconds:.0f} s: worker CPU {worker_cpu:.1f}% of a core (goal < 2%), "
                f"RSS {w1.rss_mb:.0f} MB (goal < 300), {w1.threads} threads"
                f" (goal: a few dozen); Temporal server CPU "
                f"{100 * (s1.cpu_seconds - s0.cpu_seconds) / elapsed:.1f}% (goal < 2%), RSS {s1.rss_mb:.0f} MB",
                flush=True,
            )
            print(f"many tenants  worker threads: {thread_names(proc.pid)}", flush=True)
            recorded, observed = await small_runs(stack, slugs[:run_tenants], runs_per_tenant)
            after = sample(proc.pid)
            print(
                f"many tenants  {RECIPIENTS}-recipient run start → completed in {run_tenants} of {tenants} tenants "
                f"(goal p95 < 250 ms): recorded (created → finished) {summary(recorded)}; "
                f"client (POST → completed seen) {summary(observed)}",
                flush=True,
            )
            # Each tenant's first run also warms the worker's caches for it (config, templates).
            firsts = ", ".join(f"{ms:.0f}" for ms in recorded[::runs_per_tenant])
            print(f"many tenants  of which each tenant's first run (recorded): {firsts} ms", flush=True)
            print(
                f"many tenants  after the runs: worker RSS {after.rss_mb:.0f} MB, {after.threads} threads "
                f"({thread_names(proc.pid)}); {_load()}",
                flush=True,
            )


def main() -> None:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.many_tenants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=500)
    # Two minutes: a shorter window can miss what recurs once a minute (each idle queue's long
    # poll renewed, the server's queue bookkeeping); 30 s right after start missed both.
    parser.add_argument("--idle-seconds", type=float, default=120.0)
    parser.add_argument("--run-tenants", type=int, default=3, help="tenants that run small campaigns")
    parser.add_argument("--runs", type=int, default=5, help="10-recipient runs in each of those, one at a time")
    parser.add_argument("--worker-tree", type=Path, default=ROOT, help="checkout whose `pennant worker` to measure")
    args = parser.parse_args()
    asyncio.run(run(args.tenants, args.idle_seconds, args.run_tenants, args.runs, args.worker_tree.resolve()))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # Temporal's runtime can abort at interpreter exit (sdk-python#300)
