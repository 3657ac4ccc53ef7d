"""The worker's FastStream subscribers: the management API and the gateway's requests.

Subjects (docs/contract.md, ``domain.subjects``), each request-reply in the queue group:

- ``gatehook.v1.admin.<tenant>.<operation>`` and, as an authenticated NATS user,
  ``gatehook.v1.as.<principal>.admin.<tenant>.<operation>``: the management API
  (``admin.api``);
- ``gatehook.v1.ingress.<tenant>.<operation>``: the gateway's requests (``admin.ingress``);
- with ``GATEHOOK_TRIGGER_TRANSPORT=faststream`` only, trigger requests. By default they
  enter on the lean path instead (``transport.trigger_server``), as do change broadcasts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage

from gatehook.domain import subjects
from gatehook.security.connections import broker_security
from gatehook.settings import Settings
from gatehook.transport.trigger_server import BAD_SUBJECT

__all__ = ["Endpoints", "new_broker", "subscribe"]

log = logging.getLogger("gatehook.transport")


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
        connect_timeout=settings.nats.connect_timeout_s,
        logger=None,
        security=broker_security(settings),  # TLS and credentials (GATEHOOK_NATS__*)
        reconnected_cb=_reconnected,
        inbox_prefix=settings.nats_inbox_prefix,  # replies to the worker's own requests
    )


def subscribe(broker: NatsBroker, settings: Settings, runtime: Endpoints) -> None:
    """The worker's subscribers on ``broker``, answering through ``runtime``."""
    if settings.trigger_transport == "faststream":

        @broker.subscriber(
            subjects.TRIGGERS,
            queue=settings.queue_group,
            max_workers=settings.concurrency,
            title="trigger",
            description="Trigger request at a trigger point; replies with a decision.",
        )
        async def on_trigger(msg: NatsMessage) -> bytes:
            parts = subjects.trigger_parts(msg.raw_message.subject)
            if parts is None:
                return BAD_SUBJECT
            return await runtime.triggers.handle(*parts, msg.raw_message.data)

    @broker.subscriber(
        subjects.ADMIN,
        queue=settings.queue_group,
        max_workers=8,
        title="admin",
        description=f"Management API: {subjects.said(subjects.ADMIN_FORM)}.",
    )
    async def on_admin(msg: NatsMessage) -> bytes:
        return await runtime.admin.handle(msg.raw_message.subject, msg.raw_message.data)

    @broker.subscriber(
        subjects.AS_ADMIN,
        queue=settings.queue_group,
        max_workers=8,
        title="admin-as",
        description="Management API as an authenticated NATS user:"
        f" {subjects.said(subjects.AS_ADMIN_FORM)}.",
    )
    async def on_admin_as(msg: NatsMessage) -> bytes:
        return await runtime.admin.handle(msg.raw_message.subject, msg.raw_message.data)

    @broker.subscriber(
        subjects.INGRESS,
        queue=settings.queue_group,
        max_workers=8,
        title="ingress",
        description="The gateway's requests (provider secrets, audit):"
        f" {subjects.said(subjects.INGRESS_FORM)}.",
    )
    async def on_ingress(msg: NatsMessage) -> bytes:
        return await runtime.ingress.handle(msg.raw_message.subject, msg.raw_message.data)
