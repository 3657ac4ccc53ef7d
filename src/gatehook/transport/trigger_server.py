"""The lean trigger path: a raw nats-py queue subscription on the broker's own connection.

Measured on 2 cores (benchmarks/run.py, BENCHMARKS.md): FastStream's subscriber machinery
(dependency resolution, anyio checkpoints, thread hops) cost more per trigger request than
the whole decision. The trigger subject is therefore served here, with the same connection,
queue group and settings; FastStream keeps the management API and the change broadcast.
``GATEHOOK_TRIGGER_TRANSPORT=faststream`` switches back, for comparison.

nats-py runs a subscription's callback one message at a time, so each request becomes a
task; at most ``concurrency`` run at once, and a request beyond that is shed at once with a
retryable ``unavailable`` reply instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["OVERLOADED", "TriggerServer", "split_subject"]

log = logging.getLogger("gatehook.transport")

Handler = Callable[[str, str, str, bytes, dict[str, str] | None], Awaitable[bytes]]

OVERLOADED = (
    b'{"request_id":null,"decision":null,"error":{"code":"unavailable",'
    b'"message":"worker overloaded; retry","retryable":true}}'
)
CHANGES_SUBJECT = "gatehook.v1.changes.*"
BAD_SUBJECT = (
    b'{"request_id":null,"decision":null,"error":{"code":"bad_request",'
    b'"message":"subject must be gatehook.v1.trigger.<tenant>.<flow_type>.<trigger>",'
    b'"retryable":false}}'
)


def split_subject(subject: str) -> tuple[str, str, str] | None:
    """(tenant, flow type, trigger) of a trigger subject, or None."""
    parts = subject.split(".")
    if len(parts) != 6:
        return None
    return parts[3], parts[4], parts[5]


class TriggerServer:
    """Serves ``gatehook.v1.trigger.*.*.*`` with bounded concurrency and load shedding."""

    def __init__(
        self,
        nc: Client,
        handler: Handler,
        *,
        subject: str,
        queue: str,
        concurrency: int,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._nc = nc
        self._handler = handler
        self._on_change = on_change
        self._changes: Subscription | None = None
        self._subject = subject
        self._queue = queue
        self._limit = concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None
        self.shed = 0

    @property
    def in_flight(self) -> int:
        """Requests being answered now."""
        return len(self._tasks)

    async def start(self) -> None:
        """Subscribe: change broadcasts (every worker), trigger requests (queue group).

        Changes are handled in the callback itself, without awaiting, so a change broadcast
        that reaches this connection before a trigger request is applied before it is served.
        """
        if self._on_change is not None:
            self._changes = await self._nc.subscribe(CHANGES_SUBJECT, cb=self._changed)
        if not self._subject:
            return  # triggers are served elsewhere (GATEHOOK_TRIGGER_TRANSPORT=faststream)
        self._sub = await self._nc.subscribe(
            self._subject,
            queue=self._queue,
            cb=self._on_msg,
            pending_msgs_limit=max(65536, self._limit * 16),
            pending_bytes_limit=256 * 1024 * 1024,
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, then let those in flight finish (bounded by ``timeout``)."""
        for sub in (self._sub, self._changes):
            if sub is not None:
                await sub.unsubscribe()
        self._sub = self._changes = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _changed(self, msg: Msg) -> None:
        if self._on_change is not None:
            self._on_change(msg.subject.rsplit(".", 1)[-1])

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            return  # a publish, not a request: nobody to answer
        if len(self._tasks) >= self._limit:
            self.shed += 1
            await self._nc.publish(msg.reply, OVERLOADED)
            return
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        parts = split_subject(msg.subject)
        try:
            body = (
                BAD_SUBJECT if parts is None else await self._handler(*parts, msg.data, msg.headers)
            )
            await self._nc.publish(msg.reply, body)
        except Exception:  # the connection may be gone; the caller will time out and retry
            log.exception("could not answer a trigger request on %s", msg.subject)
