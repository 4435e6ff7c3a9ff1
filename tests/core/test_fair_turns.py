"""TenantTurns: turns granted to the tenant with the least recent use, a free fast path, batch
slots, and cancellation that never loses or leaks a turn (pure asyncio, no servers; a clock of
the tests' own, so use is counted in steps, not in how fast this machine runs them)."""

from __future__ import annotations

import asyncio

import pytest

from core.infra.fair_turns import HALF_LIFE, PRESENCE, TenantTurns


async def _settle() -> None:
    """Let every ready task run until none is left to wake (a few loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


class _Clock:
    """A clock that moves only when a step of work says so (1 ms a step)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _turns(capacity: int = 1) -> TenantTurns:
    return TenantTurns(capacity, clock=_Clock())


async def _worker(turns: TenantTurns, tenant: str, slices: int, log: list[str], every: int = 1) -> None:
    async with turns.slices(tenant, every) as turn:
        for _ in range(slices * every):  # as delivery does: a tick, then the step
            await turn.tick()
            log.append(tenant)
            if isinstance(turns.clock, _Clock):
                turns.clock.now += 0.001


async def test_the_turn_is_taken_at_once_when_free_and_nobody_waits() -> None:
    turns = _turns()
    entered = asyncio.get_running_loop().create_future()

    async def take() -> None:
        async with turns.turn("a"):
            entered.set_result(None)

    take_coro = take()
    # One step of the coroutine gets through acquire and the body: no await suspended it.
    with pytest.raises(StopIteration):
        take_coro.send(None)
    assert entered.done()
    assert turns.waiting == 0
    async with turns.turn("b"):  # and the turn was given back
        pass


async def test_two_busy_tenants_alternate_whatever_their_number_of_coroutines() -> None:
    turns, log = _turns(), list[str]()
    workers = [asyncio.create_task(_worker(turns, "a", 6, log)) for _ in range(8)]
    await asyncio.sleep(0)  # A's eight coroutines are busy before B arrives
    b = asyncio.create_task(_worker(turns, "b", 6, log))
    await b
    first_b, last_b = log.index("b"), len(log) - 1 - log[::-1].index("b")
    window = "".join(log[first_b : last_b + 1])
    # From B's first slice to its last, A never had two in a row: B caught up with the slices A
    # had before it came, then they alternated.
    assert window.count("b") == 6 and "aa" not in window, window
    assert first_b < 8, log  # before each of A's coroutines had had a slice
    await asyncio.gather(*workers)
    assert log.count("a") == 48
    assert turns.waiting == 0


async def test_three_tenants_get_equal_shares_whatever_their_number_of_coroutines() -> None:
    turns, log = _turns(), list[str]()
    tasks = [asyncio.create_task(_worker(turns, t, 4, log)) for t in ("a", "a", "a", "b", "c", "c")]
    await asyncio.gather(*tasks)
    # A's three coroutines, B's one and C's two: in the first twelve slices, four each.
    first = log[:12]
    assert [first.count(t) for t in "abc"] == [4, 4, 4], log
    # Once even, they take turns in a ring: no tenant twice before the other two.
    assert "".join(first[-6:]) in ("abcabc", "acbacb", "bacbac", "bcabca", "cabcab", "cbacba"), log


async def test_a_slice_is_many_steps_and_the_turn_passes_on_between_slices() -> None:
    turns, log = _turns(), list[str]()
    await turns.acquire("x")  # both wait for the turn before either begins
    a = asyncio.create_task(_worker(turns, "a", 3, log, every=4))
    b = asyncio.create_task(_worker(turns, "b", 3, log, every=4))
    await _settle()
    turns.release("x")
    await asyncio.gather(a, b)
    assert "".join(log) == "aaaabbbb" * 3


async def test_within_a_tenant_the_slice_holder_goes_on_before_its_other_coroutines() -> None:
    turns, log = _turns(), list[str]()

    async def batch(name: str) -> None:
        async with turns.slices("a", 1) as turn:
            for _ in range(3):
                log.append(name)
                await turn.tick()

    await turns.acquire("x")  # all three wait for the turn before any begins
    tasks = [asyncio.create_task(batch(n)) for n in ("1", "2", "3")]
    await _settle()
    turns.release("x")
    await asyncio.gather(*tasks)
    # One batch of a tenant finishes (and can send) while the next one renders, instead of all
    # three finishing late together.
    assert "".join(log) == "111222333"


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    turns = _turns()
    await turns.acquire("a")
    waiter = asyncio.create_task(turns.acquire("b"))
    await _settle()
    assert turns.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert turns.waiting == 0
    turns.release("a")
    # Nobody holds it now: the next comer takes it without waiting.
    await asyncio.wait_for(turns.acquire("c"), timeout=5)
    turns.release("c")


async def test_a_turn_granted_to_a_cancelled_waiter_passes_on() -> None:
    turns, got = _turns(), list[str]()
    await turns.acquire("a")

    async def wait_for_turn(tenant: str) -> None:
        await turns.acquire(tenant)
        got.append(tenant)

    b = asyncio.create_task(wait_for_turn("b"))
    c = asyncio.create_task(wait_for_turn("c"))
    await _settle()
    turns.release("a")  # granted to b, which has not run yet
    b.cancel()  # ... and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await b
    await asyncio.wait_for(c, timeout=5)
    assert got == ["c"]
    assert turns.waiting == 0
    turns.release("c")
    await asyncio.wait_for(turns.acquire("d"), timeout=5)  # free again, not leaked
    turns.release("d")


async def test_a_slice_cancelled_between_steps_or_failing_gives_the_turn_back() -> None:
    turns, log = _turns(), list[str]()
    blocker = asyncio.create_task(_worker(turns, "a", 1000, log))
    victim = asyncio.create_task(_worker(turns, "b", 1000, log))
    await _settle()
    victim.cancel()  # waiting for its next turn inside tick()
    with pytest.raises(asyncio.CancelledError):
        await victim
    blocker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocker
    assert turns.waiting == 0

    with pytest.raises(RuntimeError):
        async with turns.slices("a", 10) as turn:
            await turn.tick()
            raise RuntimeError("a bug in the slice")
    await asyncio.wait_for(turns.acquire("b"), timeout=5)  # the failed slice let go
    turns.release("b")


async def test_slots_hold_capacity_turns_at_once_and_grant_the_next_to_another_tenant() -> None:
    """Batch slots (capacity 2): a big tenant fills both; a neighbour's batch gets the first one
    freed, ahead of the big tenant's backlog, and at no time are more than two held."""
    slots = _turns(capacity=2)
    held, peak, order = 0, 0, list[str]()
    gates: dict[str, asyncio.Event] = {}

    async def batch(name: str, tenant: str) -> None:
        nonlocal held, peak
        async with slots.turn(tenant):
            held += 1
            peak = max(peak, held)
            order.append(name)
            gates[name] = asyncio.Event()
            await gates[name].wait()  # a batch holds its slot across its I/O
            held -= 1

    a_batches = [asyncio.create_task(batch(f"a{i}", "a")) for i in range(6)]
    await _settle()
    assert order == ["a0", "a1"] and slots.waiting == 4
    b = asyncio.create_task(batch("b0", "b"))
    await _settle()
    gates["a0"].set()
    await _settle()
    assert order == ["a0", "a1", "b0"], order  # B went before A's four waiting batches
    for name in ["a1", "b0", "a2", "a3", "a4", "a5"]:
        await _settle()
        gates[name].set()
    await asyncio.gather(*a_batches, b)
    assert peak == 2 and order[3:] == ["a2", "a3", "a4", "a5"]
    assert slots.waiting == 0
    async with slots.turn("c"), slots.turn("c"):  # both slots free again, at once
        assert slots.waiting == 0


def test_slots_need_a_capacity_of_at_least_one() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TenantTurns(capacity=0)


async def test_a_newcomer_goes_first_until_it_has_used_as_much_as_the_busy_tenant() -> None:
    turns, log = _turns(), list[str]()
    big = [asyncio.create_task(_worker(turns, "a", 10, log)) for _ in range(4)]
    while len(log) < 8:  # A has had eight slices when B's small run starts
        await asyncio.sleep(0)
    arrived = len(log)
    await asyncio.create_task(_worker(turns, "b", 6, log))
    # Round-robin would have given A every other slice; B's six come in a row, since until the
    # last of them B has used less than A has.
    first_b = log.index("b")
    assert log[first_b : first_b + 6] == ["b"] * 6, log
    assert first_b - arrived <= 2, log  # and at once (the slice under way finishes first)
    await asyncio.gather(*big)
    assert log.count("a") == 40 and turns.waiting == 0


async def test_recent_use_halves_every_half_life() -> None:
    clock = _Clock()
    turns = TenantTurns(clock=clock)
    async with turns.turn("a"):
        clock.now += 2.0
    assert turns.recent_use("a") == pytest.approx(2.0)
    clock.now += HALF_LIFE
    assert turns.recent_use("a") == pytest.approx(1.0)
    clock.now += 20 * HALF_LIFE
    async with turns.turn("b"):  # a charge a half-life on forgets the tenants decayed away
        pass
    assert turns.recent_use("a") < 1e-5 and turns.recent_use("nobody") == 0.0


async def test_two_tenants_with_backlogs_hold_one_slot_each_and_one_alone_holds_both() -> None:
    """Capacity 2: while both have batches waiting, each holds one, whatever their recent use
    (the newcomer does not take the big tenant's whole share); once one runs out, the other
    takes both slots again."""
    slots = _turns(capacity=2)
    order: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    holding: dict[str, set[str]] = {"a": set(), "b": set()}

    async def batch(name: str) -> None:
        tenant = name[0]
        async with slots.turn(tenant):
            order.append(name)
            holding[tenant].add(name)
            gates[name] = asyncio.Event()
            await gates[name].wait()
            holding[tenant].discard(name)

    a = [asyncio.create_task(batch(f"a{i}")) for i in range(6)]
    await _settle()
    b = [asyncio.create_task(batch(f"b{i}")) for i in range(3)]
    await _settle()
    assert holding == {"a": {"a0", "a1"}, "b": set()}  # alone, A held both
    held: list[tuple[int, int]] = []
    for name in ["a0", "a1", "b0", "a2", "b1", "b2", "a3", "a4"]:
        gates[name].set()
        await _settle()
        held.append((len(holding["a"]), len(holding["b"])))
    await _settle()
    gates["a5"].set()
    await asyncio.gather(*a, *b)
    assert order == ["a0", "a1", "b0", "a2", "b1", "a3", "b2", "a4", "a5"], order
    # One each while both had a backlog; both to A once B's was done.
    assert held[:5] == [(1, 1)] * 5 and held[5] == (2, 0), held
    assert slots.waiting == 0


async def test_slots_kept_free_for_a_lighter_tenant_all_go_back_to_work_after_it() -> None:
    """Capacity 2: a heavy tenant's batch that ends while a light tenant's holds a slot leaves
    its slot free (the heavy tenant gives way); when the light batch ends, both slots go back to
    the heavy tenant's backlog, not one (which would halve its rate for good)."""
    clock = _Clock()
    slots = TenantTurns(2, clock=clock)
    gates: dict[str, asyncio.Event] = {}
    holding: set[str] = set()

    async def batch(name: str) -> None:
        async with slots.turn(name[0]):
            holding.add(name)
            gates[name] = asyncio.Event()
            await gates[name].wait()
            clock.now += 1.0  # a second of work: A's use grows, B's stays small
            holding.discard(name)

    a = [asyncio.create_task(batch(f"a{i}")) for i in range(6)]
    await _settle()
    gates["a0"].set()  # A has used a second; a2 takes the slot
    await _settle()
    b = asyncio.create_task(batch("b0"))
    await _settle()
    gates["a1"].set()  # freed: B, the lighter, takes it
    await _settle()
    assert holding == {"a2", "b0"}, holding
    gates["a2"].set()  # freed while B holds one: A gives way, the slot stays free
    await _settle()
    assert holding == {"b0"}, holding
    clock.now -= 1.0  # b0's work is short
    gates["b0"].set()
    await _settle()
    assert holding == {"a3", "a4"}, holding  # both slots back to A
    for name in ["a3", "a4", "a5"]:
        gates[name].set()
        await _settle()
    await asyncio.gather(*a, b)
    assert slots.waiting == 0


async def test_a_slot_offered_between_chunks_goes_to_a_lighter_waiter_then_comes_back() -> None:
    """A heavy tenant's batch offers its slot between chunks: a lighter tenant's batch waiting
    for one takes it at once, and the heavy batch goes on after it; with only its own tenant's
    batches waiting, the offering batch keeps its slot (its chunks stay in order)."""
    clock = _Clock()
    slots = TenantTurns(1, clock=clock)
    log: list[str] = []

    async def big(name: str, chunks: int) -> None:
        async with slots.slices("a", 1) as slot:
            for i in range(chunks):
                await slot.offer()
                log.append(f"{name}{i}")
                clock.now += 0.5
                await asyncio.sleep(0)

    arrived: list[int] = []

    async def small() -> None:
        arrived.append(len(log))
        async with slots.turn("b"):
            log.append("b")

    first = asyncio.create_task(big("x", 4))
    second = asyncio.create_task(big("y", 2))  # A's own backlog: waits for x to end
    while len(log) < 2:
        await asyncio.sleep(0)
    await asyncio.gather(first, second, asyncio.create_task(small()))
    # B waited for at most the chunk under way when it came, not for the rest of x's batch...
    b_at = log.index("b")
    assert b_at <= arrived[0] + 1 < 4, log
    # ... then x went on, in order, before A's next batch.
    assert [e for e in log if e != "b"] == ["x0", "x1", "x2", "x3", "y0", "y1"], log
    assert slots.waiting == 0


async def test_a_heavy_tenant_gives_way_while_a_lighter_one_is_at_work_then_goes_on() -> None:
    """A tenant noted at work (one of its activities started here: a small run's first step,
    before it wants any slot) keeps heavier tenants waiting for PRESENCE seconds, even for a
    free slot; when that lapses the waiting turn is granted without anyone releasing one. The
    lighter tenant itself, and a tenant noted at work that is not lighter, wait for nobody."""
    clock = _Clock()
    slots = TenantTurns(2, clock=clock)
    async with slots.turn("a"):
        clock.now += 1.0  # A has used a second lately; B nothing
    slots.note("b")
    slots.note("a")  # A at work too: no reason for B to wait
    waiting = asyncio.create_task(slots.acquire("a"))
    await _settle()
    assert not waiting.done() and slots.waiting == 1
    await asyncio.wait_for(slots.acquire("b"), timeout=1)  # B takes a slot at once
    slots.release("b")
    await _settle()
    assert not waiting.done()  # B is still at work
    clock.now += PRESENCE  # B's moment is over...
    await asyncio.wait_for(waiting, timeout=PRESENCE + 5)  # ... and A goes on by itself
    slots.release("a")
    assert slots.waiting == 0
