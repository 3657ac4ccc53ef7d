"""process.lifecycle: closes run last-started first, each whatever the others did."""

from __future__ import annotations

import asyncio

import pytest

from gatehook.process.lifecycle import Lifecycle


async def test_closes_run_in_reverse_and_the_first_failure_is_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    life = Lifecycle()
    closed: list[str] = []

    def sync_close() -> None:
        closed.append("storage")

    async def failing(name: str, exc: Exception) -> None:
        closed.append(name)
        raise exc

    life.on_close("storage", sync_close)
    life.on_close("journal", lambda: failing("journal", RuntimeError("second")))
    life.on_close("activity", lambda: failing("activity", ValueError("first")))
    with pytest.raises(ValueError, match="first"):
        await life.aclose()
    assert closed == ["activity", "journal", "storage"]
    assert "closing the activity failed; closing the rest" in caplog.text
    assert "closing the journal failed; closing the rest" in caplog.text
    await life.aclose()  # closed once: nothing runs again
    assert closed == ["activity", "journal", "storage"]


async def test_a_task_runs_until_the_close_cancels_it() -> None:
    life = Lifecycle()
    running = asyncio.Event()

    async def tick() -> None:
        running.set()
        await asyncio.Event().wait()

    task = life.task("ticker", tick())
    await running.wait()
    await life.aclose()
    assert task.cancelled()
