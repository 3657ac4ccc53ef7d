"""What a trigger decision leaves behind, stored before the reply is given: its decision
record (``service.encoding.encode_record``), one message on a lane's audit stream
(``GATEHOOK_AUDIT`` with one lane; ``audit.stream``) whose message id is the request's
key. The stream's duplicate window is the idempotency window: a retry's record is refused as
a duplicate, the ack names the sequence of the record stored first, and that record's reply
is the retry's.

The record is acknowledged through one lean inbox subscription of this worker
(``_INBOX.<id>.<seq>``, under the connection's inbox prefix; ``transport.lean``), read
without building a message or an ack object; the publishes are lean too (one socket write
per loop turn). The request's deadline is kept on the shared ``Deadlines`` timer. nats-py's
``publish_async`` does the same job with a ``wait_for`` task, a random token, a JSON parse
and a dataclass per message; on the decision path that cost more than the decision
(BENCHMARKS.md, "The decision path's cost").

With several lanes a request's key picks its home lane. A stream takes writes only through
its Raft leader, and a cluster needs 4-9 s to elect a new one when the leader's node dies;
so a record not acknowledged within ``failover_ms`` is sent, with the same message id, to
the next lane, and its first lane is marked down: new records skip it until its stream
answers with a leader again. A record that failed over is written to its home lane too
before that lane is used again, so that a retry of the request finds it there (the audit
stream, which sources every lane, keeps one copy: it deduplicates on the message id).

The rare cases leave the fast path: a duplicate (a retry: the first record is read back), a
stream that has gone (created again, the record published once more through the adapters in
``audit.stream``), an error ack.
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

from gatehook.audit.stream import AuditPublisher
from gatehook.errors import GatehookError, TransportError
from gatehook.process.deadlines import Deadline, Deadlines
from gatehook.service.ports import EncodedEvent
from gatehook.transport.lean import LeanNats, status_of

__all__ = ["JsJournal", "Lane"]

log = logging.getLogger("gatehook.audit")

_NO_RESPONDERS = b"503"
_PROBE_S = 0.2  # how often a lane marked down is asked whether it answers again
_PROBE_TIMEOUT_S = 1.0
_MAX_WRITE_BACKS = 100_000  # records waiting for their home lane, per lane


@dataclass(slots=True, eq=False)
class Lane:
    """One audit stream the decision path writes its records to."""

    index: int
    stream: str
    audit_prefix: str  # the records' subjects: this, then ``<tenant>.flow.decided``
    down: bool = False
    # records that failed over away from this lane, written here before it is used again
    write_backs: dict[str, EncodedEvent] = field(default_factory=dict)
    watch: asyncio.Task[None] | None = None

    def event_subject(self, record: EncodedEvent) -> bytes:
        """Where ``record`` is written on this lane (``<prefix><tenant>.<type>``)."""
        return f"{self.audit_prefix}{record.tenant}.{record.type}".encode()


@dataclass(slots=True, eq=False)
class _Batch:
    future: asyncio.Future[bytes | None]
    record: EncodedEvent
    home: int
    lane: int = 0  # the lane of the attempt in flight
    tried: list[int] = field(default_factory=list)
    stored_on: list[int] = field(default_factory=list)  # lanes where the record is new
    seq: int = 0  # the publish in flight (this worker's ack inbox)
    first: int = 0  # a duplicate: the stream sequence of the record stored first
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
        self._waiting: dict[int, _Batch] = {}
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
        """ChildScripts skipped right now (not acknowledging; probed until they answer)."""
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
        for batch in list(self._waiting.values()):
            self._fail(batch, TransportError("the audit stream did not acknowledge in time"))
        for task in list(self._repairs):
            task.cancel()
        for lane in self._lanes:
            if lane.watch is not None:
                lane.watch.cancel()
                lane.watch = None

    def record(self, record: EncodedEvent, deadline: float) -> asyncio.Future[bytes | None]:
        """Publish ``record``; the future resolves when its stream has stored it: to the
        record stored first under its id when this request is a retry, else ``None``. It
        fails with ``TransportError`` if that does not happen by ``deadline``
        (``time.monotonic()``) or the stream refuses."""
        loop = asyncio.get_running_loop()
        home = zlib.crc32(record.event_id.encode()) % len(self._lanes) if self._multi else 0
        batch = _Batch(loop.create_future(), record, home)
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
        batch.duplicate = batch.no_stream = False
        batch.error = None
        if self._multi:
            batch.failover = self._deadlines.at(
                time.monotonic() + self._failover_s, lambda: self._fail_over(batch)
            )
        record = batch.record
        try:
            self._send(batch, lane.event_subject(record), record.event_id, record.data)
        except Exception as exc:  # the connection is closed or draining
            self._fail(batch, TransportError(f"audit stream unavailable: {exc!r}"))

    def _send(self, batch: _Batch, subject: bytes, msg_id: str, data: bytes) -> None:
        """One lean publish. ``subject`` and ``msg_id`` are built by this worker from
        checked parts (tenant slugs, catalogue names, hex ids): no space or line break."""
        self._seq += 1
        seq = self._seq
        self._waiting[seq] = batch
        batch.seq = seq
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
        batch = self._waiting.pop(seq, None)
        if batch is None:
            return  # late: the request gave up already, or failed over
        if headers and status_of(headers) == _NO_RESPONDERS:
            batch.no_stream = True
        elif b'"error"' in data:
            try:
                error = orjson.loads(data).get("error") or {}
            except orjson.JSONDecodeError:
                error = {"description": data[:200].decode(errors="replace")}
            batch.error = str(error.get("description") or error)
        elif b'"duplicate"' in data:
            ack = orjson.loads(data)
            batch.duplicate = bool(ack.get("duplicate"))
            batch.first = int(ack.get("seq") or 0)
        if not (batch.no_stream or batch.error or batch.duplicate):
            batch.stored_on.append(batch.lane)
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
                self._write_back(self._lanes[batch.home], batch.record)

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
        self._waiting.pop(batch.seq, None)
        self._attempt(batch, index)

    def _mark_down(self, lane: Lane) -> None:
        if not lane.down:
            lane.down = True
            log.warning(
                "audit lane %d (%s) did not acknowledge within %.0f ms: its writes go to the"
                " next lane until its stream answers with a leader",
                lane.index,
                lane.stream,
                self._failover_s * 1000,
            )
        self._watch(lane)

    def _write_back(self, lane: Lane, record: EncodedEvent) -> None:
        if len(lane.write_backs) >= _MAX_WRITE_BACKS:
            if not self.write_backs_dropped:
                log.warning(
                    "audit lane %d has %d records waiting to be written back: further ones"
                    " are dropped (a retry of their request is decided again)",
                    lane.index,
                    _MAX_WRITE_BACKS,
                )
            self.write_backs_dropped += 1
            return
        lane.write_backs[record.event_id] = record
        self._watch(lane)

    def _watch(self, lane: Lane) -> None:
        if lane.watch is None:
            lane.watch = asyncio.create_task(self._watch_lane(lane))

    async def _watch_lane(self, lane: Lane) -> None:
        """Probe ``lane`` until its stream answers with a leader, write back the records
        that failed over away from it, then take it into use again."""
        try:
            while True:
                await asyncio.sleep(_PROBE_S)
                try:
                    if await self._audit.lane_answers(
                        lane.index, _PROBE_TIMEOUT_S
                    ) and await self._flush_write_backs(lane):
                        break
                except GatehookError as exc:
                    log.debug("lane %d probe: %s", lane.index, exc)
            if lane.down:
                log.warning("audit lane %d answers again", lane.index)
            lane.down = False
        finally:
            lane.watch = None

    async def _flush_write_backs(self, lane: Lane) -> bool:
        """Write the lane's pending records (their message ids make one that did get stored
        count once); False if one is not acknowledged."""
        while lane.write_backs:
            chunk = list(lane.write_backs.values())[:64]
            done = await asyncio.gather(
                *(
                    asyncio.wait_for(
                        self._audit.publish_encoded([r], lane.audit_prefix),
                        _PROBE_TIMEOUT_S,
                    )
                    for r in chunk
                ),
                return_exceptions=True,
            )
            for record, result in zip(chunk, done, strict=True):
                if isinstance(result, BaseException):
                    return False
                lane.write_backs.pop(record.event_id, None)
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

    async def _republish(self, batch: _Batch) -> bytes | None:
        """The stream was missing: the adapters create it again and publish once more (the
        message id makes a record that did get stored the first time count once)."""
        await self._audit.publish_encoded([batch.record])
        return None

    async def _read_first(self, batch: _Batch) -> bytes | None:
        return await self._audit.read(self._lanes[batch.lane].stream, batch.first)

    def _expire(self, batch: _Batch) -> None:
        self._fail(batch, TransportError("the audit stream did not acknowledge in time"))

    def _fail(self, batch: _Batch, exc: GatehookError) -> None:
        # A record stored before the failure stays: it is the audit of what ran, and a retry
        # of the request is answered from it.
        self._waiting.pop(batch.seq, None)
        if batch.timer is not None:
            batch.timer.cancel()
        if batch.failover is not None:
            batch.failover.cancel()
        if not batch.future.done():
            batch.future.set_exception(exc)
