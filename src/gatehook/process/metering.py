"""The event loop's time a coroutine takes: the sum of its steps, not its wall time.

A request that waits 1.2 s on a slow backend takes a few hundred microseconds of the loop;
one that decides on a template takes all its wall time from it. Admission per tenant
(``service.admission``) shares a worker's time by what its tenants' requests take of it, and
only a measure of each step tells the two apart: Python has no CPU clock per task, so
``Metered`` drives the coroutine itself and times each ``send``, the way ``asyncio.Task``
does one step at a time. It costs two clock reads and one generator step per await of the
coroutine (a decision makes a handful).
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Metered"]

T = TypeVar("T")


class Metered(Generic[T]):
    """Await ``coro`` through this to learn, in ``seconds``, the loop's time its steps took
    (including the failed or cancelled step that ended it)."""

    __slots__ = ("_coro", "seconds")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self.seconds = 0.0

    def __await__(self) -> Generator[Any, Any, T]:
        clock = time.perf_counter
        send, throw = self._coro.send, self._coro.throw
        value: Any = None
        error: BaseException | None = None
        while True:
            started = clock()
            try:
                yielded = send(value) if error is None else throw(error)
            except StopIteration as done:
                self.seconds += clock() - started
                result: T = done.value
                return result
            except BaseException:
                self.seconds += clock() - started
                raise
            self.seconds += clock() - started
            error = None
            try:
                value = yield yielded
            except BaseException as exc:  # a cancellation (or close): passed on to the coroutine
                value, error = None, exc
