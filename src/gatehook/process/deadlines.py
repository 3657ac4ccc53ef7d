"""Deadlines on the hot path with one timer for all of them.

Every request has a deadline (its budget), every sandbox call one (its timeout plus a grace),
every audit batch one (its acknowledgement). A timer per deadline (``call_later``,
``wait_for``, ``asyncio.wait(timeout=...)``) costs a timer object, and with ``wait_for`` a
task, for each; on uvloop every timer is a libuv timer of its own. ``Deadlines`` keeps them in
one heap and arms one loop timer for the earliest; almost every deadline is met and cancelled,
which only sets a flag.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["Deadline", "Deadlines"]


def _nothing() -> None:
    pass


class Deadline:
    """One scheduled callback; ``cancel()`` keeps it from running (it stays in the heap until
    its time comes, then is dropped)."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (and let go of it: what it refers to, often a request's
        state that refers back to this entry, is freed now, not by the cycle collector)."""
        self.cancelled = True
        self.callback = _nothing


class Deadlines:
    """Callbacks at ``time.monotonic()`` instants, one loop timer for all."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, when: float, callback: Callable[[], None]) -> Deadline:
        """Run ``callback`` at ``when`` (``time.monotonic()``) unless cancelled first."""
        entry = Deadline(when, callback)
        heapq.heappush(self._heap, (when, next(self._seq), entry))
        if when < self._armed_at:
            self._arm(when)
        return entry

    def _arm(self, when: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = when
        # call_later, not call_at: a loop's own clock (uvloop's is cached per iteration, in
        # milliseconds) need not be time.monotonic(); _fire re-arms if it wakes a bit early.
        self._armed = self._get_loop().call_later(max(when - time.monotonic(), 0.0), self._fire)

    def _fire(self) -> None:
        self._armed = None
        self._armed_at = float("inf")
        now = time.monotonic()
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if not entry.cancelled:
                callback = entry.callback
                entry.cancel()
                callback()
        while heap and heap[0][2].cancelled:  # no wake-up for deadlines nobody waits on
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])

    def timeout(self, when: float) -> Timeout:
        """``async with deadlines.timeout(when):`` as ``asyncio.timeout_at``, on the shared
        timer: the block is cancelled at ``when`` and ``TimeoutError`` raised instead."""
        return Timeout(self, when)

    def close(self) -> None:
        """Drop every deadline (at shutdown)."""
        if self._armed is not None:
            self._armed.cancel()
        self._armed = None
        self._armed_at = float("inf")
        self._heap.clear()


class Timeout:
    """The context manager of ``Deadlines.timeout``."""

    __slots__ = ("_deadlines", "_entry", "_expired", "_task", "_when")

    def __init__(self, deadlines: Deadlines, when: float) -> None:
        self._deadlines = deadlines
        self._when = when
        self._expired = False
        self._task: asyncio.Task[object] | None = None
        self._entry: Deadline | None = None

    def _expire(self) -> None:
        if self._task is not None and not self._task.done():
            self._expired = True
            self._task.cancel()

    async def __aenter__(self) -> Timeout:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("Deadlines.timeout() needs a running task")
        self._entry = self._deadlines.at(self._when, self._expire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._entry is not None:
            self._entry.cancel()
        if self._expired and exc_type is asyncio.CancelledError:
            assert self._task is not None
            if self._task.uncancel() == 0:
                raise TimeoutError from exc
        return False
