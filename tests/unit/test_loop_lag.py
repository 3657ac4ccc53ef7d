"""The event loop's lag: the monitor sees a blocked loop, and the metric exports it."""

from __future__ import annotations

import asyncio
import time

from gatehook.metrics import Metrics
from gatehook.process.loop import watch_lag


async def test_a_blocked_loop_shows_as_lag() -> None:
    seen: list[float] = []
    task = asyncio.create_task(watch_lag(seen.append, interval=0.005))
    try:
        await asyncio.sleep(0.02)  # a few quiet turns first
        quiet = len(seen)
        time.sleep(0.06)  # noqa: ASYNC251 - blocks the loop on purpose: the timer fires late
        await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert quiet >= 1
    # a lower bound only: the block itself, less the interval; never more than it lasted
    # would be a timing assertion, which a loaded machine could break
    assert max(seen) >= 0.06 - 0.005 - 0.001
    assert all(lag >= 0 for lag in seen)


def test_the_metric_counts_observations_in_buckets() -> None:
    metrics = Metrics()
    metrics.loop_lag(0.0002)
    metrics.loop_lag(0.03)
    text = metrics.render().decode()
    assert 'gatehook_event_loop_lag_seconds_bucket{le="0.0005"} 1.0' in text
    assert 'gatehook_event_loop_lag_seconds_bucket{le="0.05"} 2.0' in text
    assert "gatehook_event_loop_lag_seconds_count 2.0" in text
