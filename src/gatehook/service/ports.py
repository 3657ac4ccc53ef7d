"""The ports the trigger use case depends on; each has one real adapter (see ``app``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from gatehook.domain.catalogue import FlowType
from gatehook.domain.contract import AuditEvent
from gatehook.domain.model import ActionVersion, FlowRevision
from gatehook.sandbox.pool import ScriptJob, ScriptRun

__all__ = ["AuditSink", "FlowSource", "ReplyStore", "ScriptRunner", "Telemetry"]

Pin = dict[FlowType, int | None]


class FlowSource(Protocol):
    """Reads flows, versions and sign-in pins (MongoStore)."""

    async def current_revisions(self, tenant: str) -> Pin: ...

    async def get_flow(
        self, tenant: str, flow_type: FlowType, revision: int
    ) -> FlowRevision | None: ...

    async def get_version(self, tenant: str, action: str, version: str) -> ActionVersion | None: ...

    async def pin_signin(
        self, tenant: str, signin_id: str, current: Pin, ttl: timedelta
    ) -> tuple[Pin, datetime]: ...


class ScriptRunner(Protocol):
    """Runs compiled scripts (SandboxPool)."""

    async def run(self, job: ScriptJob) -> ScriptRun: ...


class AuditSink(Protocol):
    """Publishes audit events and waits for the stream to acknowledge them (JetStream)."""

    async def publish(self, events: list[AuditEvent]) -> None: ...


class ReplyStore(Protocol):
    """Remembers replies by idempotency key for the dedupe window (a JetStream stream)."""

    async def remember(self, key: str, reply: bytes) -> bytes | None:
        """Store ``reply``; return the reply stored first when ``key`` was seen already."""
        ...

    async def forget(self, key: str) -> None:
        """Drop a stored reply (its decision was not given)."""
        ...


class Telemetry:
    """What the trigger use case reports; the default does nothing."""

    def request(
        self, tenant: str, flow_type: str, trigger: str, outcome: str, seconds: float
    ) -> None:
        """One trigger request answered (``outcome``: a decision or an error code)."""

    def action(self, tenant: str, name: str, version: str, outcome: str, kind: str | None) -> None:
        """One action run (``kind``: how an error happened: timeout, memory, threw...)."""

    def audit(self, seconds: float, ok: bool) -> None:
        """One audit batch published (and acknowledged, when ``ok``)."""
