"""Isolation level ``worker``: scripts without allowed hosts run in the worker process.

A script runs on the event loop itself, in its warm context, within a slice of time
(``slice_ms`` for the whole call): a sign-in's scripts cost a function call each, no process
crossing. A script that needs more than its slice (a slow action, an endless loop) is stopped
by the engine, its context discarded, and it runs again from the start in the sandbox
children of a slow child (a ``SandboxPool`` of its own, at a low scheduling priority, so that
the decision path keeps the CPU while they spin) under its full timeout, and its key stays
there for ``_DEMOTED_S``: a hostile script costs the loop one slice per period, not one per
call. The slice counts the loop thread's CPU time, so a preempted process demotes no one.
Running it again is safe: such a script has no effect outside its context (no allowed
hosts, no fetch), and a context's globals are never promised to last. Scripts with allowed
hosts, whose fetch the engine cannot time, always go to the children, which also compile.

What this level trusts: the engine looks at its clock only every few thousand bytecode
steps, so a script that spends its time in native calls (``big.indexOf(x)`` over a large
array, in a loop) runs past its limit, and on the loop that is every request's time. A
watchdog thread sees a call that holds the loop ``_HUNG_S`` past its deadline and calls
``on_hung`` (the runtime ends the process: its supervisor or orchestrator starts a new one,
and login services' retries go to the other workers), so such a script costs one worker
process a restart rather than its requests for as long as the script runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gatehook.errors import InvalidResult
from gatehook.sandbox.engine import ContextCache, EngineLimits, LoadError, Outcome, ScriptContext
from gatehook.sandbox.in_children import SLOW_NICE
from gatehook.sandbox.pool import Compiled, SandboxPool, ScriptJob, ScriptRun, script_error
from gatehook.settings import SandboxSettings

__all__ = ["InWorkerScripts"]

log = logging.getLogger("gatehook.sandbox")
_DEMOTED_S = 60.0  # how long a key that outgrew its slice runs in the children
_LOAD_SLICES = 10  # a context's load may hold the loop this many slices
_HUNG_S = 1.0  # past its deadline, a call still holding the loop makes the watchdog act
_WATCH_S = 0.1  # how often the watchdog looks


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


class InWorkerScripts:
    """The script runner of isolation ``worker`` (see the module's docstring)."""

    def __init__(
        self,
        settings: SandboxSettings,
        pool: SandboxPool,
        *,
        on_hung: Callable[[str, float], None] | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._slow = SandboxPool(settings, size=1, nice=SLOW_NICE)
        self._limits = _limits(settings)
        self._slice = settings.slice_ms / 1000
        self._contexts = ContextCache(
            settings.interpreters_per_child, settings.interpreter_memory_mb << 20
        )
        self._demoted: dict[str, float] = {}
        self._strikes: dict[str, int] = {}  # slices outgrown in a row, by key
        self._on_hung = on_hung
        # the call holding the loop: (key, its deadline), read by the watchdog thread
        self._running: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.inline = 0  # calls decided on the event loop
        self.demoted = 0  # calls that outgrew their slice and ran in the children
        self.hung = 0  # calls the watchdog found holding the loop past their deadline

    async def start(self) -> None:
        """Start the slow child and the watchdog (the pool is started by its owner)."""
        await self._slow.start()
        self._stop.clear()
        self._watchdog = threading.Thread(
            target=self._watch, name="gatehook-script-watchdog", daemon=True
        )
        self._watchdog.start()

    async def aclose(self) -> None:
        """Stop the watchdog and the slow child, drop the contexts."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(1.0)
        self._contexts.clear()
        await self._slow.aclose()

    def _watch(self) -> None:
        seen: tuple[str, float] | None = None
        while not self._stop.wait(_WATCH_S):
            running = self._running
            if running is None or running is seen:
                continue
            key, deadline = running
            late = time.monotonic() - deadline
            if late > _HUNG_S:
                seen = running
                self.hung += 1
                log.critical("script %s holds the event loop %.1f s past its deadline", key, late)
                if self._on_hung is not None:
                    self._on_hung(key, late)

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
        if self._contexts.get(job.key) is not None:
            return True
        return isinstance(self._load(job, time.monotonic() + job.timeout_ms / 1000), ScriptContext)

    def _load(self, job: ScriptJob, deadline: float) -> ScriptContext | Outcome | None:
        """The context for ``job``, loaded within ``deadline`` and ``_LOAD_SLICES`` slices
        (the runtime, then the action's top level); the load's failure as an outcome;
        ``None`` when the load outgrew its slices."""
        deadline = min(deadline, time.monotonic() + _LOAD_SLICES * self._slice)
        self._running = (job.key, deadline)
        try:
            ctx = ScriptContext(self._limits, job.code, job.style, job.action, deadline=deadline)
        except LoadError as exc:
            if exc.error.get("type") == "timeout":
                return None
            return Outcome(None, [], exc.error, dirty=True)
        finally:
            self._running = None
        self._contexts.put(job.key, ctx)
        return ctx

    async def run(self, job: ScriptJob) -> ScriptRun:
        """Run ``job``; raise a ``ScriptError`` subclass when the script does not finish well."""
        if job.allowed_hosts:
            return await self._pool.run(job)
        if len(job.input) > self._settings.max_input_bytes:
            raise InvalidResult(f"input larger than {self._settings.max_input_bytes} bytes")
        now = time.monotonic()
        key = job.key
        demoted = self._demoted.get(key)
        if demoted is not None:
            if demoted > now:
                return await self._slow.run(job)
            del self._demoted[key]
        deadline = now + job.timeout_ms / 1000
        if job.deadline is not None:
            deadline = min(deadline, job.deadline)
        budget_ms = (deadline - now) * 1000
        try:
            text = job.input.decode()
        except UnicodeDecodeError:
            raise InvalidResult("input is not valid UTF-8") from None
        started = time.perf_counter()
        cpu = time.thread_time()
        outcome = self._inline(job, text, deadline)
        held = time.thread_time() - cpu  # CPU: a preempted process is not the script's fault
        if outcome is None or held > 2 * self._slice:
            # Outgrew its slice of CPU (the script's own time: it moves at once), or held
            # the loop past it (native calls the engine stopped late: twice in a row).
            strikes = self._strikes.get(key, 0) + (2 if outcome is None else 1)
            self._strikes[key] = strikes
            if strikes >= 2:
                del self._strikes[key]
                self._demoted[key] = time.monotonic() + _DEMOTED_S
            if outcome is None:  # stopped by the slice: it runs again, in the slow child
                self.demoted += 1
                return await self._slow.run(job)
        else:
            self._strikes.pop(key, None)
        self.inline += 1
        if outcome.out is not None:
            return ScriptRun(
                outcome.out.encode(), outcome.logs, (time.perf_counter() - started) * 1000
            )
        raise script_error({"error": outcome.error, "logs": outcome.logs}, budget_ms)

    def _inline(self, job: ScriptJob, text: str, deadline: float) -> Outcome | None:
        """The call on the loop within the slice; ``None`` when it outgrew the slice."""
        key = job.key
        ctx = self._contexts.get(key)
        if ctx is None:
            loaded = self._load(job, deadline)
            if loaded is None or isinstance(loaded, Outcome):
                return loaded
            ctx = loaded
        self._running = (key, deadline)
        try:
            outcome = ctx.call(text, deadline, self._slice)
        finally:
            self._running = None
        self._contexts.after_call(key, ctx, outcome)
        return None if outcome.sliced else outcome
