"""One Temporal Worker per tenant task queue, added, rebuilt and dropped while the process runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.worker import (
    Interceptor,
    PollerBehaviorAutoscaling,
    StartActivityInput,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from activities.names import DELIVER_BATCH
from core.config_store import TENANTS_CHANNEL, active_tenants
from core.db import DATABASE_UNAVAILABLE
from core.temporal import task_queue_for
from core.tenant_config import Execution
from workers.metrics import ActivityObserver
from workflows.campaign_run import CampaignRunWorkflow
from workflows.scheduled_run import ScheduledCampaignWorkflow
from workflows.testsend import CampaignTestSendWorkflow

HEARTBEAT_THROTTLE = timedelta(seconds=1)
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


def _open(conn: Any) -> bool:
    """Whether a pooled connection is still usable (the pool detaches one whose session died)."""
    if conn is None:
        return False
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


class BatchesThroughQueue(Interceptor):
    """A run's batches go through the tenant's task queue, not eagerly to the workflow's process,
    except the last batch of a wave (the only one of a small run).

    Eager dispatch hands an activity a workflow task schedules straight to the process that ran
    that task: a run's batches then all stay on one process however many poll the queue (30 of
    30 in tests/test_scale_out.py with everything eager). Through the queue every process
    polling it takes a share. But the queue costs time per activity (measured on the loaded
    2-core machine: a 10-recipient run took 718-827 ms at the median with its one batch through
    the queue, 391-450 ms eager), so the bookkeeping activities and a wave's last batch stay
    eager, where one batch has nothing to share.
    """

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        """Wrap every workflow's outbound calls."""
        return _BatchesThroughQueueInbound


class _BatchesThroughQueueInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_BatchesThroughQueueOutbound(outbound))


class _BatchesThroughQueueOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> Any:
        # By attribute, not isinstance: the workflow sandbox has its own copy of the input class.
        last = not input.args or getattr(input.args[0], "end_id", None) is None
        if input.activity == DELIVER_BATCH and not last:
            input = dataclasses.replace(input, disable_eager_execution=True)
        return super().start_activity(input)


def _workflow_task_executor() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=WORKFLOW_TASK_THREADS, thread_name_prefix="workflow-task")


@dataclass
class _Running:
    worker: Worker
    task: asyncio.Task[None]
    execution: Execution


class TenantWorkers:
    """Keeps one running Worker per selected tenant, following the tenants table.

    Changes arrive by LISTEN/NOTIFY (within milliseconds) with a slow poll as a safety net.
    A tenant whose execution limits changed gets its Worker rebuilt with the new limits.

    Every tenant's Worker shares one workflow-task thread pool (the SDK otherwise gives each
    Worker a pool of its own, which keeps a thread per tenant that has ever run a workflow),
    the client and so the process's one Temporal runtime; all activities are async, so
    there is no activity executor to share.
    """

    def __init__(
        self,
        client: Client,
        pool: asyncpg.Pool,
        activities: Sequence[Callable[..., Any]],
        selection: TenantSelection = TenantSelection(),
        poll_seconds: float = 5.0,
    ):
        self.client = client
        self.pool = pool
        self.activities = list(activities)
        self.selection = selection
        self.poll_seconds = poll_seconds
        self._running: dict[str, _Running] = {}
        self._changed = asyncio.Event()
        self._workflow_tasks = _workflow_task_executor()

    @property
    def tenants(self) -> list[str]:
        """The tenants served right now, sorted."""
        return sorted(self._running)

    def _start(self, tenant: str, execution: Execution) -> None:
        # Autoscaling pollers: an idle tenant holds the minimum, one workflow poll (plus the
        # sticky-queue poll of this process) and one activity poll, and nothing more.
        worker = Worker(
            self.client,
            task_queue=task_queue_for(tenant),
            workflows=[CampaignRunWorkflow, ScheduledCampaignWorkflow, CampaignTestSendWorkflow],
            activities=self.activities,
            workflow_task_executor=self._workflow_tasks,
            max_concurrent_activities=execution.max_concurrent_activities,
            max_task_queue_activities_per_second=execution.activities_per_second,
            workflow_task_poller_behavior=PollerBehaviorAutoscaling(minimum=1, maximum=10, initial=1),
            activity_task_poller_behavior=PollerBehaviorAutoscaling(minimum=1, maximum=20, initial=1),
            # A cancel reaches a running activity only in the answer to a heartbeat; sending
            # them at least every second keeps a cancel of a stuck batch to about a second.
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            # Log context, one line and timing per activity; batches through the queue.
            interceptors=[ActivityObserver(), BatchesThroughQueue()],
        )
        self._running[tenant] = _Running(worker, asyncio.create_task(worker.run(), name=f"worker-{tenant}"), execution)

    async def _stop(self, tenant: str) -> None:
        running = self._running.pop(tenant)
        await running.worker.shutdown()
        await asyncio.gather(running.task, return_exceptions=True)

    async def sync(self) -> None:
        """Start workers for new tenants, rebuild changed ones, stop those removed."""
        wanted = {t: e for t, e in (await active_tenants(self.pool)).items() if self.selection.includes(t, e)}
        removed = sorted(set(self._running) - set(wanted))
        # Stopped together: each stop waits for its pollers to end, which adds up one by one.
        await asyncio.gather(*(self._stop(tenant) for tenant in removed))
        for tenant in removed:
            log.info("dropped task queue %s", task_queue_for(tenant))
        for tenant, execution in sorted(wanted.items()):
            running = self._running.get(tenant)
            if running is not None and running.task.done():
                log.error("worker for %s stopped (%s); restarting", tenant, running.task.exception())
                del self._running[tenant]
                running = None
            if running is not None and running.execution != execution:
                await self._stop(tenant)
                running = None
                log.info("rebuilding the worker of %s with new execution limits", tenant)
            if running is None:
                self._start(tenant, execution)
                log.info("serving task queue %s", task_queue_for(tenant))

    def _on_notify(self, *_: object) -> None:
        self._changed.set()

    def refresh(self) -> None:
        """Sync with the tenants table now (as a NOTIFY does), e.g. after the selection changed."""
        self._changed.set()

    async def run(self) -> None:
        """Serve until cancelled; a database outage only delays the next sync."""
        listener: Any = None
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
                        except BaseException:
                            await self.pool.release(conn)
                            raise
                        listener = conn
                    await self.sync()
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
            await self.pool.release(listener)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("could not release the LISTEN connection (%s)", exc)

    async def shutdown(self) -> None:
        """Stop every tenant's Worker, then the threads they shared."""
        for tenant in list(self._running):
            await self._stop(tenant)
        # Not waiting: a Worker that failed to stop may still hold an activation thread. A fresh
        # pool (no threads until used) lets run() be called again.
        self._workflow_tasks.shutdown(wait=False)
        self._workflow_tasks = _workflow_task_executor()
