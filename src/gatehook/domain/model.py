"""The stored domain: actions, immutable action versions, flow revisions, sign-in pins."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatehook.domain.catalogue import FlowType, Trigger, all_slots
from gatehook.domain.semver import Version
from gatehook.domain.targets import TargetSpec

__all__ = [
    "ActionDef",
    "ActionKind",
    "ActionVersion",
    "Attachment",
    "Disabled",
    "FlowRevision",
    "Rollout",
    "ScriptStyle",
    "TenantHeads",
    "latest_of",
]


class ActionKind(StrEnum):
    """Where an action's logic comes from."""

    TEMPLATE = "template"
    CUSTOM = "custom"
    TARGET = "target"  # a tenant's HTTP endpoint (ZITADEL Actions v2 compatible)


class ScriptStyle(StrEnum):
    """The programming models of custom actions (docs/contract.md)."""

    MODULE = "module"
    ZITADEL = "zitadel"
    AUTH0 = "auth0"


class Disabled(BaseModel):
    """A kill switch thrown on an action: it does not run anywhere until enabled again."""

    model_config = ConfigDict(frozen=True)

    reason: str = ""
    fallback: Literal["continue", "block"] = "continue"
    actor: str = "system"
    at: datetime


class ActionDef(BaseModel):
    """An action of a tenant: a name, a kind, and the triggers it may be attached to."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    name: str
    kind: ActionKind
    template: str | None = None
    triggers: list[Trigger]
    slots: list[str] = Field(
        default_factory=list,
        description="the compatible slots as flow_type.trigger (empty: every slot of"
        " `triggers`); attaching elsewhere is refused",
    )
    display_name: str | None = None
    description: str | None = None
    config_schema: dict[str, Any] | None = Field(
        default=None,
        description="a custom action's config form (the JSON Schema subset templates use);"
        " each published config is validated against it and reaches the script as input.config",
    )
    latest_version: str | None = None
    created_at: datetime
    disabled: Disabled | None = None

    def fits(self, flow_type: str, trigger: str) -> bool:
        """Whether the action may be attached at ``flow_type.trigger``."""
        return any(t.value == trigger for t in self.triggers) and (
            not self.slots or f"{flow_type}.{trigger}" in self.slots
        )

    def compatible(self) -> list[str]:
        """Its compatible slots, or triggers when it names no slot (for messages)."""
        return self.slots or [t.value for t in self.triggers]

    def fitting_slots(self) -> list[str]:
        """Every slot of the catalogue it may be attached at (``fits``), as flow_type.trigger."""
        return [f"{ft}.{tr}" for ft, tr in all_slots() if self.fits(ft, tr)]


class ActionVersion(BaseModel):
    """An immutable published version of an action, compiled where it is a script."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    action: str
    version: str
    kind: ActionKind
    template: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    language: Literal["js", "ts"] | None = None
    style: ScriptStyle | None = None
    exports: list[str] = Field(
        default_factory=list, description="Auth0 style: the handlers the script exports"
    )
    uses_cache: bool = Field(
        default=False, description="Auth0 style: the script names api.cache (read before a run)"
    )
    source: str | None = None
    compiled: str | None = None
    timeout_ms: int = 1000
    allowed_to_fail: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)
    target: TargetSpec | None = None
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="a custom action's secrets (sealed at rest, masked when read back);"
        " scripts read them as input.secrets, Auth0 Actions as event.secrets",
    )
    content_hash: str
    created_at: datetime
    created_by: str = "system"


RolloutState = Literal["running", "rolled_back", "promoted", "aborted"]


class Rollout(BaseModel):
    """A change under way in one slot entry: a canary version run for ``percent`` of
    sign-ins (rolled back by itself past ``error_rate`` after ``min_runs``), and/or a shadow
    version run after the reply and compared with the live one."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="new for every new canary or shadow version")
    canary: str | None = None
    percent: int = Field(default=0, ge=0, le=100)
    error_rate: float = Field(default=0.05, ge=0, le=1)
    min_runs: int = Field(default=50, ge=1)
    shadow: str | None = None
    state: RolloutState = "running"
    started_at: datetime | None = None

    @property
    def live(self) -> bool:
        """Whether the canary or the shadow still runs."""
        return self.state == "running"


class Attachment(BaseModel):
    """One entry of a slot: an action pinned at a concrete version (the stable one when a
    rollout is under way)."""

    model_config = ConfigDict(frozen=True)

    action: str
    version: str
    rollout: Rollout | None = None

    def ref(self) -> str:
        """``name@version``."""
        return f"{self.action}@{self.version}"


class FlowRevision(BaseModel):
    """One immutable revision of a tenant's flow of one type."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    flow_type: FlowType
    revision: int = Field(ge=1)
    slots: dict[Trigger, list[Attachment]] = Field(default_factory=dict)
    created_at: datetime
    actor: str = "system"
    note: str | None = None

    def slot(self, trigger: Trigger) -> list[Attachment]:
        """The ordered attachments of ``trigger`` (empty when none)."""
        return self.slots.get(trigger, [])


class TenantHeads(BaseModel):
    """What a tenant's decisions start from, kept in one document per tenant: the newest
    revision of each flow type, the kill switches that are on, the recorded slots."""

    model_config = ConfigDict(frozen=True)

    revisions: dict[FlowType, int | None]
    disabled: dict[str, Disabled] = Field(default_factory=dict)
    recordings: dict[str, list[str]] = Field(
        default_factory=dict, description="flow_type.trigger -> redacted dotted paths"
    )
    current: dict[FlowType, FlowRevision] = Field(
        default_factory=dict, description="the current revision of each flow type, when known"
    )


def latest_of(versions: Iterable[ActionVersion]) -> ActionVersion | None:
    """The version of the highest semver among ``versions`` (None: there are none): what
    "the latest version" of an action means everywhere (``latest`` in a flows file, the
    secrets a new version keeps, the version ``apply`` bumps)."""
    return max(versions, key=lambda v: Version.parse(v.version), default=None)
