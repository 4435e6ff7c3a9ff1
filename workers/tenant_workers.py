"""The shared workflow Worker and one activity Worker per tenant task queue, added, rebuilt and
dropped while the process runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum, Worker

from core.infra.db import DATABASE_UNAVAILABLE
from core.infra.temporal import WORKFLOW_QUEUE, task_queue_for, tenant_of_queue
from core.tenants.config_schema import Execution
from core.tenants.config_store import TENANTS_CHANNEL, active_tenants
from workers.metrics import ActivityObserver
from workers.open_workflows import OpenWorkflows, open_workflows
from workers.queue_upgrade import move_schedules
from workers.tenant_wake import ActivityWake
from workflows.campaign_run import CampaignRunWorkflow
from workflows.scheduled_run import ScheduledCampaignWorkflow
from workflows.testsend import CampaignTestSendWorkflow

WORKFLOWS = [CampaignRunWorkflow, ScheduledCampaignWorkflow, CampaignTestSendWorkflow]

HEARTBEAT_THROTTLE = timedelta(seconds=1)
# A worker process that sees work for a tenant (a workflow scheduling one of its activities)
# tells the other processes on this channel, so that they poll the tenant's queue too.
WORK_CHANNEL = "pennant_tenant_work"
# How long a tenant's queue stays polled after its last sign of work in this process (an
# activity starting or ending, a workflow scheduling one, a NOTIFY), when Temporal lists no open
# workflow of the tenant. Several scans long, so that a run started just after a scan is listed
# by the next scans before its tenant could fall asleep.
IDLE_SECONDS = 60.0
# Threads of the process's one workflow-task executor. They are started only when activations
# overlap, so an idle process holds none; the bound is generous because an activation waiting
# for a thread counts against the SDK's 2 s deadlock timeout.
WORKFLOW_TASK_THREADS = 64
log = logging.getLogger("pennant.workers")


@dataclass(frozen=True)
class TenantSelection:
    """Which tenants this process serves: all, a named list, or shard i of n (by the tenant's
    configured `execution.worker_shard`, else by a stable hash of its slug)."""

    names: frozenset[str] | None = None
    shard: tuple[int, int] | None = None

    def includes(self, tenant: str, execution: Execution | None = None) -> bool:
        """Whether this process serves `tenant` (with its execution settings, when known)."""
        if self.names is not None and tenant not in self.names:
            return False
        if self.shard is not None:
            index, count = self.shard
            pinned = execution.worker_shard if execution else None
            return (pinned if pinned is not None else zlib.crc32(tenant.encode())) % count == index
        return True

    @property
    def serves_any(self) -> bool:
        """False for an explicit empty list of tenants: such a process serves nothing, not even
        workflows (a benchmark measuring a worker process of its own)."""
        return self.names is None or bool(self.names)


def _open(conn: Any) -> bool:
    """Whether a pooled connection is still usable (the pool detaches one whose session died)."""
    if conn is None:
        return False
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _workflow_task_executor() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=WORKFLOW_TASK_THREADS, thread_name_prefix="workflow-task")


@dataclass
class _Running:
    worker: Worker
    task: asyncio.Task[None]
    execution: Execution
    workflows: bool = False  # also the workflows still open on the tenant's own queue


class TenantWorkers:
    """Serves the shared workflow queue and one activity queue per selected tenant, following
    the tenants table.

    Every tenant's workflows run on `WORKFLOW_QUEUE` (one Worker, with the bookkeeping local
    activities); each tenant's activities run on its own queue, under its own concurrency and
    rate limits. The SDK gives every Worker that has workflows a thread of its own, so a workflow
    queue per tenant would cost a thread per tenant at rest (benchmarks/many_tenants.py counts them).

    A tenant's activity queue is polled only while the tenant has work: an idle tenant costs no
    poll, no Worker and no thread (idle tenants' long polls would otherwise be most of the
    Temporal server's CPU at rest). The queue is polled from the moment a workflow in this process
    schedules one of the tenant's activities (`tenant_wake.ActivityWake`, which also NOTIFYs the
    other processes on `WORK_CHANNEL`) or one of its activities runs here, for as long as
    Temporal lists an open workflow of the tenant (`open_workflows`, every `scan_seconds`: the
    safety net that no activity waits on an unpolled queue), and `idle_seconds` after its last
    sign of work.

    Runs started before the shared queue have their workflow on the tenant's queue; a tenant
    with such open workflows (found by the same scan) gets its workflows served there too until
    they end. A process that serves no tenant serves no workflows.

    Tenant changes arrive by LISTEN/NOTIFY (within milliseconds) with a slow poll as a safety
    net. A tenant whose execution limits changed gets its Worker rebuilt with the new limits.
    The Workers share the client (so the process's one Temporal runtime) and one workflow-task
    thread pool; all activities are async, so there is no activity executor to share.
    """

    def __init__(
        self,
        client: Client,
        pool: asyncpg.Pool,
        activities: Sequence[Callable[..., Any]],
        selection: TenantSelection = TenantSelection(),
        poll_seconds: float = 5.0,
        scan_seconds: float = 15.0,
        presence: Callable[[str], None] | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ):
        self.client = client
        # Told the tenant of every activity that starts or ends in this process
        # (`ProcessShares.note`: heavier tenants give way to a small run's every step).
        self.presence = presence
        self.pool = pool
        self.activities = list(activities)
        self.selection = selection
        self.poll_seconds = poll_seconds
        self.scan_seconds = scan_seconds
        self.idle_seconds = idle_seconds
        self._served: dict[str, Execution] = {}  # the selected tenants, with their limits
        self._running: dict[str, _Running] = {}  # the tenants whose queue is polled now
        # Tenants whose Worker is shutting down: the SDK refuses a second Worker on a queue of
        # the same client until the first is gone, so a wake meanwhile waits for the next sync.
        self._stopping: set[str] = set()
        self._shared: tuple[Worker, asyncio.Task[None]] | None = None
        self._open = OpenWorkflows()
        self._scan_due = 0.0
        self._awake_until: dict[str, float] = {}
        self._told: dict[str, float] = {}  # when this process last NOTIFYed work for a tenant
        self._loop: asyncio.AbstractEventLoop | None = None
        self._telling: set[asyncio.Task[None]] = set()
        self._moving: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._workflow_tasks = _workflow_task_executor()

    @property
    def tenants(self) -> list[str]:
        """The tenants this process serves (their queue is polled while they have work), sorted."""
        return sorted(self._served)

    @property
    def polling(self) -> list[str]:
        """The tenants whose activity queue is polled right now, sorted."""
        return sorted(self._running)

    @property
    def own_queue_workflows(self) -> list[str]:
        """The served tenants whose own queue is polled for workflows too (runs from before the
        shared queue), sorted."""
        return sorted(t for t, running in self._running.items() if running.workflows)

    def _workflow_options(self) -> dict[str, Any]:
        return {
            "workflows": WORKFLOWS,
            "workflow_task_executor": self._workflow_tasks,
            # An idle queue holds one workflow poll (plus the sticky-queue poll of this process).
            "workflow_task_poller_behavior": PollerBehaviorAutoscaling(minimum=1, maximum=10, initial=1),
        }

    def _start_shared(self) -> None:
        worker = Worker(
            self.client,
            task_queue=WORKFLOW_QUEUE,
            activities=self.activities,  # run here only as local activities (bookkeeping)
            no_remote_activities=True,
            interceptors=[ActivityObserver(self.note), ActivityWake(self._wake_queue)],
            **self._workflow_options(),
        )
        self._shared = (worker, asyncio.create_task(worker.run(), name="worker-workflows"))
        log.info("serving workflow queue %s", WORKFLOW_QUEUE)
        if self._moving is None:
            self._moving = asyncio.create_task(self._move_schedules(), name="move-schedules")

    async def _move_schedules(self) -> None:
        try:
            await move_schedules(self.client)
        except RPCError as exc:
            log.warning("could not list the schedules to move to %s: %s", WORKFLOW_QUEUE, exc.message)

    def note(self, tenant: str) -> None:
        """One of `tenant`'s activities starts or ends in this process: it is at work."""
        if self.presence is not None:
            self.presence(tenant)
        self._wake(tenant)

    def _wake_queue(self, task_queue: str) -> None:
        # On a workflow-task thread (ActivityWake): hand over to the event loop.
        tenant = tenant_of_queue(task_queue)
        if tenant is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to wake
            self._loop.call_soon_threadsafe(self._scheduled, tenant)

    def _scheduled(self, tenant: str) -> None:
        # A workflow here scheduled an activity of `tenant`: poll its queue here, and tell the
        # other processes (served by them or not here), at most once per half idle period.
        self._wake(tenant)
        now = time.monotonic()
        if now - self._told.get(tenant, -self.idle_seconds) >= self.idle_seconds / 2:
            self._told[tenant] = now
            task = asyncio.create_task(self._tell(tenant), name=f"tell-work-{tenant}")
            self._telling.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._telling.discard)

    async def _tell(self, tenant: str) -> None:
        try:
            await self.pool.execute("SELECT pg_notify($1, $2)", WORK_CHANNEL, tenant)
        except DATABASE_UNAVAILABLE as exc:  # the other processes find the work by their scan
            log.warning("could not tell the other worker processes of work for %s (%s)", tenant, exc)
            self._told.pop(tenant, None)

    def _on_work(self, _conn: object, _pid: int, _channel: str, tenant: object) -> None:
        self._wake(str(tenant))

    def _wake(self, tenant: str) -> None:
        """Poll `tenant`'s queue now (when this process serves it) and for `idle_seconds` more."""
        execution = self._served.get(tenant)
        if execution is None:
            return
        self._awake_until[tenant] = time.monotonic() + self.idle_seconds
        if tenant not in self._running and tenant not in self._stopping:
            try:
                self._start(tenant, execution)
            except RuntimeError as exc:  # the SDK refused the Worker: the next sync tries again
                log.warning("could not poll task queue %s: %s", task_queue_for(tenant), exc)
                self._changed.set()
                return
            log.info("polling task queue %s: it has work", task_queue_for(tenant))

    def _awake(self, tenant: str, now: float) -> bool:
        return tenant in self._open.tenants or now < self._awake_until.get(tenant, 0.0)

    def _start(self, tenant: str, execution: Execution) -> None:
        workflows = tenant in self._open.own_queue
        worker = Worker(
            self.client,
            task_queue=task_queue_for(tenant),
            activities=self.activities,
            max_concurrent_activities=execution.max_concurrent_activities,
            max_task_queue_activities_per_second=execution.activities_per_second,
            # One activity poll per tenant, not autoscaling ones: the SDK core's autoscaler costs
            # CPU per Worker even at rest (500 idle tenants: 3.1-3.8% of a core against 0.3%), and
            # one poll fetches the next batch as soon as a slot frees (a batch is hundreds of
            # recipients, so a tenant needs tens of activity tasks a second, not hundreds).
            activity_task_poller_behavior=PollerBehaviorSimpleMaximum(1),
            # A cancel reaches a running activity only in the answer to a heartbeat; sending
            # them at least every second keeps a cancel of a stuck batch to about a second.
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            # Log context, one line and timing per activity.
            interceptors=[ActivityObserver(self.note)],
            **(self._workflow_options() if workflows else {}),
        )
        self._running[tenant] = _Running(
            worker, asyncio.create_task(worker.run(), name=f"worker-{tenant}"), execution, workflows
        )

    async def _stop(self, tenant: str) -> None:
        running = self._running.pop(tenant)
        self._stopping.add(tenant)
        try:
            await running.worker.shutdown()
            await asyncio.gather(running.task, return_exceptions=True)
        finally:
            self._stopping.discard(tenant)

    async def _stop_shared(self) -> None:
        if self._shared is not None:
            worker, task = self._shared
            self._shared = None
            await worker.shutdown()
            await asyncio.gather(task, return_exceptions=True)

    async def _sync_shared(self) -> None:
        if not self.selection.serves_any:
            await self._stop_shared()
            return
        if self._shared is not None and self._shared[1].done():
            log.error("the workflow worker stopped (%s); restarting", self._shared[1].exception())
            self._shared = None
        if self._shared is None:
            self._start_shared()

    async def _scan(self) -> None:
        if time.monotonic() < self._scan_due:
            return
        self._scan_due = time.monotonic() + self.scan_seconds
        try:
            self._open = await open_workflows(self.client)
        except RPCError as exc:
            # The last listing stands: a tenant it names stays polled.
            log.warning("could not list the open workflows: %s", exc.message)

    async def sync(self) -> None:
        """Serve the workflow queue; take new tenants, drop removed ones; poll the queues of the
        tenants with work (rebuilt when their limits changed), stop polling the idle ones."""
        await self._sync_shared()
        await self._scan()
        wanted = {t: e for t, e in (await active_tenants(self.pool)).items() if self.selection.includes(t, e)}
        for tenant in sorted(set(wanted) - set(self._served)):
            log.info("serving task queue %s", task_queue_for(tenant))
        for tenant in sorted(set(self._served) - set(wanted)):
            log.info("dropped task queue %s", task_queue_for(tenant))
            self._awake_until.pop(tenant, None)
        self._served = wanted
        now = time.monotonic()
        idle = sorted(t for t, r in self._running.items() if not r.workflows and not self._awake(t, now))
        removed = sorted(set(self._running) - set(wanted))
        # Stopped together: each stop waits for its pollers to end, which adds up one by one.
        await asyncio.gather(*(self._stop(tenant) for tenant in {*removed, *idle}))
        for tenant in idle:
            if tenant in wanted:
                log.info("stopped polling task queue %s: idle", task_queue_for(tenant))
        for tenant, execution in sorted(wanted.items()):
            running = self._running.get(tenant)
            if running is not None and running.task.done():
                log.error("worker for %s stopped (%s); restarting", tenant, running.task.exception())
                del self._running[tenant]
                running = None
            if running is not None and running.execution != execution:
                await self._stop(tenant)  # no wake starts it meanwhile (`_stopping`)
                running = None
                log.info("rebuilding the worker of %s with new execution limits", tenant)
            if running is not None and running.workflows != (tenant in self._open.own_queue):
                await self._stop(tenant)
                running = None
            if running is None and self._awake(tenant, time.monotonic()):
                self._start(tenant, execution)
                extra = " (and the workflows still open on it)" if tenant in self._open.own_queue else ""
                log.info("polling task queue %s%s", task_queue_for(tenant), extra)

    def _on_notify(self, *_: object) -> None:
        self._changed.set()

    def refresh(self) -> None:
        """Sync with the tenants table now (as a NOTIFY does), e.g. after the selection changed."""
        self._changed.set()

    async def run(self) -> None:
        """Serve until cancelled; a database outage only delays the next sync."""
        listener: Any = None
        frozen = False
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                self._changed.clear()
                try:
                    if not _open(listener):
                        # A restarted database drops the LISTEN session: listen again on a new one.
                        await self._unlisten(listener)
                        listener = None
                        conn = await self.pool.acquire()
                        try:
                            await conn.add_listener(TENANTS_CHANNEL, self._on_notify)
                            await conn.add_listener(WORK_CHANNEL, self._on_work)
                        except BaseException:
                            await self.pool.release(conn)
                            raise
                        listener = conn
                    await self.sync()
                    if not frozen:
                        # What the process holds once it serves (modules, the sandbox's imports,
                        # configs, the Workers) lives as long as it does: out of the collector's
                        # full scans, which took 120-180 ms each under a big run and stopped the
                        # event loop, every tenant's work with it (benchmarks/isolation.py).
                        gc.freeze()
                        frozen = True
                except DATABASE_UNAVAILABLE as exc:
                    # The tenant Workers already running carry on (their activities retry on their
                    # own); leaving here would end the process over a database restart.
                    log.warning("tenant sync failed, database unavailable (%s); retrying", exc)
                # Not asyncio.wait_for: on 3.11 it returns normally when a cancel arrives as the
                # event is set (refresh() right before shutdown), and this loop then never ends.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await self._changed.wait()
        finally:
            await self._unlisten(listener)
            await self.shutdown()

    async def _unlisten(self, listener: Any) -> None:
        if listener is None:
            return
        try:
            if _open(listener):
                await listener.remove_listener(TENANTS_CHANNEL, self._on_notify)
                await listener.remove_listener(WORK_CHANNEL, self._on_work)
            await self.pool.release(listener)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("could not release the LISTEN connection (%s)", exc)

    async def shutdown(self) -> None:
        """Stop every tenant's Worker and the workflow Worker, then the threads they shared."""
        for tenant in list(self._running):
            await self._stop(tenant)
        await self._stop_shared()
        if self._moving is not None:
            self._moving.cancel()
        # Not waiting: a Worker that failed to stop may still hold an activation thread. A fresh
        # pool (no threads until used) lets run() be called again.
        self._workflow_tasks.shutdown(wait=False)
        self._workflow_tasks = _workflow_task_executor()
