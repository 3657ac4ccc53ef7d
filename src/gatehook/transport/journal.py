"""What a trigger decision leaves behind, stored before the reply is given: the reply record
(idempotency) and the audit events, on a lane's streams (``GATEHOOK_REPLIES`` and
``GATEHOOK_AUDIT`` with one lane; ``transport.jetstream``).

One request's messages go out together and are acknowledged by the streams together: one
future per request, resolved when the last ack arrives. Acks come to one lean inbox
subscription of this worker (``_INBOX.<id>.<seq>``, under the connection's inbox prefix;
``transport.lean``) and are read without building a message or an ack object; the publishes
are lean too (one socket write per loop turn). The request's deadline is kept on the shared
``Deadlines`` timer. nats-py's ``publish_async`` does the same job with a ``wait_for`` task,
a random token, a JSON parse and a dataclass per message; on the decision path that cost more than
the decision (BENCHMARKS.md, "The decision path's cost").

With several lanes a request's key picks its home lane. A stream takes writes only through its
Raft leader, and a cluster needs 4-9 s to elect a new one when the leader's node dies; so a
batch not fully acknowledged within ``failover_ms`` is sent whole, with the same message ids,
to the next lane, and its first lane is marked down: new batches skip it until both its
streams answer with a leader again. A reply record that failed over is written back to its
home lane before that lane is used again, so that a retry of the request finds it there.

The rare cases leave the fast path: a duplicate reply record (a retry: the first reply is
read back), a stream that has gone (created again, the request published once more through
the adapters in ``transport.jetstream``), an error ack.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.aio.subscription import Subscription

from gatehook.errors import GatehookError, TransportError
from gatehook.process.deadlines import Deadline, Deadlines
from gatehook.service.ports import EncodedEvent
from gatehook.transport.jetstream import AUDIT_PREFIX, AuditPublisher, JsReplyStore
from gatehook.transport.lean import LeanNats, status_of

__all__ = ["JsJournal", "Lane"]

log = logging.getLogger("gatehook.audit")

_NO_RESPONDERS = b"503"
_PROBE_S = 0.2  # how often a lane marked down is asked whether it answers again
_PROBE_TIMEOUT_S = 1.0
_MAX_WRITE_BACKS = 100_000  # reply records waiting for their home lane, per lane
_CUT = len(AUDIT_PREFIX)


@dataclass(slots=True, eq=False)
class Lane:
    """One pair of streams the decision path writes to: the reply records' and the audit
    events'."""

    index: int
    replies: JsReplyStore
    audit_prefix: str  # the events' subjects: this, then ``<tenant>.<event>``
    down: bool = False
    # reply records that failed over away from this lane, written back before it is used again
    write_backs: dict[str, bytes] = field(default_factory=dict)
    watch: asyncio.Task[None] | None = None

    def event_subject(self, subject: str) -> bytes:
        """An event's subject (``gatehook.v1.audit.<tenant>.<event>``) on this lane."""
        if self.audit_prefix == AUDIT_PREFIX:
            return subject.encode()
        return (self.audit_prefix + subject[_CUT:]).encode()


@dataclass(slots=True, eq=False)
class _Batch:
    future: asyncio.Future[bytes | None]
    key: str
    reply: bytes
    events: list[EncodedEvent]
    home: int
    remaining: int = 0
    lane: int = 0  # the lane of the attempt in flight
    tried: list[int] = field(default_factory=list)
    stored_on: list[int] = field(default_factory=list)  # lanes where the record is new
    seqs: list[int] = field(default_factory=list)
    duplicate: bool = False
    no_stream: bool = False
    error: str | None = None
    timer: Deadline | None = None
    failover: Deadline | None = None


class JsJournal:
    """``Journal`` on JetStream: ``record`` publishes, the returned future says it is stored."""

    def __init__(
        self,
        nats: LeanNats,
        lanes: list[Lane],
        audit: AuditPublisher,
        deadlines: Deadlines,
        failover_s: float = 0.25,
    ) -> None:
        if not lanes:
            raise ValueError("a journal needs at least one lane")
        self._nats = nats
        self._lanes = lanes
        self._multi = len(lanes) > 1
        self._audit = audit
        self._deadlines = deadlines
        self._failover_s = failover_s
        self._prefix = b""
        self._sub: Subscription | None = None
        self._seq = 0
        self._waiting: dict[int, tuple[_Batch, int]] = {}
        self._repairs: set[asyncio.Task[None]] = set()
        self.failovers = 0  # batches sent to another lane
        self.write_backs_dropped = 0

    @property
    def pending(self) -> int:
        """Messages published and not acknowledged yet."""
        return len(self._waiting)

    @property
    def lanes(self) -> list[Lane]:
        """The lanes, in order."""
        return self._lanes

    @property
    def lanes_down(self) -> int:
        """Lanes skipped right now (not acknowledging; probed until they answer)."""
        return sum(1 for lane in self._lanes if lane.down)

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
        for lane in self._lanes:
            if lane.watch is not None:
                lane.watch.cancel()
                lane.watch = None

    def record(
        self, key: str, reply: bytes, events: list[EncodedEvent], deadline: float
    ) -> asyncio.Future[bytes | None]:
        """Publish the reply record and ``events``; the future resolves when the streams have
        stored all of them: to the reply stored first for ``key`` when this request is a
        retry, else ``None``. It fails with ``TransportError`` if that does not happen by
        ``deadline`` (``time.monotonic()``) or a stream refuses."""
        loop = asyncio.get_running_loop()
        home = zlib.crc32(key.encode()) % len(self._lanes) if self._multi else 0
        batch = _Batch(loop.create_future(), key, reply, events, home)
        batch.timer = self._deadlines.at(deadline, lambda: self._expire(batch))
        self._attempt(batch, self._pick(home, batch.tried) if self._multi else 0)
        return batch.future

    def _pick(self, home: int, tried: list[int]) -> int:
        """The first lane from ``home`` on that is not down and not tried; failing that the
        first not tried (down, but perhaps back already); -1 when every lane was tried."""
        n = len(self._lanes)
        fallback = -1
        for offset in range(n):
            index = (home + offset) % n
            if index in tried:
                continue
            if not self._lanes[index].down:
                return index
            if fallback < 0:
                fallback = index
        return fallback

    def _attempt(self, batch: _Batch, index: int) -> None:
        lane = self._lanes[index]
        batch.lane = index
        batch.tried.append(index)
        batch.remaining = 1 + len(batch.events)
        batch.duplicate = batch.no_stream = False
        batch.error = None
        if self._multi:
            batch.failover = self._deadlines.at(
                time.monotonic() + self._failover_s, lambda: self._fail_over(batch)
            )
        try:
            key = batch.key
            self._send(batch, lane.replies.subject(key).encode(), key, batch.reply, 0)
            for position, event in enumerate(batch.events, 1):
                subject = lane.event_subject(event.subject)
                self._send(batch, subject, event.event_id, event.data, position)
        except Exception as exc:  # the connection is closed or draining
            self._fail(batch, TransportError(f"audit stream unavailable: {exc!r}"))

    def _send(self, batch: _Batch, subject: bytes, msg_id: str, data: bytes, index: int) -> None:
        """One lean publish. ``subject`` and ``msg_id`` are built by this worker from
        checked parts (tenant slugs, catalogue names, hex ids): no space or line break."""
        self._seq += 1
        seq = self._seq
        self._waiting[seq] = (batch, index)
        batch.seqs.append(seq)
        self._nats.publish(
            subject,
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
            return  # late: the request gave up already, or failed over
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
            if not batch.duplicate:
                batch.stored_on.append(batch.lane)
        batch.remaining -= 1
        if batch.remaining == 0:
            self._settle(batch)

    def _settle(self, batch: _Batch) -> None:
        if batch.future.done():
            return
        if batch.failover is not None:
            batch.failover.cancel()
        if batch.no_stream:
            if self._multi:
                self._fail_over(batch)  # the lane's watch creates the stream again
            else:
                self._repair(batch, self._republish(batch))
        elif batch.error is not None:
            self._fail(batch, TransportError(f"audit stream refused: {batch.error}"))
        elif batch.duplicate:
            self._repair(batch, self._read_first(batch))
        else:
            if batch.timer is not None:
                batch.timer.cancel()
            batch.future.set_result(None)
            if batch.lane != batch.home and batch.lane in batch.stored_on:
                self._write_back(self._lanes[batch.home], batch.key, batch.reply)

    # -- lanes --------------------------------------------------------------------------------
    def _fail_over(self, batch: _Batch) -> None:
        """``batch`` was not acknowledged in time on its lane: send it whole to the next."""
        if batch.future.done():
            return
        self._mark_down(self._lanes[batch.lane])
        index = self._pick(batch.home, batch.tried)
        if index < 0:
            return  # every lane tried: the acks of this attempt may still come
        self.failovers += 1
        for seq in batch.seqs:
            self._waiting.pop(seq, None)
        batch.seqs.clear()
        self._attempt(batch, index)

    def _mark_down(self, lane: Lane) -> None:
        if not lane.down:
            lane.down = True
            log.warning(
                "audit lane %d (%s) did not acknowledge within %.0f ms: its writes go to the"
                " next lane until both its streams answer with a leader",
                lane.index,
                lane.replies.stream,
                self._failover_s * 1000,
            )
        self._watch(lane)

    def _write_back(self, lane: Lane, key: str, reply: bytes) -> None:
        if len(lane.write_backs) >= _MAX_WRITE_BACKS:
            if not self.write_backs_dropped:
                log.warning(
                    "audit lane %d has %d reply records waiting to be written back: further"
                    " ones are dropped (a retry of their request is decided again)",
                    lane.index,
                    _MAX_WRITE_BACKS,
                )
            self.write_backs_dropped += 1
            return
        lane.write_backs[key] = reply
        self._watch(lane)

    def _watch(self, lane: Lane) -> None:
        if lane.watch is None:
            lane.watch = asyncio.create_task(self._watch_lane(lane))

    async def _watch_lane(self, lane: Lane) -> None:
        """Probe ``lane`` until both its streams answer with a leader, write back the reply
        records that failed over away from it, then take it into use again."""
        try:
            while True:
                await asyncio.sleep(_PROBE_S)
                try:
                    if (
                        await lane.replies.answers(_PROBE_TIMEOUT_S)
                        and await self._audit.lane_answers(lane.index, _PROBE_TIMEOUT_S)
                        and await self._flush_write_backs(lane)
                    ):
                        break
                except GatehookError as exc:
                    log.debug("lane %d probe: %s", lane.index, exc)
            if lane.down:
                log.warning("audit lane %d answers again", lane.index)
            lane.down = False
        finally:
            lane.watch = None

    async def _flush_write_backs(self, lane: Lane) -> bool:
        """Write the lane's pending reply records (their message ids make one that did get
        stored count once); False if one is not acknowledged."""
        while lane.write_backs:
            chunk = list(lane.write_backs.items())[:64]
            done = await asyncio.gather(
                *(
                    asyncio.wait_for(lane.replies.remember(key, reply), _PROBE_TIMEOUT_S)
                    for key, reply in chunk
                ),
                return_exceptions=True,
            )
            for (key, _), result in zip(chunk, done, strict=True):
                if isinstance(result, BaseException):
                    return False
                lane.write_backs.pop(key, None)
        return True

    # -- the rare cases -----------------------------------------------------------------------
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

        self._background(run())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    def _forget(self, batch: _Batch) -> None:
        """The decision was not given after all: drop its reply record (best effort), so a
        retry decides afresh instead of being handed a reply nobody received."""
        self._lanes[batch.home].write_backs.pop(batch.key, None)
        for index in batch.stored_on:
            self._background(self._lanes[index].replies.forget(batch.key))

    async def _republish(self, batch: _Batch) -> bytes | None:
        """A stream was missing: the adapters create it again and publish once more (the
        message ids make whatever did get stored the first time count once)."""
        if batch.events:
            await self._audit.publish_encoded(batch.events)
        return await self._lanes[0].replies.remember(batch.key, batch.reply)

    async def _read_first(self, batch: _Batch) -> bytes | None:
        return await self._lanes[batch.lane].replies.first(batch.key)

    def _expire(self, batch: _Batch) -> None:
        self._fail(batch, TransportError("the audit stream did not acknowledge in time"))

    def _fail(self, batch: _Batch, exc: GatehookError) -> None:
        for seq in batch.seqs:
            self._waiting.pop(seq, None)
        if batch.timer is not None:
            batch.timer.cancel()
        if batch.failover is not None:
            batch.failover.cancel()
        if not batch.future.done():
            batch.future.set_exception(exc)
            if batch.stored_on:
                self._forget(batch)
