"""The ports the trigger use case depends on, and the types they speak; each port has one
real adapter, chosen in ``gatehook.runtime``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from gatehook.domain.catalogue import FlowType
from gatehook.domain.contract import ActionOutput, AuditEvent
from gatehook.domain.model import ActionVersion, FlowRevision, ScriptStyle, TenantHeads
from gatehook.domain.targets import TargetSpec

__all__ = [
    "AuditSink",
    "Compiled",
    "EncodedEvent",
    "FlowSource",
    "Journal",
    "Recorder",
    "ScriptJob",
    "ScriptRun",
    "ScriptRunner",
    "TargetRunner",
    "Telemetry",
]

Pin = dict[FlowType, int | None]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled artifact: CommonJS-style ES2020 code and the detected style."""

    code: str
    style: ScriptStyle
    exports: tuple[str, ...] = ()  # Auth0 style: the handlers it exports
    # the modules the source names in its syntax: (name, line, column), in source order
    modules: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ScriptJob:
    """One execution of a compiled action version."""

    tenant: str
    action: str
    version: str
    code: str
    style: str
    input: bytes
    timeout_ms: float
    allowed_hosts: tuple[str, ...] = ()
    deadline: float | None = None  # an outer monotonic deadline (the request's budget)
    affinity: str = ""  # the key whose home child serves it (a slot's scripts share one)

    @property
    def key(self) -> str:
        """The interpreter key: never shared between tenants or versions."""
        return f"{self.tenant}/{self.action}/{self.version}"


@dataclass(frozen=True, slots=True)
class ScriptRun:
    """A finished execution: the raw JSON result, captured logs, time spent in the child."""

    output: bytes
    logs: list[str]
    duration_ms: float


class FlowSource(Protocol):
    """Reads flows, versions and sign-in pins (MongoStore)."""

    async def tenant_heads(self, tenant: str) -> TenantHeads:
        """The tenant's current revisions, kill switches and recorded slots, in one read."""
        ...

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

    @property
    def starts_together(self) -> bool:
        """Whether a slot's pure scripts are started together (the pool sends them to one
        child in one write, and their replies come back in one); in-process scripts are a
        function call each, run in turn."""
        ...


class ActionCacheStore(Protocol):
    """Where Auth0 Actions' ``api.cache`` entries live (MongoStore: the action's document)."""

    async def action_cache(self, tenant: str, name: str) -> dict[str, dict[str, Any]]: ...

    async def write_action_cache(
        self, tenant: str, name: str, writes: list[dict[str, Any]], now_ms: int
    ) -> None: ...


class Recorder(Protocol):
    """Keeps recorded trigger inputs for replay (a JetStream stream with a max age)."""

    async def record(self, tenant: str, slot: str, data: bytes) -> None:
        """Store one record (best effort: the reply never waits for it)."""
        ...


class TargetRunner(Protocol):
    """Calls target actions' HTTP endpoints (TargetCaller)."""

    async def run(
        self,
        *,
        tenant: str,
        action: str,
        version: str,
        spec: TargetSpec,
        function: str,
        input_json: bytes,
        timeout_s: float,
    ) -> ActionOutput:
        """The action output of one call; raises ``TargetFailed`` when the call fails.
        ``function``: ZITADEL's name of the slot; ``input_json``: the action input."""
        ...


class AuditSink(Protocol):
    """Publishes audit events and waits for the stream to acknowledge them (JetStream)."""

    async def publish(self, events: list[AuditEvent]) -> None: ...


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An audit message as it goes on the stream (an event or a decision record): its
    tenant and type (the journal makes its subject of them), id (``Nats-Msg-Id``) and
    JSON."""

    tenant: str
    type: str
    event_id: str
    data: bytes


class Journal(Protocol):
    """Stores a decision's record before the reply is given, acknowledged by its stream
    (JsJournal)."""

    def record(self, record: EncodedEvent, deadline: float) -> asyncio.Future[bytes | None]:
        """Publish (without waiting); the future resolves once the record is stored: to the
        record stored first when its id was seen already (a retry), else None. It fails with
        a ``GatehookError`` when that has not happened by ``deadline`` (monotonic) or the
        stream refuses."""
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
