"""Action scripts in QuickJS-ng contexts whose limits the engine itself enforces.

A ``ScriptContext`` holds one action version in a QuickJS runtime of its own (its own heap,
its own globals: nothing one tenant's script does reaches another's). Each call runs under
the engine's limits:

- memory: ``set_memory_limit`` on the runtime; an allocation past it fails inside the script;
- time: ``set_time_limit`` before every step (the call, then each promise job); the engine
  interrupts a step that runs past it, and scripts cannot catch the interrupt. The engine
  counts the process's CPU time (``clock()``) and looks at it only every few thousand
  bytecode steps, so a script whose time goes into native calls overruns it (by seconds, for
  a loop over a large array's ``indexOf``): the wall-clock deadline is checked between steps,
  and the callers bound what such a script holds (``pool``, ``in_worker``);
- promise jobs: at most ``max_jobs`` per call, so an endless microtask chain ends;
- stack: ``set_max_stack_size``; deep recursion ends in a RangeError;
- output: the result's JSON text is measured before it leaves the engine.

A context that hit a limit (or whose promise never settled) is *dirty*: the caller discards
it and builds a new one, never reusing a heap a script left in an unknown state.

The runtime (``prelude.js``) is evaluated in every context before the action's code and
gives the script what docs/contract.md promises: its input, console/log capture and
``require`` of ``zitadel/http``, ``zitadel/log`` and ``zitadel/uuid``. No Python function is
reachable but ``http.fetch`` (the guarded fetch of ``netguard``), and only in the contexts of
actions with allowed hosts. The binding refuses calls into Python while a time limit is set,
so those contexts run without the engine's time limit; their deadline is the supervising
pool's (they run only in sandbox children, see ``pool``).
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import quickjs

from gatehook.domain import auth0

__all__ = ["ContextCache", "EngineLimits", "LoadError", "Outcome", "ScriptContext", "wrap"]

_RUNTIME = Path(__file__).with_name("prelude.js").read_text()
_AUTH0 = {tr.value: list(names) for tr, names in auth0.HANDLERS.items()}
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
TIMED_OUT: dict[str, Any] = {"type": "timeout", "message": "timed out"}
_NEVER_SETTLED = {"type": "threw", "message": "the action's promise never settled"}
_MEMORY = {"type": "memory", "message": "memory limit exceeded"}


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """What one context may use."""

    memory_mb: int = 32
    stack_kb: int = 512
    max_jobs: int = 100_000
    log_bytes: int = 8 * 1024
    output_bytes: int = 256 * 1024
    http_max_bytes: int = 1024 * 1024
    http_allow_private: bool = False

    def runtime_limits(self) -> dict[str, Any]:
        return {"log_bytes": self.log_bytes, "output_bytes": self.output_bytes, "auth0": _AUTH0}


@dataclass(slots=True)
class Outcome:
    """One call's result: the output's JSON text or an error, the logs, and whether the
    context must be discarded."""

    out: str | None
    logs: list[str]
    error: dict[str, Any] | None
    dirty: bool = False
    sliced: bool = False  # stopped by the call's slice, before its deadline


class LoadError(Exception):
    """The action's code did not load; ``error`` is the reply-shaped error."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "load failed"))
        self.error = error


def wrap(compiled: str, style: str, name: str) -> str:
    """The evaluation that defines an action's code inside the runtime (line numbers kept)."""
    probe = (
        f"typeof {name} === 'function' ? {name} : undefined"
        if _IDENT.fullmatch(name)
        else "undefined"
    )
    return (
        "__gh.define(function (exports, require, module) {"
        + compiled
        + f"\n;return ({probe});\n}}, {json.dumps(style)}, {json.dumps(name)})"
    )


def classify(exc: BaseException) -> dict[str, Any]:
    """The reply-shaped error for an exception raised out of the engine."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "interrupted" in first:
        return dict(TIMED_OUT)
    # An exception that is null escapes the engine when it could not even allocate the error.
    if (
        isinstance(exc, MemoryError)
        or first == "null"
        or "out of memory" in first
        or ("string too long" in first)
    ):
        return dict(_MEMORY)
    if isinstance(exc, quickjs.StackOverflow):
        return {"type": "threw", "message": "RangeError: Maximum call stack size exceeded"}
    return {"type": "threw", "message": first[:1000]}


class ScriptContext:
    """One QuickJS runtime holding the sandbox runtime and one action version.

    Not thread-safe: one call at a time, and (the binding's advice) always from the same
    thread.
    """

    def __init__(
        self,
        limits: EngineLimits,
        code: str,
        style: str,
        name: str,
        *,
        fetch: Callable[[str], str] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.limits = limits
        self.calls = 0
        self._cpu_until: float | None = None  # a slice's end, in this thread's CPU time
        ctx = quickjs.Context()
        ctx.set_memory_limit(limits.memory_mb * 1024 * 1024)
        ctx.set_max_stack_size(limits.stack_kb * 1024)
        self._ctx = ctx
        self._timed = fetch is None
        if fetch is not None:
            ctx.add_callable("__gh_fetch", fetch)  # the runtime takes it off the global object
        ctx.set_time_limit(5.0 if self._timed else -1)  # the runtime itself: a bounded load
        setup = ctx.eval(_RUNTIME)
        setup(json.dumps(limits.runtime_limits()))
        until = deadline if deadline is not None else time.monotonic() + 5.0
        try:
            self._limit(until)
            found = ctx.eval(wrap(code, style, name))
            stopped = self._pump(until)
        except quickjs.JSException as exc:
            raise LoadError(classify(exc)) from None
        if stopped is not None:
            raise LoadError(stopped)
        if found is None:
            raise LoadError(
                {
                    "type": "threw",
                    "message": "the script defines neither execute(input) nor"
                    f" function {name}(ctx, api)",
                }
            )
        self.style: str = str(found)
        #: the Auth0 handlers the script exports (Auth0 style only)
        self.exports: tuple[str, ...] = (
            tuple(orjson.loads(ctx.eval("__gh.exports()"))) if self.style == "auth0" else ()
        )
        self._start = ctx.eval("__gh.start")
        self._meta = ctx.eval("__gh.meta")
        self._output = ctx.eval("__gh.output")
        self._result = ctx.eval("__gh.result")
        self._settled = ctx.eval("__gh.settled")
        self._leftover = False  # the last call's script left promise jobs running

    @property
    def timed(self) -> bool:
        """Whether the engine bounds this context's CPU time (no fetch)."""
        return self._timed

    def held_bytes(self) -> int:
        """What the context's heap holds now (walks the heap: not for every call)."""
        return int(self._ctx.memory()["malloc_size"])

    def _limit(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if self._cpu_until is not None:
            left = self._cpu_until - time.thread_time()
            if left <= 0:
                return False
            remaining = min(remaining, left)
        if self._timed:
            self._ctx.set_time_limit(remaining)
        return True

    def _pump(self, deadline: float, box: Any = None) -> dict[str, Any] | None:
        """Run the promise jobs queued, each under the time left; an error if the deadline
        or the job budget ends them first. With ``box`` (a call's), jobs still coming once
        its result has settled are what the script left running: every ``_SETTLED_EVERY``
        jobs the pump looks, and stops there (``self._leftover``: the context is dirty)."""
        ctx = self._ctx
        jobs = 0
        while True:
            if not self._limit(deadline):
                return dict(TIMED_OUT)
            if not ctx.execute_pending_job():
                return None
            jobs += 1
            if box is not None and jobs % _SETTLED_EVERY == 0 and self._settled(box):
                self._leftover = True
                return None
            if jobs >= self.limits.max_jobs:
                return {
                    "type": "threw",
                    "message": f"more than {self.limits.max_jobs} promise jobs in one call",
                }

    def call(self, input_json: str, deadline: float, slice_s: float | None = None) -> Outcome:
        """Run the action on ``input_json`` until ``deadline`` (monotonic). With ``slice_s``,
        the whole call (every step together) gets at most that much of this thread's CPU
        time (time the process spent preempted does not count): a call that needs more ends
        ``sliced``, its context dirty, so that the caller can run it again elsewhere under
        its full deadline."""
        self.calls += 1
        if slice_s is not None:
            self._cpu_until = time.thread_time() + slice_s
        try:
            outcome = self._call(input_json, deadline)
        finally:
            self._cpu_until = None
        if (
            slice_s is not None
            and outcome.error is not None
            and outcome.error.get("type") == "timeout"
            and time.monotonic() < deadline - 0.001
        ):
            outcome.sliced = True
        return outcome

    def _call(self, input_json: str, deadline: float) -> Outcome:
        if not self._limit(deadline):
            return Outcome(None, [], dict(TIMED_OUT))
        self._leftover = False
        try:
            box = self._start(input_json)
            stopped = self._pump(deadline, box)
            if self._timed:
                self._ctx.set_time_limit(1.0)  # reading the result is bounded
            if stopped is None:
                out = self._result(box)
                if out is not None:
                    return Outcome(str(out), [], None, dirty=self._leftover)
            logs, error, settled = orjson.loads(self._meta(box))
            out = self._output(box) if settled and error is None and stopped is None else None
        except quickjs.JSException as exc:
            return Outcome(None, [], classify(exc), dirty=True)
        except (UnicodeDecodeError, TypeError) as exc:
            # What the binding cannot bring over (a string that is not UTF-8, a rope).
            message = f"result could not be read: {type(exc).__name__}"
            return Outcome(None, [], {"type": "invalid_result", "message": message}, dirty=True)
        if stopped is not None:
            return Outcome(None, logs, stopped, dirty=True)
        if not settled:
            return Outcome(None, logs, dict(_NEVER_SETTLED), dirty=True)
        if error is not None:
            dirty = error.get("type") == "memory" or self._leftover
            return Outcome(None, logs, error, dirty=dirty)
        return Outcome(str(out), logs, None, dirty=self._leftover)


_SETTLED_EVERY = 1024  # promise jobs between two looks at whether the call has settled
_MIN_CONTEXT_BYTES = 64 * 1024  # what a context is charged at least
_CHECK_EVERY = 16  # calls between two measures of a context's heap (a measure walks it)


class ContextCache:
    """Warm contexts by key, least recently used first out, bounded by count and by the heap
    they hold: each is charged its heap when it is put (at least ``_MIN_CONTEXT_BYTES``) and
    again every ``_CHECK_EVERY`` calls. A context that hit a limit, or holds more than half
    its own memory limit after a call (it keeps what it allocated), is dropped."""

    def __init__(self, capacity: int, budget_bytes: int) -> None:
        self._contexts: OrderedDict[str, ScriptContext] = OrderedDict()
        self._held: dict[str, int] = {}
        self.held_bytes = 0
        self._capacity = capacity
        self._budget = budget_bytes

    def __len__(self) -> int:
        return len(self._contexts)

    def get(self, key: str) -> ScriptContext | None:
        ctx = self._contexts.get(key)
        if ctx is not None:
            self._contexts.move_to_end(key)
        return ctx

    def put(self, key: str, ctx: ScriptContext) -> None:
        self._contexts[key] = ctx
        self._measure(key, ctx)
        while len(self._contexts) > 1 and (
            len(self._contexts) > self._capacity or self.held_bytes > self._budget
        ):
            old, _ = self._contexts.popitem(last=False)
            self.held_bytes -= self._held.pop(old, 0)

    def drop(self, key: str) -> bool:
        """Forget ``key``'s context; whether there was one."""
        self.held_bytes -= self._held.pop(key, 0)
        return self._contexts.pop(key, None) is not None

    def after_call(self, key: str, ctx: ScriptContext, outcome: Outcome) -> bool:
        """Keep or drop ``key``'s context after ``outcome``; whether it was dropped."""
        if outcome.dirty or (
            (outcome.error is not None or ctx.calls % _CHECK_EVERY == 0)
            and self._measure(key, ctx) > ctx.limits.memory_mb * 1024 * 1024 // 2
        ):
            return self.drop(key)
        return False

    def clear(self) -> None:
        self._contexts.clear()
        self._held.clear()
        self.held_bytes = 0

    def _measure(self, key: str, ctx: ScriptContext) -> int:
        held = ctx.held_bytes()
        charge = max(held, _MIN_CONTEXT_BYTES)
        self.held_bytes += charge - self._held.get(key, 0)
        self._held[key] = charge
        return held
