"""Fair turns for CPU-bound work: the tenants of one process share its event loop round-robin.

A slice of synchronous work (rendering a few dozen messages) blocks the event loop while it
runs. Without turns, a tenant with eight batches in flight gets eight slices for each slice of
a tenant with one, so a neighbour's small run waits on a big one. `TenantTurns` grants one slice
at a time and, when slices wait, hands the next one to the next tenant in a ring: with two
tenants busy each gets every other slice, whatever their number of coroutines.

A turn must never be held across I/O: hold it only around synchronous work, or the whole
process waits on that I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType


class TenantTurns:
    """One slice of CPU-bound work at a time per process; waiting slices are granted round-robin
    by tenant (a queue per tenant, a ring of tenants), in order within a tenant. Free when nobody
    waits."""

    def __init__(self) -> None:
        self._held = False
        # The ring: tenants with waiting slices, next first (a dict keeps insertion order).
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    @property
    def waiting(self) -> int:
        """How many slices wait for a turn."""
        return sum(len(q) for q in self._waiting.values())

    @contextlib.asynccontextmanager
    async def turn(self, tenant: str) -> AsyncIterator[None]:
        """Hold the process's turn for one slice of `tenant`'s work."""
        await self.acquire(tenant)
        try:
            yield
        finally:
            self.release()

    def slices(self, tenant: str, every: int) -> TurnSlices:
        """A turn for `tenant` that `TurnSlices.tick` passes on every `every` ticks."""
        return TurnSlices(self, tenant, every)

    async def acquire(self, tenant: str) -> None:
        """Wait for the turn (at once when it is free and nobody waits); pair with `release`."""
        if not self._held and not self._waiting:
            self._held = True
            return
        await self._wait(tenant, self._enqueue(tenant))

    async def pass_turn(self, tenant: str) -> None:
        """End the slice held by `tenant` and wait for its next turn, behind every other tenant
        that waits; with nobody waiting, keep the turn and only let the event loop's I/O run."""
        if not self._waiting:
            await self._yield_holding()
            return
        # Queued before the turn is handed on, and its tenant at the back of the ring (it has just
        # had a slice), so the next tenant picked is another one whenever another one waits. Within
        # the tenant it goes first: a tenant's work goes on in order (one batch finishes rendering
        # and sends while the next renders) instead of all its batches finishing late together.
        granted = asyncio.get_running_loop().create_future()
        queue = self._waiting.pop(tenant, deque())
        queue.appendleft(granted)
        self._waiting[tenant] = queue
        self.release()
        if granted.done():  # the turn came straight back: no other tenant waits
            await self._yield_holding()
            return
        await self._wait(tenant, granted)

    def release(self) -> None:
        """End the current slice: the turn goes to the next tenant in the ring that waits."""
        while self._waiting:
            tenant = next(iter(self._waiting))
            queue = self._waiting.pop(tenant)
            granted = queue.popleft()
            if queue:
                self._waiting[tenant] = queue  # to the back of the ring
            if not granted.done():
                granted.set_result(None)
                return  # still held: it belongs to that waiter now
        self._held = False

    async def _yield_holding(self) -> None:
        # One pass of the event loop (its I/O, its other callbacks) with the turn still held.
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.release()
            raise

    def _enqueue(self, tenant: str) -> asyncio.Future[None]:
        granted = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(granted)
        return granted

    async def _wait(self, tenant: str, granted: asyncio.Future[None]) -> None:
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted as it was cancelled: the turn passes on
            else:
                self._forget(tenant, granted)
            raise

    def _forget(self, tenant: str, granted: asyncio.Future[None]) -> None:
        queue = self._waiting.get(tenant)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(granted)
        if not queue:
            del self._waiting[tenant]


class TurnSlices:
    """A tenant's turn held over a loop of synchronous steps, passed on (and the event loop let
    run) every `every` steps; an async context manager."""

    def __init__(self, turns: TenantTurns, tenant: str, every: int) -> None:
        self.turns, self.tenant, self.every = turns, tenant, every
        self._steps = 0
        self._holding = False

    async def __aenter__(self) -> TurnSlices:
        await self.turns.acquire(self.tenant)
        self._holding = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holding:
            self._holding = False
            self.turns.release()

    async def tick(self) -> None:
        """Call before each step: after `every` steps in this turn, end the slice and wait for
        the next turn."""
        self._steps += 1
        if self._steps <= self.every:
            return
        self._steps = 1
        try:
            # Even with nobody waiting for a turn, the loop's I/O (heartbeats, API requests, other
            # tenants' workflow tasks) gets to run between slices.
            await self.turns.pass_turn(self.tenant)
        except BaseException:
            self._holding = False  # a cancel while waiting: the turn is not held
            raise
