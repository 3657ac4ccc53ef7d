"""The per-tenant limiter: slow start, fall back on slow calls, fair wake-ups, timeouts."""

from __future__ import annotations

import asyncio

from gatehook.service.fairness import TenantLimiter


async def test_fast_calls_grow_the_limit_slow_ones_reset_it() -> None:
    lim = TenantLimiter(floor=1, ceiling=4, slow_s=0.05)
    assert lim.limit("a") == 1
    for _ in range(5):
        assert await lim.acquire("a", 1)
        lim.release("a", 0.001)
    assert lim.limit("a") == 4
    assert await lim.acquire("a", 1)
    lim.release("a", 0.5)  # a slow call
    assert lim.limit("a") == 1
    assert lim.limit("b") == 1  # tenants are independent


async def test_waiters_get_slots_in_order_and_time_out() -> None:
    lim = TenantLimiter(floor=1, ceiling=1, slow_s=0.05)
    assert await lim.acquire("a", 1)
    order: list[int] = []

    async def wait(i: int) -> None:
        if await lim.acquire("a", 5):
            order.append(i)
            lim.release("a", 0.001)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert await lim.acquire("b", 0.01) is not False  # another tenant is not held up
    assert await lim.acquire("a", 0.01) is False  # full: times out
    lim.release("a", 0.001)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_a_waiter_that_gives_up_holds_no_slot() -> None:
    """Timed out or cancelled while waiting (on the shared deadline timer), a call leaves
    the queue; one granted just as it was cancelled hands the slot on."""
    lim = TenantLimiter(floor=1, ceiling=1, slow_s=0.05)
    assert await lim.acquire("a", 1)
    assert await lim.acquire("a", 0.01) is False
    cancelled = asyncio.create_task(lim.acquire("a", 5))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert lim.room("a") == 0
    lim.release("a", 0.001)  # nobody waits any more: the slot is free
    assert lim.room("a") == 1
    assert await lim.acquire("a", 0.01)
    # granted and cancelled in the same turn: the slot goes to the next waiter
    raced = asyncio.create_task(lim.acquire("a", 5))
    nxt = asyncio.create_task(lim.acquire("a", 5))
    await asyncio.sleep(0)
    lim.release("a", 0.5)  # a slow call: the limit stays 1
    raced.cancel()
    await asyncio.gather(raced, return_exceptions=True)
    assert await asyncio.wait_for(nxt, 1) is True
