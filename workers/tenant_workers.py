"""One Temporal Worker per tenant task queue, added and dropped while the process runs."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling, Worker

from core.config_store import TENANTS_CHANNEL, active_tenants, get_config
from core.tenant_config import task_queue_for
from workflows.campaign_run import CampaignRunWorkflow

log = logging.getLogger("pennant.workers")


@dataclass(frozen=True)
class TenantSelection:
    """Which tenants this process serves: all, a named list, or a hash shard i/n."""

    names: frozenset[str] | None = None
    shard: tuple[int, int] | None = None

    def includes(self, tenant: str) -> bool:
        if self.names is not None and tenant not in self.names:
            return False
        if self.shard is not None:
            index, count = self.shard
            return zlib.crc32(tenant.encode()) % count == index
        return True


class TenantWorkers:
    """Keeps one running Worker per selected tenant, following the tenants table."""

    def __init__(
        self,
        client: Client,
        pool: asyncpg.Pool,
        activities: Sequence[Callable],
        selection: TenantSelection = TenantSelection(),
        poll_seconds: float = 5.0,
    ):
        self.client = client
        self.pool = pool
        self.activities = list(activities)
        self.selection = selection
        self.poll_seconds = poll_seconds
        self._running: dict[str, tuple[Worker, asyncio.Task[None]]] = {}
        self._changed = asyncio.Event()

    @property
    def tenants(self) -> list[str]:
        return sorted(self._running)

    async def _build(self, tenant: str) -> Worker:
        found = await get_config(self.pool, tenant)
        execution = found[1].execution if found else None
        return Worker(
            self.client,
            task_queue=task_queue_for(tenant),
            workflows=[CampaignRunWorkflow],
            activities=self.activities,
            max_concurrent_activities=execution.max_concurrent_activities if execution else 20,
            max_task_queue_activities_per_second=execution.activities_per_second if execution else None,
            workflow_task_poller_behavior=PollerBehaviorAutoscaling(minimum=1, maximum=10, initial=1),
            activity_task_poller_behavior=PollerBehaviorAutoscaling(minimum=1, maximum=20, initial=1),
        )

    async def sync(self) -> None:
        """Start workers for new tenants and stop those for removed ones."""
        wanted = {t for t in await active_tenants(self.pool) if self.selection.includes(t)}
        for tenant in sorted(wanted - set(self._running)):
            worker = await self._build(tenant)
            self._running[tenant] = (worker, asyncio.create_task(worker.run(), name=f"worker-{tenant}"))
            log.info("serving task queue %s", task_queue_for(tenant))
        for tenant in sorted(set(self._running) - wanted):
            worker, task = self._running.pop(tenant)
            await worker.shutdown()
            await asyncio.gather(task, return_exceptions=True)
            log.info("dropped task queue %s", task_queue_for(tenant))

    def _on_notify(self, *_: object) -> None:
        self._changed.set()

    async def run(self) -> None:
        """Serve until cancelled: react to NOTIFY at once, and re-check on a slow poll anyway."""
        listener = await self.pool.acquire()
        await listener.add_listener(TENANTS_CHANNEL, self._on_notify)
        try:
            while True:
                await self.sync()
                for tenant, (_, task) in list(self._running.items()):
                    if task.done() and task.exception() is not None:
                        log.error("worker for %s stopped: %s; restarting", tenant, task.exception())
                        del self._running[tenant]
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=self.poll_seconds)
                except TimeoutError:
                    pass
        finally:
            await listener.remove_listener(TENANTS_CHANNEL, self._on_notify)
            await self.pool.release(listener)
            await self.shutdown()

    async def shutdown(self) -> None:
        running, self._running = self._running, {}
        await asyncio.gather(*(w.shutdown() for w, _ in running.values()), return_exceptions=True)
        await asyncio.gather(*(t for _, t in running.values()), return_exceptions=True)
