"""The flows-as-code file (``gatehook apply -f tenant.yaml``), as a model."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gatehook.domain.catalogue import TRIGGERS, FlowType, Trigger, is_valid_slot
from gatehook.domain.ingress import IngressSpec
from gatehook.domain.targets import TargetSpec

__all__ = ["ActionSpec", "FlowsFile", "RollbackRule", "SlotEntry", "entry_refs", "parse_ref"]

_REF = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,63})@(latest|\d+\.\d+\.\d+)")

ActionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
TenantSlug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def parse_ref(ref: str) -> tuple[str, str]:
    """``"name@1.2.3"`` or ``"name@latest"`` into (name, version)."""
    m = _REF.fullmatch(ref.strip())
    if m is None:
        raise ValueError(f"{ref!r} is not of the form name@MAJOR.MINOR.PATCH or name@latest")
    return m[1], m[2]


class ActionSpec(BaseModel):
    """One action of the file: a template with a config, a custom script, or a target (a
    tenant's HTTP endpoint)."""

    model_config = ConfigDict(extra="forbid")

    name: ActionName
    template: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    file: str | None = Field(default=None, description="script path, relative to the file")
    source: str | None = Field(default=None, description="inline script instead of a file")
    target: TargetSpec | None = Field(default=None, description="a target action's endpoint")
    language: Literal["js", "ts"] | None = None
    timeout_ms: int | None = Field(default=None, ge=1, le=30_000)
    allowed_to_fail: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)
    triggers: list[str] | None = Field(
        default=None,
        description="compatible triggers (post_authentication) or slots"
        " (external_authentication.post_authentication); default: every one",
    )
    display_name: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    config_schema: dict[str, Any] | None = Field(
        default=None, description="a custom action's config form (JSON Schema subset)"
    )
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="a custom action's secrets by name ('********' keeps the stored value)",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ActionSpec:
        kinds = [
            k for k in ("template", "file", "source", "target") if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                f"action {self.name}: give exactly one of template, file, source or target"
            )
        if self.template is None and self.config and self.config_schema is None:
            raise ValueError(
                f"action {self.name}: config belongs to template actions and custom actions"
                " with a config_schema"
            )
        for t in self.triggers or []:
            ft, dot, tr = t.partition(".")
            if not (is_valid_slot(ft, tr) if dot else t in {x.value for x in Trigger}):
                raise ValueError(f"action {self.name}: {t} is not a trigger or slot")
        return self


class RollbackRule(BaseModel):
    """When a canary goes back to the stable version by itself."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.05, ge=0, le=1)
    min_runs: int = Field(default=50, ge=1)


class SlotEntry(BaseModel):
    """A slot entry with a rollout: the stable version (``use``) and a canary and/or a
    shadow version of the same action."""

    model_config = ConfigDict(extra="forbid")

    use: str
    canary: str | None = None
    percent: int = Field(default=0, ge=0, le=100)
    rollback: RollbackRule = Field(default_factory=RollbackRule)
    shadow: str | None = None

    @model_validator(mode="after")
    def _same_action(self) -> SlotEntry:
        name = parse_ref(self.use)[0]
        for field in ("canary", "shadow"):
            ref = getattr(self, field)
            if ref is not None and parse_ref(ref)[0] != name:
                raise ValueError(f"{field} {ref} must be a version of {name}, as use is")
        if self.canary is None and self.shadow is None:
            raise ValueError(f"{self.use}: a mapping entry needs a canary or a shadow")
        if self.canary is not None and self.percent == 0:
            raise ValueError(f"{self.use}: a canary needs a percent above 0")
        return self


def entry_refs(entry: str | SlotEntry) -> str:
    """The stable reference of a slot entry (``name@version``)."""
    return entry if isinstance(entry, str) else entry.use


class FlowsFile(BaseModel):
    """A tenant's actions and flows, applied idempotently."""

    model_config = ConfigDict(extra="forbid")

    tenant: TenantSlug | None = None
    actions: list[ActionSpec] = Field(default_factory=list)
    flows: dict[FlowType, dict[Trigger, list[str | SlotEntry]]] = Field(default_factory=dict)
    ingress: IngressSpec | None = Field(
        default=None,
        description="the identity providers that may call the tenant through `gatehook http`"
        " and their secrets (absent: left as stored)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FlowsFile:
        names = [a.name for a in self.actions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"actions declared twice: {', '.join(dupes)}")
        for ft, slots in self.flows.items():
            for tr, refs in slots.items():
                if tr not in TRIGGERS[ft]:
                    raise ValueError(f"{tr.value} is not a trigger of {ft.value}")
                for ref in refs:
                    parse_ref(entry_refs(ref))
        return self
