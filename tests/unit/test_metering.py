"""process.metering: the loop's time a coroutine's steps take, not its wall time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatehook.process import metering
from gatehook.process.metering import Metered


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A perf_counter the test moves: [now]."""
    now = [0.0]
    monkeypatch.setattr(metering.time, "perf_counter", lambda: now[0])
    return now


async def test_only_the_coroutines_own_steps_are_counted(clock: list[float]) -> None:
    async def work() -> str:
        clock[0] += 0.003  # a step's own work
        await asyncio.sleep(0)
        clock[0] += 0.002
        await asyncio.sleep(0)
        return "done"

    async def other() -> None:  # another task's work while ``work`` waits
        for _ in range(3):
            clock[0] += 1.0
            await asyncio.sleep(0)

    metered = Metered(work())
    result, _ = await asyncio.gather(metered, other())
    assert result == "done"
    assert metered.seconds == pytest.approx(0.005)


async def test_a_failure_is_raised_and_its_step_counted(clock: list[float]) -> None:
    async def work() -> None:
        await asyncio.sleep(0)
        clock[0] += 0.004
        raise ValueError("bad input")

    metered = Metered(work())
    with pytest.raises(ValueError, match="bad input"):
        await metered
    assert metered.seconds == pytest.approx(0.004)


async def test_a_cancellation_reaches_the_coroutine() -> None:
    cleaned = asyncio.Event()
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    metered = Metered(work())
    task = asyncio.ensure_future(metered)
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()


async def test_a_caught_cancellation_lets_the_coroutine_answer() -> None:
    started = asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "answered anyway"
        return "slept"

    task = asyncio.ensure_future(Metered(work()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    assert await task == "answered anyway"


def test_closing_the_wrapper_closes_the_coroutine() -> None:
    """A task destroyed while pending closes its coroutine: through ``Metered`` as through
    a plain await, the wrapped coroutine's cleanup runs and nothing is left running."""
    cleaned: list[str] = []

    class Pending:
        def __await__(self) -> Any:
            yield self  # a future the loop never resolves

    async def work() -> None:
        try:
            await Pending()
        finally:
            cleaned.append("done")

    async def outer() -> None:
        await Metered(work())

    coro = outer()
    assert isinstance(coro.send(None), Pending)  # suspended inside the wrapped coroutine
    coro.close()
    assert cleaned == ["done"]
