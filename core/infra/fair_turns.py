"""Fair shares of a process: its tenants take turns at a scarce thing, the event loop (one turn
at a time: a slice of CPU-bound work) or the process's batch slots (a few turns at once).

Without turns, a tenant with eight batches in flight gets eight slices for each slice of a
tenant with one, so a neighbour's small run waits on a big one. `TenantTurns` grants a freed
turn to a waiting tenant that holds less than its share (the capacity split evenly between
the tenants that hold or wait for turns, at least one each) and, among those, to the one that
has held turns least lately: time held, decayed with a half-life of `HALF_LIFE` seconds, as a
scheduler's virtual runtime. A tenant alone uses the whole capacity; two busy tenants split it
and alternate. And while a tenant holds a turn, tenants that have used more than twice as
much lately wait, even for a free turn: a small run that starts while a big one sends has the
process nearly to itself for its moment, and the big run, whose use decays while it waits,
gets its share back over the next seconds.

A CPU turn (capacity 1) must never be held across I/O: hold it only around synchronous work, or
the whole process waits on that I/O. Slots (capacity k) are held across a whole batch, I/O and
all: they bound how much a process does at once, and choose who goes next when it is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType

# Seconds for a tenant's recent use to count half: long against a slice (ms) or a batch (a
# second or so), short enough that a tenant's big run an hour ago does not hold back its next.
HALF_LIFE = 10.0
# Recent use below this (seconds) is forgotten, so idle tenants cost no memory.
_FORGOTTEN = 1e-3
# A tenant waits while one that has used less than this fraction of its recent use holds a turn.
LIGHTER = 0.5
# Seconds a tenant counts as at work in the process after one of its activities started or
# ended there (`note`): long enough to bridge a small run's steps (its first step, its batch,
# its last status write: tens of ms apart, up to a few hundred under load), short enough that
# a stream of small runs does not keep a big one waiting much longer than they work.
PRESENCE = 0.6


class TenantTurns:
    """`capacity` turns held at once per process (one by default: a slice of CPU-bound work);
    a freed turn goes to a waiting tenant under its share, the one with the least recent use,
    in order within a tenant. Free when nobody waits."""

    def __init__(self, capacity: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._free = capacity
        self.clock = clock
        # Tenants with waiting turns; among equal use the first goes first (a dict keeps
        # insertion order, and a tenant that has just had a turn moves to the back).
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        # Tenant -> (seconds held, decayed, as of the clock's reading).
        self._use: dict[str, tuple[float, float]] = {}
        # Tenant -> turns it holds now (only tenants holding some).
        self._holding: dict[str, int] = {}
        self._pruned_at = clock()  # when decayed tenants were last forgotten
        # Tenant -> until when it counts as at work here (`note`), though holding no turn.
        self._present: dict[str, float] = {}
        self._wake: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """How many turns are waited for."""
        return sum(len(q) for q in self._waiting.values())

    def recent_use(self, tenant: str) -> float:
        """Seconds of turns `tenant` has held, each counting half after HALF_LIFE seconds."""
        used, at = self._use.get(tenant, (0.0, 0.0))
        return used * 0.5 ** ((self.clock() - at) / HALF_LIFE) if used else 0.0

    @contextlib.asynccontextmanager
    async def turn(self, tenant: str) -> AsyncIterator[None]:
        """Hold one of the process's turns for one piece of `tenant`'s work."""
        await self.acquire(tenant)
        started = self.clock()
        try:
            yield
        finally:
            self.release(tenant, self.clock() - started)

    def slices(self, tenant: str, every: int) -> TurnSlices:
        """A turn for `tenant` that `TurnSlices.tick` passes on every `every` ticks."""
        return TurnSlices(self, tenant, every)

    async def acquire(self, tenant: str) -> None:
        """Wait for a turn (at once when one is free and nobody waits); pair with `release`."""
        if self._free and not self._waiting and not self._gives_way(tenant):
            self._free -= 1
            self._hold(tenant, 1)
            return
        granted = self._enqueue(tenant)
        # A turn can be free while tenants wait (they give way to a lighter one holding a
        # turn): a newcomer may be the one it is free for.
        self._grant_free()
        await self._wait(tenant, granted)

    async def pass_turn(self, tenant: str, held: float = 0.0) -> None:
        """End the slice `tenant` held for `held` seconds and wait for its next turn, which comes
        at once when no tenant that waits has used less; with nobody waiting, keep the turn and
        only let the event loop's I/O run."""
        if not self._waiting:
            self._charge(tenant, held)
            await self._yield_holding(tenant)
            return
        # Queued first within the tenant before the turn is handed on: a tenant's work goes on in
        # order (one batch finishes rendering and sends while the next renders) instead of all
        # its batches finishing late together.
        granted = asyncio.get_running_loop().create_future()
        queue = self._waiting.pop(tenant, deque())
        queue.appendleft(granted)
        self._waiting[tenant] = queue
        self.release(tenant, held)
        if granted.done():  # the turn came straight back: every other tenant has used more
            await self._yield_holding(tenant)
            return
        await self._wait(tenant, granted)

    def release(self, tenant: str, held: float = 0.0) -> None:
        """End a turn `tenant` held for `held` seconds: it goes to a waiting tenant under its
        share with the least recent use (`tenant` last among equals, since it has just had one),
        or, when every tenant that waits holds its share already, to the least used of them."""
        self._hold(tenant, -1)
        self._charge(tenant, held)
        if tenant in self._waiting:
            self._waiting[tenant] = self._waiting.pop(tenant)  # to the back among equals
        self._free += 1
        self._grant_free()

    def _grant_free(self) -> None:
        """Give the free turns to waiters, best first, until none is free or every waiter gives
        way. Every free turn, not only the one just released: turns kept free while a lighter
        tenant held one all go back to work when it is done."""
        while self._free and self._waiting:
            share = max(1, self.capacity // len(self._waiting.keys() | self._holding.keys()))
            under = [t for t in self._waiting if self._holding.get(t, 0) < share]
            nearest = min(under or self._waiting, key=self.recent_use)  # the first of equals
            if self._gives_way(nearest):
                return  # the turn stays free until the lighter tenant's ends
            queue = self._waiting.pop(nearest)
            granted = queue.popleft()
            if queue:
                self._waiting[nearest] = queue
            if not granted.done():
                granted.set_result(None)
                self._hold(nearest, 1)
                self._free -= 1  # it belongs to that waiter now

    def note(self, tenant: str) -> None:
        """`tenant` is at work in the process (one of its activities starts or ends here): for
        PRESENCE seconds, heavier tenants give way to it as to a lighter tenant holding a turn."""
        self._present[tenant] = self.clock() + PRESENCE
        if self._wake is None:
            self._wake = asyncio.get_running_loop().call_later(PRESENCE, self._presence_lapsed)

    def _presence_lapsed(self) -> None:
        """The earliest presence is over: the turns kept free for it go back to work; wake again
        when the next one ends."""
        now = self.clock()
        for name in [t for t, until in self._present.items() if until <= now]:
            del self._present[name]
        self._grant_free()
        self._wake = None
        if self._present:
            delay = max(0.0, min(self._present.values()) - now)
            self._wake = asyncio.get_running_loop().call_later(delay, self._presence_lapsed)

    def _gives_way(self, tenant: str) -> bool:
        """Whether `tenant` waits for a lighter tenant's turn to end: one holding a turn, or at
        work here lately (`note`), with less than LIGHTER of its recent use."""
        now = self.clock()
        others = {t for t in self._holding if t != tenant}
        others.update(t for t, until in self._present.items() if until > now and t != tenant)
        if not others:
            return False
        bar = LIGHTER * self.recent_use(tenant)
        return any(self.recent_use(other) < bar for other in others)

    def _hold(self, tenant: str, change: int) -> None:
        count = self._holding.get(tenant, 0) + change
        if count > 0:
            self._holding[tenant] = count
        else:
            self._holding.pop(tenant, None)

    def _charge(self, tenant: str, held: float) -> None:
        used, now = self.recent_use(tenant) + held, self.clock()
        if used < _FORGOTTEN:
            self._use.pop(tenant, None)
        else:
            self._use[tenant] = (used, now)
        if now - self._pruned_at >= HALF_LIFE:
            # Once a half-life, not at every charge (one per slice): forget the tenants whose
            # use has decayed away.
            self._pruned_at = now
            for name in [t for t in self._use if self.recent_use(t) < _FORGOTTEN]:
                del self._use[name]

    async def _yield_holding(self, tenant: str) -> None:
        # One pass of the event loop (its I/O, its other callbacks) with the turn still held.
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.release(tenant)
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
                self.release(tenant)  # granted as it was cancelled: the turn passes on
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
        self._since = 0.0

    async def __aenter__(self) -> TurnSlices:
        await self.turns.acquire(self.tenant)
        self._holding, self._since = True, self.turns.clock()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holding:
            self._holding = False
            self.turns.release(self.tenant, self.turns.clock() - self._since)

    async def tick(self) -> None:
        """Call before each step: after `every` steps in this turn, end the slice and wait for
        the next turn."""
        self._steps += 1
        if self._steps <= self.every:
            return
        await self.offer()
        self._steps = 1

    async def offer(self) -> None:
        """End the slice now, whatever the steps so far, and wait for the next turn: at once
        unless a waiting tenant goes first (a batch slot offered between chunks of a send)."""
        self._steps = 0
        try:
            # Even with nobody waiting for a turn, the loop's I/O (heartbeats, API requests, other
            # tenants' workflow tasks) gets to run between slices.
            await self.turns.pass_turn(self.tenant, self.turns.clock() - self._since)
        except BaseException:
            self._holding = False  # a cancel while waiting: the turn is not held
            raise
        self._since = self.turns.clock()


class ProcessShares:
    """What a worker process's tenants share: the CPU turns (rendering) and the batch slots.
    Every activity that starts or ends in the process is `note`d on both."""

    def __init__(self, batch_slots: int) -> None:
        self.cpu = TenantTurns()
        self.slots = TenantTurns(batch_slots)

    def note(self, tenant: str) -> None:
        """`tenant` is at work here: heavier tenants give way to it for a moment (PRESENCE)."""
        self.cpu.note(tenant)
        self.slots.note(tenant)
