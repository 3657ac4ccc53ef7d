"""JetStream adapters: the audit stream publisher and the reply store for idempotency.

Audit events go to ``GATEHOOK_AUDIT`` with ``Nats-Msg-Id`` = event id, so the stream drops a
retried request's second copy within its duplicate window. Replies are remembered in a KV
bucket whose entries expire with the bucket's max age (JetStream does the expiry; nothing
depends on MongoDB TTL indexes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from gatehook.domain.contract import AuditEvent
from gatehook.errors import TransportError
from gatehook.settings import AuditSettings

__all__ = ["AUDIT_SUBJECTS", "REPLIES_BUCKET", "AuditPublisher", "KvReplyStore", "audit_subject"]

log = logging.getLogger("gatehook.audit")

AUDIT_SUBJECTS = "gatehook.v1.audit.>"
REPLIES_BUCKET = "gatehook_replies"
T = TypeVar("T")
_JS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, OSError)


def audit_subject(event: AuditEvent) -> str:
    """``gatehook.v1.audit.<tenant>.<event type>``."""
    return f"gatehook.v1.audit.{event.tenant}.{event.type}"


class AuditPublisher:
    """Publishes audit events and waits until the stream has stored every one."""

    def __init__(self, js: JetStreamContext, settings: AuditSettings) -> None:
        self._js = js
        self._settings = settings

    async def ensure_stream(self) -> None:
        """Create the audit stream, or bring its configuration up to date (idempotent)."""
        s = self._settings
        config = api.StreamConfig(
            name=s.stream,
            subjects=[AUDIT_SUBJECTS],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=s.max_age_s,
            duplicate_window=s.duplicate_window_s,
            num_replicas=s.replicas,
        )
        try:
            try:
                await self._js.stream_info(s.stream)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(config)
                return
            await self._js.update_stream(config)
        except _JS_ERRORS as exc:
            raise TransportError(f"cannot set up audit stream {s.stream}: {exc!r}") from exc

    async def publish(self, events: list[AuditEvent]) -> None:
        """Publish ``events`` together and wait for all acks; ``TransportError`` otherwise.

        If the stream has gone (deleted by an operator, a server that lost its store), it is
        created again and the events published once more.
        """
        try:
            await self._publish(events)
        except nats.js.errors.NoStreamResponseError:
            log.warning("audit stream %s missing; creating it again", self._settings.stream)
            await self.ensure_stream()
            try:
                await self._publish(events)
            except _JS_ERRORS as exc:
                raise TransportError(f"audit stream unavailable: {exc!r}") from exc
        except _JS_ERRORS as exc:
            raise TransportError(f"audit stream unavailable: {exc!r}") from exc

    async def _publish(self, events: list[AuditEvent]) -> None:
        futures = [
            await self._js.publish_async(
                audit_subject(e),
                e.model_dump_json().encode(),
                headers={"Nats-Msg-Id": e.event_id},
                wait_stall=1.0,
            )
            for e in events
        ]
        await asyncio.gather(*futures)


class KvReplyStore:
    """Replies by idempotency key, in a JetStream KV bucket with max age = dedupe window."""

    def __init__(self, js: JetStreamContext, window_s: float, replicas: int = 1) -> None:
        self._js = js
        self._window = window_s
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist."""
        try:
            try:
                self._kv = await self._js.key_value(REPLIES_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self._js.create_key_value(
                    bucket=REPLIES_BUCKET,
                    ttl=self._window,
                    history=1,
                    replicas=self._replicas,
                    storage=api.StorageType.FILE,
                )
        except _JS_ERRORS as exc:
            raise TransportError(f"cannot set up reply bucket: {exc!r}") from exc

    async def get(self, key: str) -> bytes | None:
        """The remembered reply, or None."""
        entry: KeyValue.Entry | None
        try:
            entry = await self._bucket().get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except _JS_ERRORS as first:
            entry = await self._again(first, lambda kv: kv.get(key))
        return None if entry is None else entry.value

    async def put(self, key: str, reply: bytes) -> None:
        """Remember ``reply`` under ``key``."""
        try:
            await self._bucket().put(key, reply)
        except _JS_ERRORS as first:
            await self._again(first, lambda kv: kv.put(key, reply))

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise TransportError("reply store not set up (ensure_bucket() first)")
        return self._kv

    async def _again(
        self, first: BaseException, op: Callable[[KeyValue], Awaitable[T]]
    ) -> T | None:
        """After a failure, set the bucket up again (it may have been deleted) and retry once."""
        log.warning("reply store failed (%r); setting it up again", first)
        await self.ensure_bucket()
        try:
            return await op(self._bucket())
        except nats.js.errors.KeyNotFoundError:
            return None
        except _JS_ERRORS as exc:
            raise TransportError(f"reply store unavailable: {exc!r}") from exc
