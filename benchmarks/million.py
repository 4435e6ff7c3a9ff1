"""A push run to N recipients through the API and the pipeline, and the same work as a plain
asyncio loop without Temporal, in one benchmark run on one stack (same PostgreSQL, the same
provider simulator in its own process, the project's renderer), side by side:

    python -m benchmarks.million --recipients 1000000

The raw loop reads keyset pages of 1,000 customers, applies the same policies (suppression,
caps, consent), renders with core/content/rendering.py (with the link signature delivery adds), POSTs
batches of 500 to the simulator 8 at a time and writes each batch's ledger rows with the
delivery activity's statement. It runs first; the pipeline then runs on the same tenant.
Per-stage times are summed over concurrent work (busy time, not wall time): for the pipeline
from timers this benchmark wraps around the delivery activity's steps in this process (the
in-process stack's workers) and the provider-request metric; plan from the workflow history.

With `--worker-processes N` the pipeline's batches are shared by N worker processes polling
the tenant's queue (this process's in-process worker and N-1 `pennant worker` processes), as
`pennant worker` does by default on an N-core host; the per-stage times then cover only this
process's share.

Goals (issue 10): pipeline at least 0.8 of the raw loop (20,000 recipients/s the mark), at most
5,000 history events per execution, worker peak RSS flat in audience size.

Figures behind two defaults, measured with this benchmark on a 100k push run (moved here from
the code comments, which keep the rule): WORKER_BATCH_SLOTS=2 sent 4,202 recipients/s against
4,014 with 8 (core/infra/settings.py BATCH_SLOTS); with `--push-chunk 50` push requests and
ledger writes took 43% of the worker's samples (py-spy), with 500 (activities/delivery.py
CHUNK_BY_CHANNEL) 19%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import functools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import prometheus_client
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import Client

import activities.delivery as delivery
from activities.channels.base import OutboundMessage
from activities.channels.push_http import HttpPushAdapter
from activities.names import BEGIN_RUN, PLAN_AUDIENCE
from benchmarks.push_common import (
    PushTenant,
    load_average,
    provider_simulator,
    push_tenant,
    raw_run,
    reset_peak_rss,
    rss_mb,
    run_to_end,
)
from core.common import signed_links as links
from core.content.channels import CHANNELS, message_key
from core.content.rendering import render_message
from core.customers.suppressions import suppressed_addresses
from core.infra.db import tenant_tx
from core.infra.temporal import run_workflow_id, task_queue_for
from core.runs.frequency import CapTracker
from core.security.secrets import SecretResolver
from devstack.inprocess import LocalStack, local_stack
from devstack.worker_env import WorkerProcesses, worker_env
from workers.main import provider_http_client

P = ParamSpec("P")
R = TypeVar("R")

PAGE = 1000
REQUEST = 500
IN_FLIGHT = 8
STAGES = ("plan", "fetch", "policy", "render", "send", "ledger")
_PAGE_SQL = """
SELECT * FROM customers WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3
"""


class StageClock:
    """Seconds spent per stage, summed over concurrent work."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def line(self, wall: float) -> str:
        """The stages as `name seconds (share of wall)`."""
        parts = []
        for name in STAGES:
            if name in self.seconds:
                s = self.seconds[name]
                parts.append(f"{name} {s:.1f} s ({100 * s / wall:.0f}%)")
        return ", ".join(parts)


# -- the raw loop -----------------------------------------------------------------------------


async def raw_loop(stack: LocalStack, tenant: PushTenant, clock: StageClock) -> tuple[float, int]:
    """The same work as the pipeline, without Temporal; (seconds, messages sent)."""
    pool, slug = stack.pool, tenant.slug
    settings = stack.settings
    raw = await raw_run(stack, tenant)
    config, variant, run_id = raw.config, raw.variant, raw.run_id
    secret, base = settings.link_signing_secret or "", settings.public_base_url.rstrip("/")
    entry = CHANNELS["push"]
    sent = 0
    slots = asyncio.Semaphore(IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []

    async with provider_http_client() as http:
        secrets = SecretResolver(pool, settings.secrets_keyring)
        adapter = HttpPushAdapter(http, settings.provider_base_url, secrets, max_per_request=REQUEST)

        async def send_and_record(messages: list[OutboundMessage]) -> None:
            nonlocal sent
            try:
                t0 = time.perf_counter()
                results = await adapter.send_batch(config, messages)
                t1 = time.perf_counter()
                by_key = {r.idempotency_key: r for r in results}
                cols: list[list[Any]] = [[] for _ in range(9)]
                for m in messages:
                    r = by_key[m.idempotency_key]
                    row = (m.customer_id, "push", variant.key, r.status, r.reason, m.address, m.idempotency_key,
                           r.provider_message_id, None)  # fmt: skip
                    for col, value in zip(cols, row, strict=True):
                        col.append(value)
                async with tenant_tx(pool, slug) as conn:
                    await conn.execute(delivery._LEDGER_SQL, slug, run_id, *cols)
                clock.seconds["send"] += t1 - t0
                clock.seconds["ledger"] += time.perf_counter() - t1
                sent += sum(r.status == "sent" for r in results)
            except BaseException as exc:  # surfaced by the producer
                errors.append(exc)
            finally:
                slots.release()

        started = time.perf_counter()
        last = 0
        while not errors:
            t0 = time.perf_counter()
            async with tenant_tx(pool, slug) as conn:
                page = [dict(c) for c in await conn.fetch(_PAGE_SQL, slug, last, PAGE)]
                t1 = time.perf_counter()
                addresses = [a for c in page if (a := entry.address(c))]
                suppressed = await suppressed_addresses(conn, slug, "push", addresses)
                caps = await CapTracker.load(
                    conn, slug, run_id, config.policies.frequency_caps, [c["id"] for c in page]
                )
            t2 = time.perf_counter()
            clock.seconds["fetch"] += t1 - t0
            if not page:
                break
            last = page[-1]["id"]
            messages: list[OutboundMessage] = []
            policy = t2 - t1
            render = 0.0
            for cust in page:
                p0 = time.perf_counter()
                address = entry.address(cust)
                if not address or not entry.consented(cust) or address in suppressed or caps.capped(cust["id"], "push"):
                    continue
                caps.record(cust["id"], "push")
                p1 = time.perf_counter()
                key = message_key(slug, run_id, cust["id"], "push")
                token = links.sign({"t": slug, "c": cust["id"], "ch": "push"}, secret)
                unsubscribe_url = f"{base}/u/{token}"
                content = render_message(
                    config, variant, "push", cust, campaign=raw.campaign_ctx, unsubscribe_url=unsubscribe_url,
                    tracking=raw.tracking,
                )  # fmt: skip
                messages.append(OutboundMessage(key, cust["id"], address, content, {}))
                p2 = time.perf_counter()
                policy += p1 - p0
                render += p2 - p1
            clock.seconds["policy"] += policy
            clock.seconds["render"] += render
            for i in range(0, len(messages), REQUEST):
                await slots.acquire()
                task = asyncio.create_task(send_and_record(messages[i : i + REQUEST]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        if errors:
            raise errors[0]
        return time.perf_counter() - started, sent


# -- the pipeline's stage timers ----------------------------------------------------------------

_batch: contextvars.ContextVar[dict[str, float]] = contextvars.ContextVar("batch")


def _timed(clock: StageClock, stage: str, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - t0
            clock.seconds[stage] += spent
            if stage == "policy" and (batch := _batch.get(None)) is not None:
                batch["policy"] += spent

    return wrapper


def _timed_sync(clock: StageClock, stage: str, fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock.seconds[stage] += time.perf_counter() - t0

    return wrapper


def instrument_delivery(clock: StageClock) -> None:
    """Time the delivery activity's steps in this process: fetch (its first transaction, less
    the policy reads), policy (suppression and cap reads, skip reasons), render (signature and
    render per message) and ledger (every ledger write). Send comes from the metrics."""
    deliver = delivery.DeliveryActivities._deliver
    load_caps = CapTracker.load

    @functools.wraps(deliver)
    async def timed_deliver(self: delivery.DeliveryActivities, *args: Any) -> Any:
        _batch.set({"start": time.perf_counter(), "policy": 0.0})
        return await deliver(self, *args)

    async def timed_caps(*args: Any) -> CapTracker:
        t0 = time.perf_counter()
        found = await load_caps(*args)
        end = time.perf_counter()
        clock.seconds["policy"] += end - t0
        batch = _batch.get(None)
        if batch is not None:
            clock.seconds["fetch"] += end - batch["start"] - batch["policy"] - (end - t0)
        return found

    delivery.DeliveryActivities._deliver = timed_deliver  # type: ignore[method-assign,assignment]
    # Module globals the activity looks up at call time: replaced through the module's namespace.
    vars(delivery)["suppressed_addresses"] = _timed(clock, "policy", suppressed_addresses)
    vars(delivery)["CapTracker"] = type("TimedCapTracker", (CapTracker,), {"load": staticmethod(timed_caps)})
    delivery.DeliveryActivities._skip_reason = _timed_sync(clock, "policy", delivery.DeliveryActivities._skip_reason)  # type: ignore[method-assign]
    delivery.DeliveryActivities._render = _timed_sync(clock, "render", delivery.DeliveryActivities._render)  # type: ignore[method-assign]
    delivery.DeliveryActivities._record = _timed(clock, "ledger", delivery.DeliveryActivities._record)  # type: ignore[method-assign,assignment]


def _metric_sum(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def _local_plan_seconds(marker: MarkerRecordedEventAttributes) -> float:
    """Scheduled → completed seconds of a local plan_audience activity's marker (patch
    local-plan), or of begin_run's (patch one-step-start: the plan with the config pin, status
    writes and experiment, which take milliseconds), else 0."""
    data = marker.details.get("data")
    if marker.marker_name != "core_local_activity" or data is None or not data.payloads:
        return 0.0
    recorded = json.loads(data.payloads[0].data)
    if recorded.get("activity_type") not in (PLAN_AUDIENCE, BEGIN_RUN):
        return 0.0

    def seconds(t: dict[str, int]) -> float:
        return t["seconds"] + t.get("nanos", 0) / 1e9

    return seconds(recorded["complete_time"]) - seconds(recorded["original_schedule_time"])


async def history_chain(client: Client, workflow_id: str) -> tuple[list[int], float]:
    """The history length of every execution of a run (first to last), and its plan activity's
    scheduled → completed seconds."""
    desc = await client.get_workflow_handle(workflow_id).describe()
    run_id = desc.raw_description.workflow_execution_info.first_run_id or desc.run_id
    lengths: list[int] = []
    plan = 0.0
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        lengths.append(len(history.events))
        scheduled: dict[int, float] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
                plan += _local_plan_seconds(event.marker_recorded_event_attributes)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                if event.activity_task_scheduled_event_attributes.activity_type.name == PLAN_AUDIENCE:
                    scheduled[event.event_id] = event.event_time.ToDatetime().timestamp()
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = event.activity_task_completed_event_attributes.scheduled_event_id
                if sid in scheduled:
                    plan += event.event_time.ToDatetime().timestamp() - scheduled[sid]
        last = history.events[-1]
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        else:
            run_id = ""
    return lengths, plan


@contextlib.contextmanager
def extra_workers(stack: LocalStack, slug: str, count: int) -> Iterator[None]:
    """`count` more `pennant worker` processes on `slug`'s queue for the block, each logging to
    the stack's directory; ready once each says it serves the queue."""
    env = worker_env(
        stack.settings,
        TEMPORAL_ADDRESS=stack.env.client.service_client.config.target_host,
        WORKER_PROCESSES="1",
        LOG_FORMAT="text",
    )
    with WorkerProcesses(env, stack.workdir) as workers:
        started = [workers.start(slug) for _ in range(count)]
        deadline = time.monotonic() + 60
        for proc in started:
            while f"serving task queue {task_queue_for(slug)}" not in workers.log_text(proc):
                workers.assert_alive(proc)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker process did not start: {workers.log_text(proc)[-2000:]}")
                time.sleep(0.2)
        yield


async def run(recipients: int = 10_000, only: str = "both", worker_processes: int = 1) -> None:
    """Measure and print the figures (see the module docstring)."""
    chunk = delivery.CHUNK_BY_CHANNEL.get("push", delivery.CHUNK)
    print(f"million      {recipients:,} push recipients, pipeline chunks of {chunk}; {load_average()}", flush=True)
    with provider_simulator(Path(tempfile.mkdtemp(prefix="pennant-sim-")) / "sim.log") as (_, sim_pid):
        async with local_stack(provider_events=False) as stack:
            t0 = time.perf_counter()
            tenant = await push_tenant(stack, recipients, "million")
            print(
                f"million      tenant with {recipients:,} customers ready in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            raw_rate = None
            async with contextlib.aclosing(tenant.http):
                if only in ("both", "raw"):
                    clock = StageClock()
                    elapsed, sent = await raw_loop(stack, tenant, clock)
                    raw_rate = recipients / elapsed
                    print(
                        f"million      raw loop: {sent:,} sent in {elapsed:.1f} s → {raw_rate:,.0f} recipients/s; "
                        f"stages {clock.line(elapsed)}; {load_average()}",
                        flush=True,
                    )
                if only in ("both", "pipeline"):
                    with extra_workers(stack, tenant.slug, worker_processes - 1):
                        await pipeline(stack, tenant, recipients, raw_rate, worker_processes)
            sim_rss, sim_peak = rss_mb(sim_pid)
            print(f"million      provider simulator RSS {sim_rss:.0f} MB (peak {sim_peak:.0f} MB)", flush=True)


async def pipeline(
    stack: LocalStack, tenant: PushTenant, recipients: int, raw_rate: float | None, processes: int = 1
) -> None:
    """One run through the API and the workers of this process (and `processes` - 1 more);
    prints its figures."""
    clock = StageClock()
    instrument_delivery(clock)
    labels = {"tenant": tenant.slug, "channel": "push", "outcome": "ok"}
    send0 = _metric_sum("pennant_provider_request_duration_seconds_sum", **labels)
    reset_peak_rss()
    rss0, _ = rss_mb()
    outcome = await run_to_end(tenant)
    rss1, peak = rss_mb()
    clock.seconds["send"] = _metric_sum("pennant_provider_request_duration_seconds_sum", **labels) - send0
    batch_s = _metric_sum("pennant_batch_duration_seconds_sum", tenant=tenant.slug, outcome="ok")
    counts, elapsed = outcome.body["counts"], outcome.elapsed_s
    workflow_id = run_workflow_id(tenant.slug, tenant.campaign_id, outcome.run_id)
    lengths, clock.seconds["plan"] = await history_chain(stack.env.client, workflow_id)
    rate = recipients / elapsed
    ratio = f"{rate / raw_rate:.2f}" if raw_rate else "n/a"
    print(
        f"million      pipeline ({processes} worker process{'es' if processes > 1 else ''}): "
        f"status {outcome.body['status']}, planned {counts['planned']:,}, "
        f"sent {counts['sent']:,}, skipped {counts['skipped']:,}, failed {counts['failed']:,} "
        f"in {elapsed:.1f} s → {rate:,.0f} recipients/s "
        f"(mark 20,000/s); POST {outcome.post_ms:.0f} ms; {load_average()}",
        flush=True,
    )
    print(f"million      ratio pipeline / raw: {ratio} (goal ≥ 0.8)", flush=True)
    print(
        f"million      pipeline stages: {clock.line(elapsed)}; batch activities {batch_s:.1f} s in all",
        flush=True,
    )
    print(
        f"million      history events per execution: {len(lengths)} executions, max {max(lengths):,} "
        f"(goal ≤ 5,000): {lengths[:8]}{' …' if len(lengths) > 8 else ''}",
        flush=True,
    )
    print(
        f"million      this process (API + workers) RSS {rss0:.0f} MB before the run, {rss1:.0f} MB after, "
        f"peak during the run {peak:.0f} MB (goal: flat in audience size)",
        flush=True,
    )


def main() -> None:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.million", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("both", "pipeline", "raw"), default="both")
    parser.add_argument("--push-chunk", type=int, help="messages per push request and ledger write (before/after)")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes sharing the pipeline's batches (default: one per core, as `pennant worker` runs)",
    )
    args = parser.parse_args()
    if args.push_chunk:
        delivery.CHUNK_BY_CHANNEL["push"] = args.push_chunk
    asyncio.run(run(args.recipients, args.only, max(1, args.worker_processes)))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # Temporal's runtime can abort at interpreter exit (sdk-python#300)
