"""Per-tenant limits on sandbox calls in flight, adaptive like TCP's slow start.

A tenant whose calls finish quickly may pipeline many calls into the sandbox (its limit grows
by one per fast call, up to a ceiling); a tenant whose calls are slow (an endless loop, a
memory hog; judged by the time a call ran in its child, or its whole time when it failed)
drops back to the floor, ``pool size - 1`` calls, so it can never occupy every
child and everyone else keeps one to run on. A new tenant starts at the floor.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from gatehook.process.deadlines import Deadlines
from gatehook.service.cache import Lru

__all__ = ["TenantLimiter"]


@dataclass
class _Tenant:
    limit: int
    in_flight: int = 0
    waiters: deque[asyncio.Future[bool]] = field(default_factory=deque)


class TenantLimiter:
    """``await acquire(tenant, timeout)`` / ``release(tenant, seconds)`` around each call."""

    def __init__(
        self, floor: int, ceiling: int, slow_s: float, deadlines: Deadlines | None = None
    ) -> None:
        self._floor = max(1, floor)
        self._ceiling = max(self._floor, ceiling)
        self._slow = slow_s
        self._tenants: Lru[str, _Tenant] = Lru(10_000)
        self._deadlines = deadlines or Deadlines()

    def limit(self, tenant: str) -> int:
        """The tenant's current limit (for tests and metrics)."""
        state = self._tenants.get(tenant)
        return state.limit if state else self._floor

    async def acquire(self, tenant: str, timeout: float) -> bool:
        """Take a slot; False when none freed up within ``timeout`` seconds. A call that
        waits does so on the shared deadline timer (no task, no timer of its own)."""
        state = self._tenants.get(tenant)
        if state is None:
            state = _Tenant(self._floor)
            self._tenants.put(tenant, state)
        if state.in_flight < state.limit and not state.waiters:
            state.in_flight += 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)

        def expire() -> None:
            if not waiter.done():
                waiter.set_result(False)

        deadline = self._deadlines.at(time.monotonic() + max(timeout, 0.0), expire)
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release_slot(tenant, state)  # granted just as we gave up: hand it on
            elif waiter in state.waiters:
                state.waiters.remove(waiter)
            raise
        finally:
            deadline.cancel()
        if not granted and waiter in state.waiters:
            state.waiters.remove(waiter)
        return granted

    def room(self, tenant: str) -> int:
        """How many more calls the tenant may start now without waiting."""
        state = self._tenants.get(tenant)
        if state is None:
            return self._floor
        return 0 if state.waiters else max(0, state.limit - state.in_flight)

    def release(self, tenant: str, seconds: float) -> None:
        """Give the slot back; a slow call shrinks the tenant's limit, a fast one grows it."""
        state = self._tenants.get(tenant)
        if state is None:
            return
        if seconds >= self._slow:
            state.limit = self._floor
        elif state.limit < self._ceiling:
            state.limit += 1
        self._release_slot(tenant, state)

    def _release_slot(self, tenant: str, state: _Tenant) -> None:
        state.in_flight -= 1
        while state.waiters and state.in_flight < state.limit:
            waiter = state.waiters.popleft()
            if not waiter.done():
                state.in_flight += 1
                waiter.set_result(True)
