"""The wire contract (docs/contract.md) as pydantic models: trigger request, reply, audit event.

These models generate ``schemas/``; change them only by adding optional fields.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "ActionInput",
    "ActionOutput",
    "ActionTrace",
    "AuditEvent",
    "Decision",
    "DecisionRecord",
    "ErrorCode",
    "Execution",
    "MetadataEntry",
    "Outcome",
    "ReplyError",
    "RequestInfo",
    "TriggerReply",
    "TriggerRequest",
    "User",
    "UserGrant",
    "is_absolute_http_url",
]

RequestId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Decision(StrEnum):
    """What the login service should do next."""

    CONTINUE = "continue"
    BLOCK = "block"
    DEMAND_MFA = "demand_mfa"
    REDIRECT = "redirect"


class Outcome(StrEnum):
    """What happened to one attachment in a slot."""

    CONTINUE = "continue"
    BLOCK = "block"
    DEMAND_MFA = "demand_mfa"
    REDIRECT = "redirect"
    ERROR = "error"
    SKIPPED = "skipped"
    DISABLED = "disabled"  # the action's kill switch is on: its fallback decided


ErrorCode = Literal["bad_request", "unavailable", "internal"]


def is_absolute_http_url(value: str, *, https_only: bool = False) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    schemes = ("https",) if https_only else ("http", "https")
    return parts.scheme in schemes and bool(parts.hostname)


class User(BaseModel):
    """The user the sign-in is about, as the login service knows it."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    username: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    groups: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class RequestInfo(BaseModel):
    """Facts about the HTTP request behind the sign-in."""

    model_config = ConfigDict(extra="allow")

    ip: str | None = None
    user_agent: str | None = None
    application_id: str | None = None
    risk_score: float | None = None


class TriggerRequest(BaseModel):
    """A login service's question at a trigger point. Unknown fields are kept for actions."""

    model_config = ConfigDict(extra="allow")

    request_id: RequestId
    signin_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    user: User = Field(default_factory=User)
    request: RequestInfo = Field(default_factory=RequestInfo)
    state: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    deadline_ms: int | None = Field(
        default=None,
        ge=1,
        le=60_000,
        description="extension: the caller's own time budget; the worker replies within it",
    )

    def action_context(self) -> dict[str, Any]:
        """``context`` as actions see it: unknown top-level fields first, ``context`` over them."""
        extra = dict(self.model_extra or {})
        extra.update(self.context)
        return extra

    def action_input(
        self, tenant: str, flow_type: str, trigger: str, config: dict[str, Any] | None = None
    ) -> ActionInput:
        """What an action at ``flow_type.trigger`` of ``tenant`` receives for this request."""
        return ActionInput(
            tenant=tenant,
            flow_type=flow_type,
            trigger=trigger,
            request_id=self.request_id,
            signin_id=self.signin_id,
            user=self.user,
            request=self.request,
            state=self.state,
            context=self.action_context(),
            config=config or {},
        )


class ActionInput(BaseModel):
    """What an action receives: the trigger, the request's parts, and its own config."""

    tenant: str
    flow_type: str
    trigger: str
    request_id: str
    signin_id: str | None = None
    action: str | None = Field(default=None, description="the running action's name")
    decision_so_far: str | None = Field(
        default=None, description="the slot's decision before this action (templates)"
    )
    time_left_ms: float | None = Field(
        default=None, description="time this action has before its timeout (templates)"
    )
    user: User
    request: RequestInfo
    state: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict, description="the custom action's secrets (Auth0: event.secrets)"
    )
    cache: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Auth0 Actions that use api.cache: its live entries, key -> {value,"
        " expires_at}, as the run began",
    )


class MetadataEntry(BaseModel):
    """One metadata entry to append to the user."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    value: Any = None


class UserGrant(BaseModel):
    """A grant to give the user: a project and roles in it."""

    model_config = ConfigDict(extra="allow")

    project_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    roles: list[str] = Field(default_factory=list)


class CacheWrite(BaseModel):
    """One change an Auth0 Action made to its cache (``api.cache.set`` / ``delete``)."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["set", "delete"]
    key: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    value: Annotated[str, StringConstraints(max_length=4096)] | None = None
    expires_at: int | None = Field(default=None, description="ms since the epoch")


class ScopeChanges(BaseModel):
    """Scopes added to and removed from the access token (Auth0's ``api.accessToken.addScope``
    and ``removeScope``), in the order asked; a scope is in one list at most."""

    model_config = ConfigDict(extra="forbid")

    add: list[Annotated[str, StringConstraints(max_length=256)]] = Field(default_factory=list)
    remove: list[Annotated[str, StringConstraints(max_length=256)]] = Field(default_factory=list)


class MfaRequest(BaseModel):
    """How the user should do multi-factor authentication (Auth0's ``api.multifactor.enable``
    and ``api.authentication.challengeWith`` / ``challengeWithAny`` / ``enrollWith`` /
    ``enrollWithAny``); it comes with ``decision: demand_mfa``."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["enable", "challenge", "enroll"] = Field(
        description="enable: multifactor.enable(provider); challenge / enroll: the factors"
    )
    provider: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="multifactor.enable's provider: any, guardian, duo..."
    )
    allow_remember_browser: bool = False
    provider_options: dict[str, Any] = Field(default_factory=dict)
    factors: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the factors ({type, options}) in order, the preferred first",
    )
    any: bool = Field(default=False, description="true: the user picks one of the factors")


class ActionOutput(BaseModel):
    """What one action returns: a decision kind and mutations. Validated before use."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["continue", "block", "demand_mfa", "redirect"] = "continue"
    reason: Annotated[str, StringConstraints(max_length=128)] | None = None
    message: Annotated[str, StringConstraints(max_length=2048)] | None = None
    redirect_url: Annotated[str, StringConstraints(max_length=4096)] | None = None
    claims: dict[str, Any] = Field(default_factory=dict)
    user_updates: dict[str, Any] = Field(default_factory=dict)
    metadata: list[MetadataEntry] = Field(default_factory=list)
    saml_attributes: dict[str, list[str]] = Field(default_factory=dict)
    user_grants: list[UserGrant] = Field(default_factory=list)
    access_token_claims: dict[str, Any] = Field(default_factory=dict)
    access_token_scopes: ScopeChanges = Field(default_factory=ScopeChanges)
    mfa: MfaRequest | None = None
    cache: list[CacheWrite] = Field(
        default_factory=list,
        max_length=100,
        description="Auth0 style: the action's cache writes, stored after the run (not in"
        " the reply)",
    )

    @field_validator("redirect_url")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not is_absolute_http_url(value):
            raise ValueError("redirect_url must be an absolute http(s) URL")
        return value

    @model_validator(mode="after")
    def _redirect_has_url(self) -> ActionOutput:
        if self.kind == "redirect" and self.redirect_url is None:
            raise ValueError("a redirect needs a redirect_url")
        return self


class ActionTrace(BaseModel):
    """One attachment's entry in a reply: what ran (or was skipped) and how it ended."""

    name: str
    version: str
    outcome: Outcome
    duration_ms: float = 0.0
    error: str | None = None


class ReplyError(BaseModel):
    """Why no decision could be computed."""

    code: ErrorCode
    message: str
    retryable: bool = False


class TriggerReply(BaseModel):
    """The worker's answer to a trigger request."""

    request_id: str | None
    decision: Decision | None = Decision.CONTINUE
    reason: str | None = None
    message: str | None = None
    redirect_url: str | None = None
    claims: dict[str, Any] = Field(default_factory=dict)
    user_updates: dict[str, Any] = Field(default_factory=dict)
    metadata: list[MetadataEntry] = Field(default_factory=list)
    saml_attributes: dict[str, list[str]] = Field(default_factory=dict)
    user_grants: list[UserGrant] = Field(default_factory=list)
    flow_revision: int | None = None
    actions: list[ActionTrace] = Field(default_factory=list)
    error: ReplyError | None = None
    pin_deferred: bool = Field(
        default=False,
        description="true: MongoDB did not store this new sign-in's pin in time; it was"
        " decided on the revisions the worker had cached as current, and its pin is written"
        " when MongoDB is back",
    )
    access_token_claims: dict[str, Any] = Field(
        default_factory=dict,
        description="claims for the access token only (Auth0's api.accessToken.setCustomClaim);"
        " `claims` are for the ID token, and for both where the login service has one set",
    )
    access_token_scopes: ScopeChanges = Field(default_factory=ScopeChanges)
    mfa: MfaRequest | None = Field(
        default=None, description="with demand_mfa: how, when an action said (Auth0 style)"
    )

    @classmethod
    def failure(
        cls, request_id: str | None, code: ErrorCode, message: str, *, retryable: bool = False
    ) -> TriggerReply:
        """A reply that carries no decision, only why."""
        return cls(
            request_id=request_id,
            decision=None,
            error=ReplyError(code=code, message=message, retryable=retryable),
        )


AuditEventType = Literal[
    "flow.action_attached",
    "flow.action_detached",
    "flow.action_updated",
    "flow.action_executed",
    "flow.action_published",
    "flow.target_circuit_opened",
    "flow.target_circuit_closed",
    "flow.rollout_started",
    "flow.rollout_promoted",
    "flow.rollout_rolled_back",
    "flow.action_shadowed",
    "flow.action_disabled",
    "flow.action_enabled",
    "flow.recording_changed",
    "admin.refused",
    "admin.action_created",
    "admin.action_updated",
    "console.signed_in",
    "console.refused",
    "ingress.updated",
    "ingress.refused",
    "ingress.event_received",
]


class AuditEvent(BaseModel):
    """One event on the ``GATEHOOK_AUDIT`` stream."""

    event_id: str
    type: AuditEventType
    tenant: str
    at: datetime
    actor: str
    principal: str | None = Field(
        default=None,
        description="who the NATS server authenticated for a management change: the user"
        " name its permissions pin in the subject (gatehook.v1.as.<principal>.admin...);"
        " null when the change came over gatehook.v1.admin... (no authenticated name)",
    )
    flow_type: str | None = None
    trigger: str | None = None
    flow_revision: int | None = None
    flow_revision_before: int | None = None
    action: str | None = None
    version: str | None = None
    previous_version: str | None = None
    request_id: str | None = None
    signin_id: str | None = None
    outcome: Outcome | None = None
    duration_ms: float | None = None
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


DECIDED = "flow.decided"  # a decision record's type, and the last part of its subject


class Execution(BaseModel):
    """One action run of a decision: what its ``flow.action_executed`` event says."""

    event_id: str = Field(description="the id of its flow.action_executed event")
    action: str
    version: str
    outcome: Outcome
    duration_ms: float
    error: str | None = None


class DecisionRecord(BaseModel):
    """One decision, stored once on the audit stream before its reply is given
    (``gatehook.v1.audit.<tenant>.flow.decided``): what ran, and the reply a retry of the
    request gets. Its ``executions`` are the slot's ``flow.action_executed`` events
    (``events()``), which readers show as before."""

    record_id: str = Field(description="the request's key: tenant, slot and request_id's hash")
    type: Literal["flow.decided"] = "flow.decided"
    tenant: str
    at: datetime
    actor: str = Field(description="the worker that decided")
    flow_type: str
    trigger: str
    flow_revision: int | None = None
    request_id: str
    signin_id: str | None = None
    user_id: str | None = Field(default=None, description="the request's user.id, if any")
    decision: Decision
    reason: str | None = None
    pin_deferred: bool = False
    executions: list[Execution] = Field(default_factory=list)
    reply: dict[str, Any] = Field(description="the reply given (TriggerReply)")

    def events(self) -> list[AuditEvent]:
        """The record's executions as ``flow.action_executed`` events: the same ids and
        fields as the events a reader finds stored one per run."""
        details: dict[str, Any] = {"pin_deferred": True} if self.pin_deferred else {}
        return [
            AuditEvent(
                event_id=run.event_id,
                type="flow.action_executed",
                tenant=self.tenant,
                at=self.at,
                actor=self.actor,
                flow_type=self.flow_type,
                trigger=self.trigger,
                flow_revision=self.flow_revision,
                action=run.action,
                version=run.version,
                request_id=self.request_id,
                signin_id=self.signin_id,
                outcome=run.outcome,
                duration_ms=run.duration_ms,
                error=run.error,
                details=dict(details),
            )
            for run in self.executions
        ]
