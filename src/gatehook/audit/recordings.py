"""Recorded trigger inputs on JetStream (``GATEHOOK_RECORDINGS``), for replay.

A recorded slot's every trigger request, with the listed fields redacted before it leaves
the worker, and the decision it got, goes to
``gatehook.v1.recordings.<tenant>.<flow_type>.<trigger>``; the stream keeps them for
``GATEHOOK_ROLLOUTS__RECORDINGS_MAX_AGE_S``. Recording is best effort (a plain publish that
the reply does not wait for); replay reads them back in order from a start time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime

import nats.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from gatehook.audit.stream import ensure_stream
from gatehook.domain import subjects

__all__ = ["RECORDINGS_STREAM", "JsRecorder"]

log = logging.getLogger("gatehook.recordings")

RECORDINGS_STREAM = "GATEHOOK_RECORDINGS"


class JsRecorder:
    """The ``Recorder`` port, and the reader replay uses."""

    def __init__(
        self, nc: Client, js: JetStreamContext, max_age_s: float, replicas: int = 1
    ) -> None:
        self._nc = nc
        self._js = js
        self._max_age = max_age_s
        self._replicas = replicas
        self.dropped = 0

    async def ensure_stream(self) -> None:
        """Create the stream, or bring its configuration up to date."""
        await ensure_stream(
            self._js,
            api.StreamConfig(
                name=RECORDINGS_STREAM,
                subjects=[subjects.RECORDINGS],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                max_age=self._max_age,
                num_replicas=self._replicas,
            ),
        )

    async def record(self, tenant: str, slot: str, data: bytes) -> None:
        """Publish one record (no acknowledgement awaited)."""
        try:
            await self._nc.publish(subjects.recording(tenant, slot), data)
        except nats.errors.Error as exc:
            self.dropped += 1
            log.warning("recording for %s dropped: %s", tenant, exc)

    async def read(
        self, tenant: str, slot: str, since: datetime, limit: int
    ) -> AsyncIterator[dict[str, object]]:
        """The slot's records from ``since`` on, oldest first (at most ``limit``)."""
        subject = subjects.recording(tenant, slot)
        info = await self._js.stream_info(RECORDINGS_STREAM, subjects_filter=subject)
        if not (info.state.subjects or {}).get(subject):
            return
        sub = await self._js.subscribe(
            subject,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_TIME,
                opt_start_time=since,
            ),
        )
        try:
            for _ in range(limit):
                try:
                    msg = await sub.next_msg(timeout=2)
                except nats.errors.TimeoutError:
                    return
                yield orjson.loads(msg.data)
                if msg.metadata.num_pending == 0:
                    return
        finally:
            await sub.unsubscribe()
