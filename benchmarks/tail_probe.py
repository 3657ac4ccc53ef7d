"""``gatehook worker`` with timing probes, for ``benchmarks/tail.py`` (not for production).

Wraps, in this process only: the trigger server's arrival and answer of each request (the
worker-side latency), ``SandboxPool.run`` (a sandbox call), ``JsJournal.record`` (the reply
record and audit events until acknowledged); counts garbage collections and measures the
event loop's lag (``watch_lag``, the worker's metric, with a 1 ms timer instead of 50 ms).
Everything is kept in lists of floats and written as JSON to ``$TAIL_PROBE_OUT`` when the
worker exits (SIGTERM drains it first).

Timestamps are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: comparable with the load
generator's). The probes cost a few µs a request; compare their numbers with the client's
from the same run, not with ``run.py``'s.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import sys
import time
from typing import Any

from gatehook.process.loop import watch_lag
from gatehook.sandbox import pool as sandbox_pool
from gatehook.transport import journal as journal_mod
from gatehook.transport import trigger_server

# (start, milliseconds) per kind; GC as (start, ms, generation); flat lists: the probe itself
# must not feed the collector it watches (tuples are tracked, floats are not)
starts: dict[str, list[float]] = {k: [] for k in ("worker", "sandbox", "journal", "lag")}
millis: dict[str, list[float]] = {k: [] for k in starts}
gc_runs: list[float] = []  # start, ms, generation, ... flattened
_arrived: dict[bytes, float] = {}
LAG_S = 0.001  # the lag timer's interval: a stall shows whenever it is over ~1 ms


def _note(kind: str, started: float) -> None:
    starts[kind].append(started)
    millis[kind].append((time.perf_counter() - started) * 1000)


_on_msg = trigger_server.TriggerServer._on_msg
_answer = trigger_server.TriggerServer._answer


def on_msg(self: Any, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
    if reply:
        _arrived[reply] = time.perf_counter()
    _on_msg(self, subject, reply, data, headers)


def answer(self: Any, reply: bytes, body: bytes) -> None:
    started = _arrived.pop(reply, None)
    if started is not None:
        _note("worker", started)
    _answer(self, reply, body)


_run = sandbox_pool.SandboxPool.run


async def run(self: Any, job: Any) -> Any:
    started = time.perf_counter()
    try:
        return await _run(self, job)
    finally:
        _note("sandbox", started)


_record = journal_mod.JsJournal.record


def record(self: Any, *args: Any) -> Any:
    started = time.perf_counter()
    fut = _record(self, *args)
    fut.add_done_callback(lambda _: _note("journal", started))
    return fut


_gc_started = [0.0]


def on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        ms = (time.perf_counter() - _gc_started[0]) * 1000
        gc_runs.extend((_gc_started[0], ms, float(info.get("generation", -1))))


def on_lag(seconds: float) -> None:
    """``watch_lag``'s observation at a 1 ms interval; kept when over 1 ms."""
    if seconds > 0.001:
        starts["lag"].append(time.perf_counter() - seconds - LAG_S)  # when the timer was set
        millis["lag"].append(seconds * 1000)


_serve = trigger_server.TriggerServer._serve
_monitor: list[asyncio.Task[None]] = []


async def serve(self: Any, *args: Any) -> None:
    if not _monitor:  # started with the first request, on the worker's loop
        _monitor.append(asyncio.get_running_loop().create_task(watch_lag(on_lag, LAG_S)))
    await _serve(self, *args)


def dump() -> None:
    with open(os.environ["TAIL_PROBE_OUT"], "w") as out:
        json.dump({"starts": starts, "millis": millis, "gc": gc_runs}, out)


def main() -> None:
    trigger_server.TriggerServer._on_msg = on_msg  # type: ignore[method-assign]
    trigger_server.TriggerServer._answer = answer  # type: ignore[method-assign]
    trigger_server.TriggerServer._serve = serve  # type: ignore[method-assign]
    sandbox_pool.SandboxPool.run = run  # type: ignore[method-assign]
    journal_mod.JsJournal.record = record  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    atexit.register(dump)
    from gatehook.cli import main as gatehook

    sys.argv = ["gatehook", "worker", "--log-level", "WARNING"]
    gatehook()


if __name__ == "__main__":
    main()
