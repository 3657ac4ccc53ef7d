"""One worker process: the event loop it runs on, and the garbage collector's settings.

uvloop is used when it is installed (a dependency on Linux and macOS): the benchmark in
BENCHMARKS.md measured it against asyncio's default loop on the decision path.

The collector: a worker builds hundreds of thousands of long-lived objects at start
(pydantic schemas, FastStream, the template registry) and then allocates many short-lived
containers per request. With CPython's default thresholds the oldest generation is scanned
again and again as caches fill, one full pass over every live object each time, which
stalled the event loop for tens of milliseconds under load (measured; see BENCHMARKS.md).
``gc.freeze()`` after start moves everything built so far out of the collector's view, and
higher thresholds make young collections rarer; cycles are still collected. Not too rare:
requests that wait long on a slow target or script stay alive across many collections, and
at 50,000 allocations between young collections 128 such requests in flight brought pauses
of up to 90 ms (p99.9 of another tenant's sign-ins; benchmarks/crowding.py); at 5,000 they
stay near 10 ms, at ~2 % more CPU per decision (benchmarks/run.py, within its noise).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["LAG_INTERVAL_S", "freeze_startup_heap", "run_worker", "tune_gc", "watch_lag"]

log = logging.getLogger("gatehook")

GEN0_THRESHOLD = 5_000
LAG_INTERVAL_S = 0.05


def tune_gc() -> None:
    """Rarer young collections: a request's garbage is mostly freed by reference counting."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, max(gen1, 20), max(gen2, 100))


def freeze_startup_heap() -> None:
    """Collect once, then keep everything alive so far out of every later collection."""
    gc.collect()
    gc.freeze()


def run_worker(
    main: Coroutine[Any, Any, None], *, use_uvloop: bool = True, gc_tuning: bool = True
) -> None:
    """Run ``main`` to completion on uvloop (when installed and wanted), else asyncio's loop."""
    if gc_tuning:
        tune_gc()
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # not on this platform: the standard loop serves the same
            log.info("uvloop is not installed; using asyncio's default event loop")
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


async def watch_lag(observe: Callable[[float], None], interval: float = LAG_INTERVAL_S) -> None:
    """Observe, until cancelled, how late a timer of ``interval`` seconds fires on this loop.

    A late timer means the loop was busy with other work (a long callback, a collection) or
    the process was not running (the machine's other processes, the hypervisor). It samples:
    a stall shows when it covers a timer's due time (a 20 ms stall two times in five at the
    default 50 ms), shortened by at most ``interval``. An idle worker wakes 20 times a
    second for it: 0.46 % of a core on the benchmark machine, where a wake-up from idle
    costs ~230 µs of CPU (BENCHMARKS.md, "The decision path's cost"); under load the loop is awake
    anyway.
    """
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        observe(max(loop.time() - started - interval, 0.0))
