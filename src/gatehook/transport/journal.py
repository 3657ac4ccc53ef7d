"""What a trigger decision leaves behind, stored before the reply is given: the reply record
(idempotency) on ``GATEHOOK_REPLIES`` and the audit events on ``GATEHOOK_AUDIT``.

One request's messages go out together and are acknowledged by the streams together: one
future per request, resolved when the last ack arrives. Acks come to one lean inbox
subscription of this worker (``_INBOX.<id>.<seq>``, under the connection's inbox prefix;
``transport.lean``) and are read without building a message or an ack object; the publishes
are lean too (one socket write per loop turn). The request's deadline is kept on the shared
``Deadlines`` timer. nats-py's ``publish_async`` does the same job with a ``wait_for`` task,
a random token, a JSON parse and a dataclass per message; on the decision path that cost more than
the decision (BENCHMARKS.md).

The rare cases leave the fast path: a duplicate reply record (a retry: the first reply is
read back), a stream that has gone (created again, the request published once more through
the adapters in ``transport.jetstream``), an error ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.aio.subscription import Subscription

from gatehook.errors import GatehookError, TransportError
from gatehook.process.deadlines import Deadline, Deadlines
from gatehook.service.ports import EncodedEvent
from gatehook.transport.jetstream import AuditPublisher, JsReplyStore
from gatehook.transport.lean import LeanNats, status_of

__all__ = ["JsJournal"]

log = logging.getLogger("gatehook.audit")

_NO_RESPONDERS = b"503"


@dataclass(slots=True)
class _Batch:
    future: asyncio.Future[bytes | None]
    key: str
    reply: bytes
    events: list[EncodedEvent]
    remaining: int
    seqs: list[int] = field(default_factory=list)
    duplicate: bool = False
    no_stream: bool = False
    stored_reply: bool = False  # the reply record is new in the stream (not a retry's)
    error: str | None = None
    timer: Deadline | None = None


class JsJournal:
    """``Journal`` on JetStream: ``record`` publishes, the returned future says it is stored."""

    def __init__(
        self,
        nats: LeanNats,
        replies: JsReplyStore,
        audit: AuditPublisher,
        deadlines: Deadlines,
    ) -> None:
        self._nats = nats
        self._replies = replies
        self._audit = audit
        self._deadlines = deadlines
        self._prefix = b""
        self._sub: Subscription | None = None
        self._seq = 0
        self._waiting: dict[int, tuple[_Batch, int]] = {}
        self._repairs: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Messages published and not acknowledged yet."""
        return len(self._waiting)

    async def start(self) -> None:
        """Subscribe to this worker's ack inbox."""
        # under the connection's inbox prefix: what a worker's NATS permissions let it read
        inbox = self._nats.client.new_inbox() + "."
        self._prefix = inbox.encode()
        self._sub = await self._nats.subscribe(inbox + "*", self._on_ack)

    async def aclose(self) -> None:
        """Stop taking acks; requests still waiting fail as unacknowledged."""
        if self._sub is not None:
            await self._nats.unsubscribe(self._sub)
        self._sub = None
        for batch, _ in list(self._waiting.values()):
            self._fail(batch, TransportError("the audit stream did not acknowledge in time"))
        for task in list(self._repairs):
            task.cancel()

    def record(
        self, key: str, reply: bytes, events: list[EncodedEvent], deadline: float
    ) -> asyncio.Future[bytes | None]:
        """Publish the reply record and ``events``; the future resolves when the streams have
        stored all of them: to the reply stored first for ``key`` when this request is a
        retry, else ``None``. It fails with ``TransportError`` if that does not happen by
        ``deadline`` (loop time) or a stream refuses."""
        loop = asyncio.get_running_loop()
        batch = _Batch(loop.create_future(), key, reply, events, 1 + len(events))
        batch.timer = self._deadlines.at(deadline, lambda: self._expire(batch))
        try:
            self._send(batch, JsReplyStore.subject(key), key, reply, 0)
            for index, event in enumerate(events, 1):
                self._send(batch, event.subject, event.event_id, event.data, index)
        except Exception as exc:  # the connection is closed or draining
            self._fail(batch, TransportError(f"audit stream unavailable: {exc!r}"))
        return batch.future

    def _send(self, batch: _Batch, subject: str, msg_id: str, data: bytes, index: int) -> None:
        """One lean publish. ``subject`` and ``msg_id`` are built by this worker from
        checked parts (tenant slugs, catalogue names, hex ids): no space or line break."""
        self._seq += 1
        seq = self._seq
        self._waiting[seq] = (batch, index)
        batch.seqs.append(seq)
        self._nats.publish(
            subject.encode(),
            data,
            reply=b"%s%d" % (self._prefix, seq),
            headers=b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode(),
        )

    def _on_ack(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        try:
            seq = int(subject[len(self._prefix) :])
        except ValueError:
            return
        waiting = self._waiting.pop(seq, None)
        if waiting is None:
            return  # late: the request gave up already
        batch, index = waiting
        if headers and status_of(headers) == _NO_RESPONDERS:
            batch.no_stream = True
        elif b'"error"' in data:
            try:
                error = orjson.loads(data).get("error") or {}
            except orjson.JSONDecodeError:
                error = {"description": data[:200].decode(errors="replace")}
            batch.error = str(error.get("description") or error)
        elif index == 0:
            batch.duplicate = b'"duplicate"' in data and bool(orjson.loads(data).get("duplicate"))
            batch.stored_reply = not batch.duplicate
        batch.remaining -= 1
        if batch.remaining == 0:
            self._settle(batch)

    def _settle(self, batch: _Batch) -> None:
        if batch.future.done():
            return
        if batch.no_stream:
            self._repair(batch, self._republish(batch))
        elif batch.error is not None:
            self._fail(batch, TransportError(f"audit stream refused: {batch.error}"))
        elif batch.duplicate:
            self._repair(batch, self._read_first(batch))
        else:
            if batch.timer is not None:
                batch.timer.cancel()
            batch.future.set_result(None)

    def _repair(self, batch: _Batch, work: Coroutine[Any, Any, bytes | None]) -> None:
        async def run() -> None:
            try:
                result = await work
            except GatehookError as exc:
                self._fail(batch, exc)
            except Exception as exc:
                self._fail(batch, TransportError(f"audit stream unavailable: {exc!r}"))
            else:
                if not batch.future.done():
                    if batch.timer is not None:
                        batch.timer.cancel()
                    batch.future.set_result(result)

        task = asyncio.create_task(run())
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    def _forget(self, key: str) -> None:
        """The decision was not given after all: drop its reply record (best effort), so a
        retry decides afresh instead of being handed a reply nobody received."""
        task = asyncio.create_task(self._replies.forget(key))
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    async def _republish(self, batch: _Batch) -> bytes | None:
        """A stream was missing: the adapters create it again and publish once more (the
        message ids make whatever did get stored the first time count once)."""
        if batch.events:
            await self._audit.publish_encoded(batch.events)
        return await self._replies.remember(batch.key, batch.reply)

    async def _read_first(self, batch: _Batch) -> bytes | None:
        return await self._replies.first(batch.key)

    def _expire(self, batch: _Batch) -> None:
        self._fail(batch, TransportError("the audit stream did not acknowledge in time"))

    def _fail(self, batch: _Batch, exc: GatehookError) -> None:
        for seq in batch.seqs:
            self._waiting.pop(seq, None)
        if batch.timer is not None:
            batch.timer.cancel()
        if not batch.future.done():
            batch.future.set_exception(exc)
            if batch.stored_reply:
                self._forget(batch.key)
