"""What a component started, closed in one place: in reverse order of starting, each close
whatever the ones before it did."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Lifecycle"]

log = logging.getLogger("gatehook")

Close = Callable[[], Awaitable[None] | None]


class Lifecycle:
    """An exit stack of named closes. A close that fails is logged with its name and the
    rest still run (a sandbox left running or a storage client left open because a last
    write failed would outlive the process); ``aclose`` raises the first failure once every
    close has run."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self._first: Exception | None = None

    def on_close(self, name: str, close: Close) -> None:
        """Run ``close`` when this closes, before everything registered earlier."""

        async def run() -> None:
            try:
                result = close()
                if result is not None:
                    await result
            except Exception as exc:
                log.exception("closing the %s failed; closing the rest", name)
                self._first = self._first or exc

        self._stack.push_async_callback(run)

    def task(self, name: str, work: Awaitable[None]) -> asyncio.Task[None]:
        """Run ``work`` in the background until this closes (it is cancelled then)."""
        task = asyncio.ensure_future(work)

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.on_close(name, cancel)
        return task

    async def aclose(self) -> None:
        """Run every close, the last registered first; raise the first failure."""
        await self._stack.aclose()
        first, self._first = self._first, None
        if first is not None:
            raise first
