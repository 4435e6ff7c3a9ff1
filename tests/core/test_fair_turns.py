"""TenantTurns: slices granted round-robin by tenant, a free fast path, and cancellation that
never loses or leaks the turn (pure asyncio, no servers)."""

from __future__ import annotations

import asyncio

import pytest

from core.fair_turns import TenantTurns


async def _settle() -> None:
    """Let every ready task run until none is left to wake (a few loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _worker(turns: TenantTurns, tenant: str, slices: int, log: list[str], every: int = 1) -> None:
    async with turns.slices(tenant, every) as turn:
        for _ in range(slices * every):  # as delivery does: a tick, then the step
            await turn.tick()
            log.append(tenant)


async def test_the_turn_is_taken_at_once_when_free_and_nobody_waits() -> None:
    turns = TenantTurns()
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


async def test_two_tenants_share_slices_evenly_whatever_their_number_of_coroutines() -> None:
    turns, log = TenantTurns(), list[str]()
    workers = [asyncio.create_task(_worker(turns, "a", 6, log)) for _ in range(8)]
    await asyncio.sleep(0)  # A's eight coroutines are busy before B arrives
    b = asyncio.create_task(_worker(turns, "b", 6, log))
    await b
    first_b, last_b = log.index("b"), len(log) - 1 - log[::-1].index("b")
    window = log[first_b : last_b + 1]
    # From B's first slice to its last, B had every other slice: five of A's in between.
    assert window.count("b") == 6 and window.count("a") == 5, window
    assert first_b < 8, log  # before each of A's coroutines had had a slice
    await asyncio.gather(*workers)
    assert log.count("a") == 48
    assert turns.waiting == 0


async def test_three_tenants_take_turns_in_a_ring() -> None:
    turns, log = TenantTurns(), list[str]()
    tasks = [asyncio.create_task(_worker(turns, t, 4, log)) for t in ("a", "a", "a", "b", "c", "c")]
    await asyncio.gather(*tasks)
    # While all three wait (from the second slice: the first one began before the others came),
    # no tenant gets a second slice before the other two have had one.
    middle = log[1:10]
    for i in range(len(middle) - 2):
        assert len(set(middle[i : i + 3])) == 3, log


async def test_a_slice_is_many_steps_and_the_turn_passes_on_between_slices() -> None:
    turns, log = TenantTurns(), list[str]()
    await turns.acquire("x")  # both wait for the turn before either begins
    a = asyncio.create_task(_worker(turns, "a", 3, log, every=4))
    b = asyncio.create_task(_worker(turns, "b", 3, log, every=4))
    await _settle()
    turns.release()
    await asyncio.gather(a, b)
    assert "".join(log) == "aaaabbbb" * 3


async def test_within_a_tenant_the_slice_holder_goes_on_before_its_other_coroutines() -> None:
    turns, log = TenantTurns(), list[str]()

    async def batch(name: str) -> None:
        async with turns.slices("a", 1) as turn:
            for _ in range(3):
                log.append(name)
                await turn.tick()

    await turns.acquire("x")  # all three wait for the turn before any begins
    tasks = [asyncio.create_task(batch(n)) for n in ("1", "2", "3")]
    await _settle()
    turns.release()
    await asyncio.gather(*tasks)
    # One batch of a tenant finishes (and can send) while the next one renders, instead of all
    # three finishing late together.
    assert "".join(log) == "111222333"


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    turns = TenantTurns()
    await turns.acquire("a")
    waiter = asyncio.create_task(turns.acquire("b"))
    await _settle()
    assert turns.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert turns.waiting == 0
    turns.release()
    # Nobody holds it now: the next comer takes it without waiting.
    await asyncio.wait_for(turns.acquire("c"), timeout=5)
    turns.release()


async def test_a_turn_granted_to_a_cancelled_waiter_passes_on() -> None:
    turns, got = TenantTurns(), list[str]()
    await turns.acquire("a")

    async def wait_for_turn(tenant: str) -> None:
        await turns.acquire(tenant)
        got.append(tenant)

    b = asyncio.create_task(wait_for_turn("b"))
    c = asyncio.create_task(wait_for_turn("c"))
    await _settle()
    turns.release()  # granted to b, which has not run yet
    b.cancel()  # ... and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await b
    await asyncio.wait_for(c, timeout=5)
    assert got == ["c"]
    assert turns.waiting == 0
    turns.release()
    await asyncio.wait_for(turns.acquire("d"), timeout=5)  # free again, not leaked
    turns.release()


async def test_a_slice_cancelled_between_steps_or_failing_gives_the_turn_back() -> None:
    turns, log = TenantTurns(), list[str]()
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
    turns.release()
