"""NATS subscribers of a worker: trigger requests (queue group) and change broadcasts.

Subjects (docs/contract.md):
- ``gatehook.v1.trigger.<tenant>.<flow_type>.<trigger>``: request-reply, queue group
  ``gatehook-workers``, handled concurrently up to ``GATEHOOK_CONCURRENCY``;
- ``gatehook.v1.changes.<tenant>``: every worker drops its cached flow heads of the tenant;
- ``gatehook.v1.ingress.<tenant>.<operation>``: the gateway's requests (``admin.ingress``).

Both are served on the lean path (``transport.trigger_server``); the management API
(``gatehook.v1.admin.<tenant>.<operation>``) is a FastStream subscriber.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage

from gatehook.admin.api import ADMIN_SUBJECT
from gatehook.admin.ingress import INGRESS_SUBJECT
from gatehook.admin.principal import AS_ADMIN_SUBJECT
from gatehook.security.connections import broker_security
from gatehook.settings import Settings
from gatehook.transport.trigger_server import BAD_SUBJECT, CHANGES_SUBJECT, split_subject

__all__ = [
    "ADMIN_SUBJECT",
    "CHANGES_SUBJECT",
    "TRIGGER_SUBJECT",
    "Endpoints",
    "changes_subject",
    "new_broker",
    "subscribe",
]

log = logging.getLogger("gatehook.transport")

TRIGGER_SUBJECT = "gatehook.v1.trigger.*.*.*"


def changes_subject(tenant: str) -> str:
    """The broadcast subject that tells workers ``tenant``'s flows changed."""
    return f"gatehook.v1.changes.{tenant}"


class _Handler(Protocol):
    async def handle(self, subject: str, payload: bytes) -> bytes: ...


class _Triggers(Protocol):
    async def handle(self, tenant: str, flow_type: str, trigger: str, payload: bytes) -> bytes: ...


class Endpoints(Protocol):
    """What the subscribers call into (the runtime, once started)."""

    @property
    def triggers(self) -> _Triggers: ...

    @property
    def admin(self) -> _Handler: ...

    @property
    def ingress(self) -> _Handler: ...

    def reconnected(self) -> None: ...


def new_broker(settings: Settings, reconnected: Callable[[], None]) -> NatsBroker:
    """The worker's broker (its NATS connection), ``reconnected`` called after a reconnect."""

    async def _reconnected() -> None:
        reconnected()

    return NatsBroker(
        settings.nats_servers,
        name=f"gatehook-{settings.worker_name}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=max(1, int(settings.mongodb_timeout_ms / 1000)),
        logger=None,
        security=broker_security(settings),  # TLS and credentials (GATEHOOK_NATS__*)
        reconnected_cb=_reconnected,
        inbox_prefix=settings.nats_inbox_prefix,  # replies to the worker's own requests
    )


def subscribe(broker: NatsBroker, settings: Settings, runtime: Endpoints) -> None:
    """The worker's subscribers on ``broker``, answering through ``runtime``."""
    if settings.trigger_transport == "faststream":

        @broker.subscriber(
            TRIGGER_SUBJECT,
            queue=settings.queue_group,
            max_workers=settings.concurrency,
            title="trigger",
            description="Trigger request at a trigger point; replies with a decision.",
        )
        async def on_trigger(msg: NatsMessage) -> bytes:
            parts = split_subject(msg.raw_message.subject)
            if parts is None:
                return BAD_SUBJECT
            return await runtime.triggers.handle(*parts, msg.raw_message.data)

    @broker.subscriber(
        ADMIN_SUBJECT,
        queue=settings.queue_group,
        max_workers=8,
        title="admin",
        description="Management API: gatehook.v1.admin.<tenant>.<operation>.",
    )
    async def on_admin(msg: NatsMessage) -> bytes:
        return await runtime.admin.handle(msg.raw_message.subject, msg.raw_message.data)

    @broker.subscriber(
        AS_ADMIN_SUBJECT,
        queue=settings.queue_group,
        max_workers=8,
        title="admin-as",
        description="Management API as an authenticated NATS user:"
        " gatehook.v1.as.<principal>.admin.<tenant>.<operation>.",
    )
    async def on_admin_as(msg: NatsMessage) -> bytes:
        return await runtime.admin.handle(msg.raw_message.subject, msg.raw_message.data)

    @broker.subscriber(
        INGRESS_SUBJECT,
        queue=settings.queue_group,
        max_workers=8,
        title="ingress",
        description="The gateway's requests (provider secrets, audit):"
        " gatehook.v1.ingress.<tenant>.<operation>.",
    )
    async def on_ingress(msg: NatsMessage) -> bytes:
        return await runtime.ingress.handle(msg.raw_message.subject, msg.raw_message.data)
