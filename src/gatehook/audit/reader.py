"""Reading the audit stream with ephemeral ordered consumers: forward from a time
(``gatehook audit tail``), or the latest events backwards in growing windows (the console).

A decision record (``flow.decided``) is read as its ``flow.action_executed`` events, so
readers see every action run as its own event, as they always have (and events written
before decisions were stored as records read the same).

Forward reads need only what deploy/nats.conf gives a tenant's audit role: creating a
consumer filtered on its own tenant's subjects, its own inbox, and flow control."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TypeVar

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from gatehook.domain import subjects
from gatehook.domain.contract import DECIDED, AuditEvent, DecisionRecord

__all__ = [
    "events_of",
    "latest_events",
    "latest_records",
    "read_events",
    "records_of",
    "subject_filter",
]

T = TypeVar("T")

_EXECUTED = "flow.action_executed"
_RECORD = b'"type":"' + DECIDED.encode() + b'"'  # as orjson writes it: no spaces


def _name() -> str:
    """A new ephemeral consumer's name. Named, a consumer is created on
    ``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>``, the form whose subject carries the
    filter: a tenant's audit role is allowed exactly its own tenant's filter there
    (deploy/nats.conf), and the server refuses a request whose body asks for another."""
    return "gh-read-" + uuid.uuid4().hex[:16]


def subject_filter(tenant: str | None, event_type: str | None) -> str:
    """The stream subject for a tenant and an event type (either may be all). Action runs
    are in decision records, and in events of their own before those: both are under
    ``flow.``, and ``events_of`` keeps the type asked for."""
    return subjects.audit_filter(tenant, "flow.>" if event_type == _EXECUTED else event_type)


def events_of(data: bytes, event_type: str | None = None) -> list[AuditEvent]:
    """The audit events a stream message holds: a decision record's executions, or the
    event itself; of ``event_type`` only when given. What is not ours (or an older format)
    holds none: a reader skips it, never crashes."""
    events: list[AuditEvent] = []
    try:
        if _RECORD in data:
            events = DecisionRecord.model_validate_json(data).events()
    except ValidationError:
        pass  # an event that mentions the type in its details: read as an event
    if not events:
        try:
            events = [AuditEvent.model_validate_json(data)]
        except ValidationError:
            return []
    return [e for e in events if event_type is None or e.type == event_type]


def records_of(data: bytes) -> list[DecisionRecord]:
    """The decision record a stream message holds, whole (none for anything else)."""
    if _RECORD not in data:
        return []
    try:
        return [DecisionRecord.model_validate_json(data)]
    except ValidationError:
        return []


async def read_events(
    js: JetStreamContext,
    *,
    tenant: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    follow: bool = False,
    stream: str = "GATEHOOK_AUDIT",
    idle_s: float = 1.0,
) -> AsyncIterator[AuditEvent]:
    """Events in stream order from ``since``; stops when caught up unless ``follow``."""
    config = ConsumerConfig(
        name=_name(),
        deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL,
        opt_start_time=since,
    )
    sub = await js.subscribe(
        subject_filter(tenant, event_type), ordered_consumer=True, config=config, stream=stream
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_s)
            except TimeoutError:
                if follow:
                    continue
                return
            for event in events_of(msg.data, event_type):
                if until is not None and event.at > until:
                    return
                yield event
    finally:
        await sub.unsubscribe()


async def _read_range(
    js: JetStreamContext,
    subject: str,
    parse: Callable[[bytes], list[T]],
    stream: str,
    start: int,
    upper: int,
    idle_s: float,
) -> list[T]:
    """What ``parse`` finds in the messages on ``subject`` with stream sequence in [start,
    upper]. The filter runs on the server (other tenants' events in the window are never
    sent), and a match at ``upper`` or later exists, so the read ends on a sequence number,
    not on a timeout."""
    config = ConsumerConfig(
        name=_name(), deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
    )
    sub = await js.subscribe(subject, ordered_consumer=True, config=config, stream=stream)
    found: list[T] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_s)
            except TimeoutError:
                return found
            meta = msg.metadata
            if meta.sequence.stream > upper:
                return found
            found.extend(parse(msg.data))
            if meta.sequence.stream == upper or meta.num_pending == 0:
                return found
    finally:
        await sub.unsubscribe()


async def latest_events(
    js: JetStreamContext,
    *,
    tenant: str | None = None,
    event_type: str | None = None,
    limit: int = 200,
    keep: Callable[[AuditEvent], bool] | None = None,
    stream: str = "GATEHOOK_AUDIT",
    max_scan: int = 1_000_000,
    idle_s: float = 2.0,
) -> list[AuditEvent]:
    """The newest ``limit`` events (oldest first) that match, without reading the stream from
    its start: from the newest matching message, windows of sequence numbers are read
    backwards, each four times the last, until enough match or ``max_scan`` sequence numbers
    were looked at. When few events match in the whole stream (the server counts them per
    subject), one filtered read from the start is cheaper, and is what happens."""

    def parse(data: bytes) -> list[AuditEvent]:
        return events_of(data, event_type)

    subject = subject_filter(tenant, event_type)
    return await _latest(js, subject, parse, limit, keep, stream, max_scan, idle_s)


async def latest_records(
    js: JetStreamContext,
    *,
    tenant: str | None = None,
    limit: int = 20,
    keep: Callable[[DecisionRecord], bool] | None = None,
    stream: str = "GATEHOOK_AUDIT",
    max_scan: int = 1_000_000,
    idle_s: float = 2.0,
) -> list[DecisionRecord]:
    """The newest ``limit`` decision records (oldest first) that match, whole: the decision,
    its reason and every execution (read as ``latest_events`` reads)."""
    subject = subject_filter(tenant, DECIDED)
    return await _latest(js, subject, records_of, limit, keep, stream, max_scan, idle_s)


async def _latest(
    js: JetStreamContext,
    subject: str,
    parse: Callable[[bytes], list[T]],
    limit: int,
    keep: Callable[[T], bool] | None,
    stream: str,
    max_scan: int,
    idle_s: float,
) -> list[T]:
    try:
        newest = await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return []
    state = (await js.stream_info(stream, subjects_filter=subject)).state
    first, upper = max(state.first_seq, 1), newest.seq or 0
    matching = sum((state.subjects or {}).values())
    if matching <= 4 * limit:
        # Few messages match in the whole stream: one filtered read from the start is cheapest.
        found = await _read_range(js, subject, parse, stream, first, upper, idle_s)
        return [x for x in found if keep is None or keep(x)][-limit:]
    kept: list[T] = []
    window, scanned = max(limit * 4, 256), 0
    while upper >= first and len(kept) < limit and scanned < max_scan:
        start = max(first, upper - window + 1)
        found = await _read_range(js, subject, parse, stream, start, upper, idle_s)
        kept = [x for x in found if keep is None or keep(x)] + kept
        scanned += upper - start + 1
        upper, window = start - 1, window * 4
    return kept[-limit:]
