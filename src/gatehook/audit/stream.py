"""JetStream adapters: the audit stream, its publisher and its reader by sequence.

Audit messages go to ``GATEHOOK_AUDIT`` with ``Nats-Msg-Id`` = their id (an event's id; a
decision record's request key), so the stream drops a second copy within its duplicate
window: a retried request's record, whose ack then names the record stored first.

With several lanes (``GATEHOOK_AUDIT__LANES``) the decision path writes its records to lane
``i``'s stream ``GATEHOOK_AUDIT_<i>`` instead (subjects
``gatehook.v1.lane.<i>.audit.<tenant>.<type>``), and ``GATEHOOK_AUDIT`` sources every lane
with their subjects mapped back to ``gatehook.v1.audit.<tenant>.<type>``. A sourced message
keeps its ``Nats-Msg-Id``, and the audit stream deduplicates on it: a record stored by two
lanes (a write that failed over after its first lane had stored it) is in the audit stream
once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from gatehook.domain import subjects
from gatehook.domain.contract import AuditEvent
from gatehook.errors import GatehookError, TransportError
from gatehook.service.ports import EncodedEvent
from gatehook.settings import AuditSettings

__all__ = [
    "AuditPublisher",
    "encode_event",
    "lane_audit_stream",
    "stream_led",
]

log = logging.getLogger("gatehook.audit")


def lane_audit_stream(settings: AuditSettings, lane: int) -> str:
    """The name of lane ``lane``'s audit stream (the audit stream itself with one lane)."""
    return settings.stream if settings.lanes == 1 else f"{settings.stream}_{lane}"


_JS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, OSError)
_ACK_S = 5.0  # a stream's acknowledgement of a management event or a repaired record


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    """Create a stream, or bring its configuration up to date (idempotent)."""
    assert config.name is not None
    try:
        try:
            await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
            return
        await js.update_stream(config)
    except _JS_ERRORS as exc:
        raise TransportError(f"cannot set up stream {config.name}: {exc!r}") from exc


async def stream_led(
    js: JetStreamContext,
    stream: str,
    timeout: float,
    recreate: Callable[[], Awaitable[None]],
) -> bool:
    """Whether ``stream`` answers within ``timeout`` and has a leader. One found missing (an
    operator deleted it, a store was lost) is created again by ``recreate`` and does not count
    as answering yet."""
    try:
        info = await asyncio.wait_for(js.stream_info(stream), timeout)
    except nats.js.errors.NotFoundError:
        await recreate()
        return False
    except _JS_ERRORS:
        return False
    return info.cluster is None or bool(info.cluster.leader)


def encode_event(event: AuditEvent) -> EncodedEvent:
    """An event as it goes on the stream."""
    return EncodedEvent(event.tenant, event.type, event.event_id, event.model_dump_json().encode())


class AuditPublisher:
    """Publishes audit events and waits until the stream has stored every one."""

    def __init__(self, js: JetStreamContext, settings: AuditSettings) -> None:
        self._js = js
        self._settings = settings
        self._background: set[asyncio.Task[None]] = set()

    def publish_later(self, event: AuditEvent) -> None:
        """Publish ``event`` in the background (shadow runs, circuit changes, where no
        sign-in may wait): nothing waits for it; a failure is logged."""

        async def publish() -> None:
            try:
                await self.publish([event])
            except GatehookError as exc:
                log.error("could not audit %s: %s", event.type, exc)

        task = asyncio.create_task(publish())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settled(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout``) for the events published in the background."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)

    async def ensure_stream(self) -> None:
        """Create the audit stream (and the lanes' audit streams it sources), or bring their
        configuration up to date (idempotent)."""
        s = self._settings
        sources = None
        if s.lanes > 1:
            sources = []
            lanes = []
            for lane in range(s.lanes):
                name = lane_audit_stream(s, lane)
                lanes.append(
                    api.StreamConfig(
                        name=name,
                        subjects=[subjects.lane_audit_prefix(lane, s.lanes) + ">"],
                        storage=api.StorageType.FILE,
                        retention=api.RetentionPolicy.LIMITS,
                        max_age=min(s.lane_max_age_s, s.max_age_s),
                        duplicate_window=s.duplicate_window_s,
                        num_replicas=s.replicas,
                    )
                )
                transform = api.SubjectTransform(
                    src=subjects.lane_audit_prefix(lane, s.lanes) + ">", dest=subjects.AUDIT
                )
                sources.append(api.StreamSource(name=name, subject_transforms=[transform]))
            # at once: each new stream waits for its own leader election
            await asyncio.gather(*(ensure_stream(self._js, config) for config in lanes))
        sources = await self._kept_sources(sources or [])
        config = api.StreamConfig(
            name=s.stream,
            # written directly too: management events, and workers with one lane
            subjects=[subjects.AUDIT],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=s.max_age_s,
            max_bytes=s.max_bytes,
            duplicate_window=s.duplicate_window_s,
            num_replicas=s.replicas,
            sources=sources or None,
        )
        await ensure_stream(self._js, config)

    async def _kept_sources(self, wanted: list[api.StreamSource]) -> list[api.StreamSource]:
        """``wanted`` and every source the audit stream has already. A source is never
        dropped: a worker configured with fewer lanes than the others (or none) would
        otherwise cut the others' lanes off from the audit stream, and their events would
        wait there unread until they expire."""
        try:
            info = await self._js.stream_info(self._settings.stream)
        except nats.js.errors.NotFoundError:
            return wanted
        except _JS_ERRORS as exc:
            raise TransportError(f"cannot set up stream {self._settings.stream}: {exc!r}") from exc
        have = list(info.config.sources or [])
        names = {source.name for source in wanted}
        kept = [source for source in have if source.name not in names]
        if kept and self._settings.lanes < len(have):
            log.warning(
                "%s sources %d lane streams and this worker has GATEHOOK_AUDIT__LANES=%d: the"
                " sources are kept; give every worker the same lane count",
                self._settings.stream,
                len(have),
                self._settings.lanes,
            )
        return [*wanted, *kept]

    async def ping(self) -> None:
        """The audit stream answers (it has a leader); ``TransportError`` otherwise."""
        try:
            await self._js.stream_info(self._settings.stream)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TransportError(f"the audit stream does not answer: {exc}") from None

    async def lane_answers(self, lane: int, timeout: float) -> bool:
        """Whether lane ``lane``'s audit stream answers within ``timeout`` and has a leader
        (a stream found missing is created again, and does not answer yet)."""
        stream = lane_audit_stream(self._settings, lane)
        return await stream_led(self._js, stream, timeout, self.ensure_stream)

    async def read(self, stream: str, seq: int) -> bytes | None:
        """The message at ``seq`` of ``stream`` (None: gone, expired or deleted)."""
        try:
            msg = await self._js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        except _JS_ERRORS as exc:
            raise TransportError(f"audit stream unavailable: {exc!r}") from exc
        return msg.data

    async def publish_encoded(
        self, events: list[EncodedEvent], prefix: str = subjects.AUDIT_PREFIX
    ) -> None:
        """``publish`` for events already encoded (the trigger path's), on the audit
        subjects or under a write lane's ``prefix``."""
        try:
            await self._publish(events, prefix)
        except nats.js.errors.NoStreamResponseError:
            log.warning("audit stream %s missing; creating it again", self._settings.stream)
            await self.ensure_stream()
            try:
                await self._publish(events, prefix)
            except _JS_ERRORS as exc:
                raise TransportError(f"audit stream unavailable: {exc!r}") from exc
        except _JS_ERRORS as exc:
            raise TransportError(f"audit stream unavailable: {exc!r}") from exc

    async def publish(self, events: list[AuditEvent]) -> None:
        """Publish ``events`` together and wait for all acks; ``TransportError`` otherwise.

        If the stream has gone (deleted by an operator, a server that lost its store), it is
        created again and the events published once more.
        """
        await self.publish_encoded([encode_event(e) for e in events])

    async def _publish(self, events: list[EncodedEvent], prefix: str) -> None:
        # One request each, together (not nats-py's publish_async: an error ack, such as
        # a message over the stream's size limit, raises in its callback and leaves the
        # future unresolved for ever).
        await asyncio.gather(
            *(
                self._js.publish(
                    f"{prefix}{e.tenant}.{e.type}",
                    e.data,
                    headers={"Nats-Msg-Id": e.event_id},
                    timeout=_ACK_S,
                )
                for e in events
            )
        )
