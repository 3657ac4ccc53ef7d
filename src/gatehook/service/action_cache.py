"""Auth0 Actions' ``api.cache``: an action's entries read into its input before a run and
its writes stored after it, shared by every worker.

The script sees the entries as they were when its run began (``input.cache``); ``set`` and
``delete`` apply to that view at once (so a ``get`` after a ``set`` sees it) and come back
in the action's output, to be stored in the background: the decision never waits for the
cache. As in Auth0, the cache is short-lived help, not storage: a read that does not come
back in time (or at all) gives an empty cache, and a lost write is logged, never an error
of the sign-in.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from gatehook.domain.contract import CacheWrite
from gatehook.service.ports import ActionCacheStore

__all__ = ["ActionCaches"]

log = logging.getLogger("gatehook.cache")
_READ_S = 0.25  # at most this long (and at most half the request's budget) to read a cache
_WRITES = 64  # cache writes in flight per worker; past it a write is dropped and logged


class ActionCaches:
    """Reads and writes the caches of a worker's Auth0 Actions."""

    def __init__(self, store: ActionCacheStore) -> None:
        self._store = store
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0

    async def snapshot(self, tenant: str, action: str, deadline: float) -> bytes:
        """The input's ``cache`` member: the action's live entries as JSON (``{}`` when the
        read fails or would take too long)."""
        budget = min(_READ_S, (deadline - time.monotonic()) / 2)
        if budget <= 0:
            return b"{}"
        try:
            async with asyncio.timeout(budget):
                entries = await self._store.action_cache(tenant, action)
        except Exception as exc:  # an outage of the cache is an empty cache
            log.warning(
                "action cache not read: %s",
                exc,
                extra={"tenant": tenant, "action": action},
            )
            return b"{}"
        now = time.time() * 1000
        live = {k: e for k, e in entries.items() if float(e.get("expires_at") or 0) > now}
        return orjson.dumps(live)

    def write(self, tenant: str, action: str, writes: list[CacheWrite]) -> None:
        """Store ``writes`` in the background (bounded; what does not fit is logged)."""
        if len(self._tasks) >= _WRITES:
            self.dropped += 1
            log.warning(
                "action cache write dropped: %d writes in flight",
                len(self._tasks),
                extra={"tenant": tenant, "action": action},
            )
            return
        docs = [w.model_dump() for w in writes]
        task = asyncio.create_task(self._write(tenant, action, docs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, tenant: str, action: str, writes: list[dict[str, object]]) -> None:
        try:
            await self._store.write_action_cache(tenant, action, writes, int(time.time() * 1000))
        except Exception as exc:
            log.warning(
                "action cache write lost: %s", exc, extra={"tenant": tenant, "action": action}
            )

    async def aclose(self) -> None:
        """Wait for the writes in flight."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
