"""Reading the audit stream with an ephemeral ordered consumer (``gatehook audit tail``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from gatehook.domain.contract import AuditEvent

__all__ = ["read_events", "subject_filter"]


def subject_filter(tenant: str | None, event_type: str | None) -> str:
    """The stream subject for a tenant and an event type (either may be all)."""
    t = tenant or "*"
    return f"gatehook.v1.audit.{t}.{event_type}" if event_type else f"gatehook.v1.audit.{t}.>"


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
            try:
                event = AuditEvent.model_validate_json(msg.data)
            except ValidationError:
                continue  # not ours (or an older format): skip, never crash a reader
            if until is not None and event.at > until:
                return
            yield event
    finally:
        await sub.unsubscribe()
