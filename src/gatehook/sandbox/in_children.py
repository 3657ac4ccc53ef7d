"""Isolation level ``process``: the pool's children, and a slow child for the scripts that
keep timing out.

A script that runs to its timeout is served for ``_DEMOTED_S`` by a child of its own at a
low scheduling priority (``SandboxPool`` with ``nice``): a tenant whose script spins takes a
core's leftovers, not the children that decide every other tenant's sign-ins. Its calls keep
their limits and outcomes.
"""

from __future__ import annotations

import time

from gatehook.errors import ScriptTimeout
from gatehook.sandbox.pool import Compiled, SandboxPool, ScriptJob, ScriptRun

__all__ = ["SLOW_NICE", "ChildScripts"]

_DEMOTED_S = 60.0
SLOW_NICE = 10  # the slow child's scheduling priority: ~1/10 of a core against the rest


class ChildScripts:
    """``pool`` for every script, but those that keep timing out (see the module)."""

    def __init__(self, pool: SandboxPool, slow: SandboxPool) -> None:
        self._pool = pool
        self._slow = slow
        self._strikes: dict[str, int] = {}
        self._demoted: dict[str, float] = {}
        self.slow_calls = 0

    async def start(self) -> None:
        """Start the slow child (the pool is started by its owner)."""
        await self._slow.start()

    async def aclose(self) -> None:
        await self._slow.aclose()

    @property
    def starts_together(self) -> bool:
        return self._pool.starts_together

    async def compile(
        self, source: str, *, language: str, name: str, style: str = "auto", timeout_s: float = 60
    ) -> Compiled:
        return await self._pool.compile(
            source, language=language, name=name, style=style, timeout_s=timeout_s
        )

    async def warm(self, job: ScriptJob) -> bool:
        return await self._pool.warm(job)

    async def run(self, job: ScriptJob) -> ScriptRun:
        """Run ``job`` in its child; raise a ``ScriptError`` subclass as the pool does."""
        key = job.key
        until = self._demoted.get(key)
        if until is not None:
            if until > time.monotonic():
                self.slow_calls += 1
                return await self._slow.run(job)
            del self._demoted[key]
        try:
            run = await self._pool.run(job)
        except ScriptTimeout as exc:
            # A script that ran to its limit moves at once; one that timed out waiting for
            # a busy child (the machine's load, not the script's) is no strike.
            if exc.ran_ms is not None and exc.ran_ms >= 0.9 * exc.timeout_ms:
                self._strike(key, 2)
            raise
        # A long run is no strike here: in a child starved of CPU (a loaded machine) a
        # trivial script runs long too, and the low-priority child would starve it further.
        return run

    def _strike(self, key: str, weight: int = 1) -> None:
        strikes = self._strikes.get(key, 0) + weight
        if strikes >= 2:
            self._strikes.pop(key, None)
            self._demoted[key] = time.monotonic() + _DEMOTED_S
        else:
            self._strikes[key] = strikes
