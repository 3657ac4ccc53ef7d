"""The lean trigger path: a queue subscription on the broker's own connection, served
through ``transport.lean`` (messages straight from the parser, replies batched per loop turn).

Measured on 2 cores (benchmarks/run.py, BENCHMARKS.md): FastStream's subscriber machinery
(dependency resolution, anyio checkpoints, thread hops) cost more per trigger request than
the whole decision, and nats-py's own per-message objects, queue and task switch were the
next largest share. The trigger subject is therefore served here, with the same connection,
queue group and settings; FastStream keeps the management API.
``GATEHOOK_TRIGGER_TRANSPORT=faststream`` switches back, for comparison.

Each request becomes a task, admitted per tenant before the shared limit
(``service.admission``): a tenant over its fair share of the ``concurrency`` slots, or any
request when every slot is taken, is answered at once with a retryable ``unavailable`` reply
naming the limit, instead of queueing without bound; a tenant that floods a worker is refused
while the others keep being served. Requests' time on the loop is metered (a sample) and
counted to their tenant, so that a tenant taking more than its share of the worker's time
holds fewer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.subscription import Subscription

from gatehook.domain import subjects
from gatehook.domain.contract import ErrorCode, TriggerReply
from gatehook.process.metering import Metered
from gatehook.service.admission import Admission, Refusal
from gatehook.tracing import tracing_enabled
from gatehook.transport.lean import LeanNats, parse_headers

__all__ = ["BAD_SUBJECT", "TriggerServer"]

log = logging.getLogger("gatehook.transport")

Handler = Callable[[str, str, str, bytes, dict[str, str] | None], Coroutine[Any, Any, bytes]]


def _failure(code: ErrorCode, message: str, *, retryable: bool) -> bytes:
    return TriggerReply.failure(None, code, message, retryable=retryable).model_dump_json().encode()


# Replies the transport gives itself, encoded once (the same model as every other reply)
INTERNAL = _failure("internal", "internal error", retryable=True)
BAD_SUBJECT = _failure(
    "bad_request",
    f"subject must be {subjects.said(subjects.TRIGGER_FORM)}",
    retryable=False,
)
_MAX_HELD = 100_000  # refusals waiting for their delay (past it: answered at once)


class TriggerServer:
    """Serves ``gatehook.v1.trigger.*.*.*`` with admission per tenant and load shedding."""

    def __init__(
        self,
        nats: LeanNats,
        handler: Handler,
        *,
        subject: str,
        queue: str,
        admission: Admission,
        on_change: Callable[[str], None] | None = None,
        refusal_delay_s: float = 0.0,
    ) -> None:
        self._nats = nats
        self._handler = handler
        self._on_change = on_change
        self._changes: Subscription | None = None
        self._subject = subject
        self._queue = queue
        self.admission = admission
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None
        self._refusals: dict[tuple[str, bool, int], bytes] = {}  # encoded once per limit
        self.shed = 0  # requests refused, for any reason of admission
        # refusals answered after ``refusal_delay_s``, in the order they are due (one delay
        # for all: appended in order), and the one loop timer that answers them
        self._delay = refusal_delay_s
        self._held: deque[tuple[float, bytes, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        """Requests being answered now."""
        return len(self._tasks)

    async def start(self) -> None:
        """Subscribe: change broadcasts (every worker), trigger requests (queue group).

        Both are lean subscriptions: a change broadcast is applied as the parser reads it, so
        one that reaches this connection before a trigger request is applied before that
        request is served.
        """
        if self._on_change is not None:
            self._changes = await self._nats.subscribe(subjects.CHANGES, self._changed)
        if not self._subject:
            return  # triggers are served elsewhere (GATEHOOK_TRIGGER_TRANSPORT=faststream)
        self._sub = await self._nats.subscribe(self._subject, self._on_msg, queue=self._queue)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, then let those in flight finish (bounded by ``timeout``)."""
        for sub in (self._sub, self._changes):
            if sub is not None:
                await self._nats.unsubscribe(sub)
        self._sub = self._changes = None
        self._release_all()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _changed(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if self._on_change is not None:
            self._on_change(subject.rsplit(b".", 1)[-1].decode(errors="replace"))

    def _on_msg(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if not reply:
            return  # a publish, not a request: nobody to answer
        parts = subjects.trigger_parts(subject.decode(errors="replace"))
        if parts is None:
            self._answer(reply, BAD_SUBJECT)
            return
        tenant = parts[0]
        refused = self.admission.enter(tenant)
        if refused is not None:
            self.shed += 1
            self._refuse(reply, self._refusal(tenant, refused))
            return
        task = asyncio.create_task(self._serve(parts, reply, data, headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse(self, reply: bytes, body: bytes) -> None:
        """Answer a refused request after the delay (at once past ``_MAX_HELD`` waiting)."""
        if self._delay <= 0 or len(self._held) >= _MAX_HELD:
            self._answer(reply, body)
            return
        loop = asyncio.get_running_loop()
        self._held.append((loop.time() + self._delay, reply, body))
        if self._timer is None:
            self._timer = loop.call_at(self._held[0][0], self._release)

    def _release(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._held and self._held[0][0] <= now:
            _, reply, body = self._held.popleft()
            self._answer(reply, body)
        if self._held:
            self._timer = loop.call_at(self._held[0][0], self._release)

    def _release_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._held:
            _, reply, body = self._held.popleft()
            self._answer(reply, body)

    def _refusal(self, tenant: str, refused: Refusal) -> bytes:
        """The reply to a request not admitted (encoded once per tenant and limit)."""
        key = (tenant if refused.tenant else "", refused.tenant, refused.limit)
        body = self._refusals.get(key)
        if body is None:
            if len(self._refusals) > 10_000:
                self._refusals.clear()
            body = self._refusals[key] = _failure(
                "unavailable", refused.message(tenant), retryable=True
            )
        return body

    async def _serve(
        self, parts: tuple[str, str, str], reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        # headers matter only to tracing (a caller's traceparent): parsed only when it is on
        trace = parse_headers(headers) if headers and tracing_enabled() else None
        handled = self._handler(*parts, data, trace)
        metered = Metered(handled) if self.admission.meter() else None
        try:
            body = await (handled if metered is None else metered)
        except Exception:  # the handler answers every failure itself; this is a bug's net
            log.exception("trigger handler failed on %s.%s.%s", *parts)
            body = INTERNAL
        finally:
            self.admission.leave(parts[0], None if metered is None else metered.seconds)
        self._answer(reply, body)

    def _answer(self, reply: bytes, body: bytes) -> None:
        try:
            self._nats.publish(reply, body)
        except Exception:  # the connection may be gone; the caller will time out and retry
            log.exception("could not answer a trigger request (reply subject %r)", reply)
