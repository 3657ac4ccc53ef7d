"""The management API's requests: one pydantic model per operation of
``gatehook.v1.admin.<tenant>.<operation>`` (``OPERATIONS``), and their JSON Schemas for
``schemas/admin/``. ``admin.api`` serves them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatehook.domain.flowfile import FlowsFile
from gatehook.domain.model import Attachment

__all__ = ["OPERATIONS", "schema_documents"]


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str = Field(default="api", max_length=200, description="who makes the change")


class CreateAction(_Req):
    """``actions.create``: a custom action, or one from a template."""

    name: str
    template: str | None = None
    triggers: list[str] | None = Field(
        default=None,
        description="compatible triggers (post_authentication) or slots"
        " (external_authentication.post_authentication); default: every one",
    )
    kind: Literal["custom", "target"] | None = Field(
        default=None, description="target: a tenant's HTTP endpoint (default: custom script)"
    )
    display_name: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    config_schema: dict[str, Any] | None = Field(
        default=None,
        description="custom actions: their config form (the JSON Schema subset templates"
        " use); each published config is validated against it",
    )


class UpdateAction(_Req):
    """``actions.update``: an action's own metadata, each field given replacing the stored
    one (absent or null: left as stored)."""

    name: str
    triggers: list[str] | None = Field(
        default=None,
        description="compatible triggers or slots, as at create; narrowing them is refused"
        " while the action is attached outside them",
    )
    display_name: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    config_schema: dict[str, Any] | None = Field(
        default=None, description="custom actions: their config form, as at create"
    )


class PublishVersion(_Req):
    """``actions.publish``: a new version (no-op when unchanged)."""

    name: str
    source: str | None = None
    language: Literal["js", "ts"] | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_ms: int | None = None
    allowed_to_fail: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)
    target: dict[str, Any] | None = Field(
        default=None,
        description="target actions: endpoint, type, payload, signing_key, headers"
        " (signing_key: generated when absent and returned once; '********' keeps it)",
    )
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="custom actions: secrets by name (sealed at rest, read back masked;"
        " '********' keeps the stored value); a change publishes a new version",
    )
    bump: Literal["major", "minor", "patch"] = "patch"
    version: str | None = None


class Named(_Req):
    """An operation on one named thing (``actions.show``, ``templates.show``)."""

    name: str


class Empty(_Req):
    """An operation without arguments (``actions.list``, ``templates.list``)."""


class FlowRef(_Req):
    """``flows.show`` / ``flows.history``."""

    flow_type: str
    limit: int = Field(default=20, ge=1, le=500)


class Attach(_Req):
    """``flows.attach``: add an action at a version (``latest`` resolves now)."""

    flow_type: str
    trigger: str
    action: str
    version: str = "latest"
    position: int | None = Field(default=None, ge=0)


class SetFlow(_Req):
    """``flows.set``: several slots of one flow type changed together, as one revision."""

    flow_type: str
    slots: dict[str, list[Attachment]] = Field(
        description="trigger -> its whole list of entries (action, version, rollout as"
        " flows.show gives them); triggers not named are kept"
    )
    revision: int | None = Field(
        description="the revision the changes were made on (null: none yet); another"
        " change committed since is a conflict"
    )


class Detach(_Req):
    """``flows.detach``."""

    flow_type: str
    trigger: str
    action: str


class Pin(_Req):
    """``flows.update``: pin an attached action to another version."""

    flow_type: str
    trigger: str
    action: str
    version: str


class Reorder(_Req):
    """``flows.reorder``: the slot's action names in their new order."""

    flow_type: str
    trigger: str
    order: list[str]


class DraftBody(BaseModel):
    """An unsaved version (``actions.test``'s ``draft``): what ``actions.publish`` takes."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    language: Literal["js", "ts"] | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_ms: int | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    secrets: dict[str, str] = Field(default_factory=dict)


class TryAction(_Req):
    """``actions.test``: run a stored version, or an unsaved ``draft``, on a sample trigger
    request (a dry run: no audit event, no sign-in decision; the action itself runs for
    real)."""

    name: str
    version: str = "latest"
    draft: DraftBody | None = Field(
        default=None,
        description="run this unsaved version instead of a stored one (compiled and checked"
        " as a publish would, not stored)",
    )
    flow_type: str = "external_authentication"
    trigger: str = "post_authentication"
    request: dict[str, Any] = Field(description="a trigger request as in docs/contract.md")


class Switch(_Req):
    """``actions.disable`` / ``actions.enable``: the kill switch of one action."""

    name: str
    reason: str = Field(default="", max_length=500)
    fallback: Literal["continue", "block"] = Field(
        default="continue", description="disable: what the slot entry decides instead"
    )


class RolloutRef(_Req):
    """``rollouts.status`` (slot optional), ``rollouts.promote`` / ``rollouts.abort``."""

    flow_type: str | None = None
    trigger: str | None = None
    action: str | None = Field(default=None, description="promote/abort: the slot entry")


class RolloutStart(_Req):
    """``rollouts.start``: a canary and/or a shadow on one slot entry."""

    flow_type: str
    trigger: str
    action: str
    canary: str | None = Field(default=None, description="a version of the action, or latest")
    percent: int = Field(default=10, ge=0, le=100)
    shadow: str | None = Field(default=None, description="a version of the action, or latest")
    error_rate: float = Field(default=0.05, ge=0, le=1, description="rolled back past it")
    min_runs: int = Field(default=50, ge=1, description="canary runs before it is judged")


class Recording(_Req):
    """``recordings.set``: record a slot's trigger inputs for replay (or stop)."""

    flow_type: str
    trigger: str
    enabled: bool = True
    redact: list[str] = Field(
        default_factory=list,
        description="dotted paths blanked before a record is stored (user.email, request.ip,"
        " context.idp.token, _reply.claims.email)",
    )


class ReplayReq(_Req):
    """``replay``: decide recorded requests again with one action at another version."""

    flow_type: str
    trigger: str
    with_: str = Field(alias="with", description="NAME@VERSION")
    since_s: float = Field(default=3600, gt=0, description="records of the last N seconds")
    limit: int = Field(default=10_000, ge=1, le=100_000)


class Rollback(_Req):
    """``flows.rollback``: make an earlier revision current again."""

    flow_type: str
    revision: int = Field(ge=1)


class Apply(_Req):
    """``apply``: a flows-as-code document, with script sources by action name."""

    file: FlowsFile
    sources: dict[str, str] = Field(default_factory=dict)
    dry_run: bool = False


class ConsoleAudit(_Req):
    """``console.audit``: the console records a sign-in or a refusal of its own (the console
    has no right to write the audit stream; the worker writes it for the tenant)."""

    event: Literal["signed_in", "refused"]
    method: Literal["token", "oidc"] | None = None
    role: Literal["viewer", "editor"] | None = None
    path: str | None = Field(default=None, max_length=500)
    reason: str | None = Field(default=None, max_length=500)


OPERATIONS: dict[str, type[_Req]] = {
    "actions.create": CreateAction,
    "actions.update": UpdateAction,
    "actions.publish": PublishVersion,
    "actions.list": Empty,
    "actions.show": Named,
    "actions.test": TryAction,
    "templates.list": Empty,
    "templates.show": Named,
    "flows.show": FlowRef,
    "flows.history": FlowRef,
    "flows.attach": Attach,
    "flows.detach": Detach,
    "flows.update": Pin,
    "flows.reorder": Reorder,
    "flows.rollback": Rollback,
    "flows.set": SetFlow,
    "apply": Apply,
    "actions.disable": Switch,
    "actions.enable": Switch,
    "rollouts.status": RolloutRef,
    "rollouts.start": RolloutStart,
    "rollouts.promote": RolloutRef,
    "rollouts.abort": RolloutRef,
    "recordings.set": Recording,
    "replay": ReplayReq,
    "console.audit": ConsoleAudit,
    "ingress.show": Empty,
}


def schema_documents() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the admin requests, for ``schemas/admin/``."""
    return {f"admin/{op}": model.model_json_schema() for op, model in OPERATIONS.items()}
