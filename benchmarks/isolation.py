"""Isolation under load: tenant B's 1,000-recipient push runs on an idle stack, then again while
tenant A's big push run sends, on the same worker process (the in-process stack):

    python -m benchmarks.isolation --a-recipients 1000000 --b-runs 10

Goal (issue 10): B's start → completed under load within 2x of B on the idle stack. Start is
the `POST …/runs`; completed is when the run's row says so, read from PostgreSQL every 10 ms
(polling GET that often would query B's workflow 100 times a second and load the worker being
measured). Also printed: B's POST latency and how late this process's event loop ran (the
workers' loop: the stack is in-process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from benchmarks.common import summary
from benchmarks.push_common import (
    BENCH_EXECUTION,
    PushTenant,
    load_average,
    provider_simulator,
    push_tenant,
    run_to_end,
    start_run,
    wait_run,
)
from devstack.inprocess import local_stack

B_RECIPIENTS = 1000


class LoopLag:
    """How late this event loop wakes a 50 ms sleep, sampled until stopped."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def watch(self) -> None:
        """Sample until cancelled."""
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.05)
            self.samples.append((time.perf_counter() - t0 - 0.05) * 1000)


async def b_runs(
    tenant: PushTenant, count: int, rows: asyncpg.Pool, until: asyncio.Task[object] | None = None
) -> tuple[list[float], list[float]]:
    """`count` runs of B one after the other (fewer if `until` ends first; a run under way then
    is not counted): start → completed (the POST until the run's row says so) and POST
    latencies, in ms."""
    elapsed: list[float] = []
    posts: list[float] = []
    for _ in range(count):
        if until is not None and until.done():
            break
        outcome = await run_to_end(tenant, poll_seconds=0.01, rows=rows)
        if until is not None and until.done():
            break
        assert outcome.body["status"] == "completed", outcome.body
        assert outcome.body["counts"]["sent"] == B_RECIPIENTS, outcome.body["counts"]
        elapsed.append(outcome.elapsed_s * 1000)
        posts.append(outcome.post_ms)
    return elapsed, posts


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def run(a_recipients: int = 20_000, runs: int = 5, a_batches: int | None = None) -> None:
    """Measure and print the figures (see the module docstring)."""
    print(
        f"isolation    A {a_recipients:,} recipients "
        f"({a_batches or BENCH_EXECUTION.max_concurrent_batches} batches in flight), "
        f"B {runs} x {B_RECIPIENTS:,}; {load_average()}",
        flush=True,
    )
    with provider_simulator(Path(tempfile.mkdtemp(prefix="pennant-sim-")) / "sim.log"):
        async with local_stack(provider_events=False) as stack:
            a_execution = BENCH_EXECUTION
            if a_batches is not None:  # A's per-tenant concurrency, from its config
                a_execution = a_execution.model_copy(update={"max_concurrent_batches": a_batches})
            a = await push_tenant(stack, a_recipients, "iso-a", a_execution)
            b = await push_tenant(stack, B_RECIPIENTS, "iso-b")
            async with contextlib.aclosing(a.http), contextlib.aclosing(b.http):
                await b_runs(b, 1, stack.pool)  # warm-up: first run of a tenant compiles and caches
                idle, idle_posts = await b_runs(b, runs, stack.pool)
                print(f"isolation    B idle: start → completed {summary(idle)}; POST {summary(idle_posts)}", flush=True)

                lag = LoopLag()
                watcher = asyncio.create_task(lag.watch())
                a_run, _, a_t0 = await start_run(a)
                a_task = asyncio.create_task(wait_run(a, a_run, a_t0))
                while not a_task.done():  # B starts once A is sending
                    body = (await a.http.get(f"/runs/{a_run}")).json()
                    if body["counts"]["sent"] > 0:
                        break
                    await asyncio.sleep(0.1)
                loaded, loaded_posts = await b_runs(b, runs, stack.pool, until=a_task)
                a_body, a_elapsed = await a_task
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        print(
            f"isolation    B while A sends ({len(loaded)} of {runs} finished before A; "
            "raise --a-recipients for all): "
            f"start → completed {summary(loaded)}; POST {summary(loaded_posts)}",
            flush=True,
        )
        if not loaded:
            print("isolation    no B run finished while A sent: raise --a-recipients", flush=True)
            return
        ratio50 = statistics.median(loaded) / statistics.median(idle)
        ratio95 = _p95(loaded) / _p95(idle)
        print(
            f"isolation    B loaded / idle: median {ratio50:.1f}x, p95 {ratio95:.1f}x (goal ≤ 2x); "
            f"event loop late by median {statistics.median(lag.samples):.0f} ms, max {max(lag.samples):.0f} ms",
            flush=True,
        )
        counts = a_body["counts"]
        print(
            f"isolation    A: {a_body['status']}, sent {counts['sent']:,} in {a_elapsed:.1f} s "
            f"→ {a_recipients / a_elapsed:,.0f} recipients/s; {load_average()}",
            flush=True,
        )


def main() -> None:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.isolation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-recipients", type=int, default=1_000_000)
    parser.add_argument("--b-runs", type=int, default=10, help="B's 1,000-recipient runs, idle and under load")
    parser.add_argument("--a-batches", type=int, help="A's execution.max_concurrent_batches (default 8)")
    args = parser.parse_args()
    asyncio.run(run(args.a_recipients, args.b_runs, args.a_batches))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # Temporal's runtime can abort at interpreter exit (sdk-python#300)
