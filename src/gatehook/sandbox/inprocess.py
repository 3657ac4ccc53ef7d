"""Isolation level ``worker``: scripts without allowed hosts run in the worker process.

A script runs first on the event loop itself, in its warm context, under a CPU slice
(``slice_ms``) for every step: a sign-in's scripts cost a function call each, no process
crossing and no thread hop. A script that needs more than its slice (a slow action, an
endless loop) is interrupted by the engine, its context discarded, and it runs again from the
start, in a fresh context, on one of the script threads under its full timeout; its key stays
on the threads for ``_DEMOTED_S`` so that a hostile script costs the event loop one slice per
period, not one per call. Running again is safe because such a script has no effect outside
its context (no allowed hosts: no fetch), and a context's globals are never promised to last.

Each context is used by one thread only (the loop's contexts by the loop, each script
thread's by that thread), as the binding asks. Scripts with allowed hosts, whose fetch the
engine cannot time, go to the sandbox children (``SandboxPool``), which also compile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from gatehook.errors import InvalidResult, SandboxCrashed
from gatehook.sandbox.engine import EngineLimits, LoadError, Outcome, ScriptContext
from gatehook.sandbox.pool import Compiled, SandboxPool, ScriptJob, ScriptRun, script_error
from gatehook.settings import SandboxSettings

__all__ = ["InProcessScripts"]

log = logging.getLogger("gatehook.sandbox")
_DEMOTED_S = 60.0  # how long a key that outgrew its slice runs on the script threads
_THREAD_CONTEXTS = 256  # warm contexts each script thread keeps
_CHECK_EVERY = 64  # calls between two measures of a context's heap (a measure walks it)
_MIN_CONTEXT_BYTES = 64 * 1024
_THREAD_STACK = 16 * 1024 * 1024  # well above the engine's stack limit


def _limits(s: SandboxSettings) -> EngineLimits:
    return EngineLimits(
        memory_mb=s.context_memory_mb,
        stack_kb=s.stack_kb,
        max_jobs=s.max_jobs,
        log_bytes=s.max_log_bytes,
        output_bytes=s.max_output_bytes,
        http_max_bytes=s.http_max_response_bytes,
        http_allow_private=s.http_allow_private,
    )


def _load(
    limits: EngineLimits, job: ScriptJob, deadline: float, cpu_s: float | None
) -> ScriptContext | Outcome:
    try:
        return ScriptContext(
            limits, job.code, job.style, job.action, deadline=deadline, cpu_s=cpu_s
        )
    except LoadError as exc:
        return Outcome(None, [], exc.error, dirty=True)


@dataclass(slots=True)
class _Call:
    job: ScriptJob
    text: str
    deadline: float
    future: asyncio.Future[tuple[Outcome, float]]


class _ScriptThread:
    """One thread running the calls given to it in turn, with contexts of its own."""

    def __init__(self, index: int, limits: EngineLimits, loop: asyncio.AbstractEventLoop) -> None:
        self._limits = limits
        self._loop = loop
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._contexts: OrderedDict[str, ScriptContext] = OrderedDict()
        self.queued = 0
        self._thread = threading.Thread(
            target=self._serve, name=f"gatehook-script-{index}", daemon=True
        )
        self._thread.start()

    def submit(self, call: _Call) -> None:
        self.queued += 1
        self._queue.put(call)

    def stop(self) -> None:
        self._queue.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _serve(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                self._contexts.clear()
                return
            started = time.perf_counter()
            try:
                outcome = self._run(call)
            except Exception as exc:  # a bug of ours fails the call, never the thread
                log.exception("script thread failed a call")
                outcome = Outcome(None, [], {"type": "threw", "message": f"sandbox error: {exc}"})
            ms = (time.perf_counter() - started) * 1000
            with contextlib.suppress(RuntimeError):  # the loop closed
                self._loop.call_soon_threadsafe(self._settle, call.future, outcome, ms)

    def _settle(
        self, fut: asyncio.Future[tuple[Outcome, float]], outcome: Outcome, ms: float
    ) -> None:
        self.queued -= 1
        if not fut.done():
            fut.set_result((outcome, ms))

    def _run(self, call: _Call) -> Outcome:
        if call.deadline <= time.monotonic():
            return Outcome(None, [], {"type": "timeout", "message": "timed out"})
        key = call.job.key
        ctx = self._contexts.get(key)
        if ctx is None:
            loaded = _load(self._limits, call.job, call.deadline, None)
            if isinstance(loaded, Outcome):
                return loaded
            ctx = loaded
            self._contexts[key] = ctx
            while len(self._contexts) > _THREAD_CONTEXTS:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(key)
        outcome = ctx.call(call.text, call.deadline)
        if outcome.dirty or (
            ctx.calls % _CHECK_EVERY == 0 and ctx.held_bytes() > ctx.limits.memory_mb << 19
        ):
            self._contexts.pop(key, None)
        return outcome


class InProcessScripts:
    """The script runner of isolation ``worker`` (see the module's docstring); scripts with
    allowed hosts, compiling and warming of those go to ``pool``."""

    def __init__(self, settings: SandboxSettings, pool: SandboxPool) -> None:
        self._settings = settings
        self._pool = pool
        self._limits = _limits(settings)
        self._slice = settings.slice_ms / 1000
        self._contexts: OrderedDict[str, ScriptContext] = OrderedDict()
        self._held: dict[str, int] = {}
        self._held_total = 0
        self._budget = settings.interpreter_memory_mb * 1024 * 1024
        self._capacity = settings.interpreters_per_child
        self._share = settings.context_memory_mb * 1024 * 1024 // 2
        self._demoted: dict[str, float] = {}
        self._threads: list[_ScriptThread] = []
        self.inline = 0  # calls decided on the event loop
        self.offloaded = 0  # calls that ran on the script threads

    async def start(self) -> None:
        """Start the script threads (the pool is started by its owner)."""
        loop = asyncio.get_running_loop()
        old = threading.stack_size()
        try:
            threading.stack_size(_THREAD_STACK)
            self._threads = [
                _ScriptThread(i, self._limits, loop) for i in range(self._settings.worker_threads)
            ]
        finally:
            threading.stack_size(old)

    async def aclose(self) -> None:
        """Stop the script threads (a thread in a call ends when the engine stops it)."""
        for t in self._threads:
            t.stop()
        for t in self._threads:
            await asyncio.to_thread(t.join, 5.0)
        self._threads = []
        self._contexts.clear()

    async def compile(
        self, source: str, *, language: str, name: str, style: str = "auto", timeout_s: float = 60
    ) -> Compiled:
        """Compile in the pool's compiler child (``SandboxPool.compile``)."""
        return await self._pool.compile(
            source, language=language, name=name, style=style, timeout_s=timeout_s
        )

    @property
    def starts_together(self) -> bool:
        """No: a slot's scripts run in turn on the loop, each a function call (starting them
        together would only add tasks)."""
        return False

    @property
    def contexts(self) -> int:
        """Warm contexts held on the event loop."""
        return len(self._contexts)

    async def warm(self, job: ScriptJob) -> bool:
        """Load ``job``'s script into its context without running it."""
        if job.allowed_hosts:
            return await self._pool.warm(job)
        if job.key in self._contexts:
            return True
        loaded = _load(self._limits, job, time.monotonic() + job.timeout_ms / 1000, self._slice)
        if isinstance(loaded, Outcome):
            return False
        self._keep(job.key, loaded)
        return True

    def _keep(self, key: str, ctx: ScriptContext) -> None:
        self._contexts[key] = ctx
        self._measure(key, ctx)
        while len(self._contexts) > 1 and (
            len(self._contexts) > self._capacity or self._held_total > self._budget
        ):
            old, _ = self._contexts.popitem(last=False)
            self._held_total -= self._held.pop(old, 0)

    def _measure(self, key: str, ctx: ScriptContext) -> int:
        held = ctx.held_bytes()
        self._held_total += max(held, _MIN_CONTEXT_BYTES) - self._held.get(key, 0)
        self._held[key] = max(held, _MIN_CONTEXT_BYTES)
        return held

    def _drop(self, key: str) -> None:
        self._contexts.pop(key, None)
        self._held_total -= self._held.pop(key, 0)

    async def run(self, job: ScriptJob) -> ScriptRun:
        """Run ``job``; raise a ``ScriptError`` subclass when the script does not finish well."""
        if job.allowed_hosts:
            return await self._pool.run(job)
        if len(job.input) > self._settings.max_input_bytes:
            raise InvalidResult(f"input larger than {self._settings.max_input_bytes} bytes")
        now = time.monotonic()
        deadline = now + job.timeout_ms / 1000
        if job.deadline is not None:
            deadline = min(deadline, job.deadline)
        budget_ms = (deadline - now) * 1000
        try:
            text = job.input.decode()
        except UnicodeDecodeError:
            raise InvalidResult("input is not valid UTF-8") from None
        key = job.key
        demoted = self._demoted.get(key)
        if demoted is not None and demoted < now:
            del self._demoted[key]
            demoted = None
        if demoted is None:
            started = time.perf_counter()
            outcome = self._inline(job, key, text, deadline)
            if outcome is not None:
                self.inline += 1
                return self._result(outcome, (time.perf_counter() - started) * 1000, budget_ms)
            self._demoted[key] = time.monotonic() + _DEMOTED_S
        outcome, ms = await self._offload(job, text, deadline)
        self.offloaded += 1
        return self._result(outcome, ms, budget_ms)

    def _inline(self, job: ScriptJob, key: str, text: str, deadline: float) -> Outcome | None:
        """The call on the loop under the slice; ``None`` when it outgrew the slice."""
        ctx = self._contexts.get(key)
        if ctx is None:
            loaded = _load(self._limits, job, deadline, self._slice)
            if isinstance(loaded, Outcome):
                return None if self._outgrew(loaded, deadline) else loaded
            ctx = loaded
            self._keep(key, ctx)
        else:
            self._contexts.move_to_end(key)
        outcome = ctx.call(text, deadline, self._slice)
        if outcome.dirty:
            self._drop(key)
            if self._outgrew(outcome, deadline):
                return None
        elif (outcome.error is not None or ctx.calls % _CHECK_EVERY == 0) and self._measure(
            key, ctx
        ) > self._share:
            self._drop(key)  # it keeps what it allocated
        return outcome

    @staticmethod
    def _outgrew(outcome: Outcome, deadline: float) -> bool:
        """A timeout before the deadline is the slice's."""
        error = outcome.error or {}
        return error.get("type") == "timeout" and time.monotonic() < deadline - 0.001

    async def _offload(self, job: ScriptJob, text: str, deadline: float) -> tuple[Outcome, float]:
        if not self._threads:
            raise SandboxCrashed("the script threads are not running")
        thread = min(self._threads, key=lambda t: t.queued)
        fut: asyncio.Future[tuple[Outcome, float]] = asyncio.get_running_loop().create_future()
        thread.submit(_Call(job, text, deadline, fut))
        grace = self._settings.grace_ms / 1000
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0) + grace):
                return await fut
        except TimeoutError:
            # The engine had not stopped it yet (its CPU clock lags the wall clock on a busy
            # machine): the call times out now; the thread ends it shortly.
            return Outcome(None, [], {"type": "timeout", "message": "timed out"}), 0.0

    @staticmethod
    def _result(outcome: Outcome, ms: float, budget_ms: float) -> ScriptRun:
        if outcome.out is not None:
            return ScriptRun(outcome.out.encode(), outcome.logs, ms)
        raise script_error({"error": outcome.error, "logs": outcome.logs}, budget_ms)
