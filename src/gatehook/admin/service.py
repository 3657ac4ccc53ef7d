"""Management use cases: create actions, publish versions, change flows, roll back.

Every change is validated before anything is written, written as a new immutable document
(an action version, a flow revision), audited on the stream, and broadcast on
``gatehook.v1.changes.<tenant>`` so workers drop their cached flow heads. Writes and their
audit events go through ``AuditedWrites`` (``admin.audited``): if the audit stream refuses
the event, the write is undone and the caller gets ``unavailable``: no change without its
audit event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from gatehook.admin.audited import AuditedWrites, Notify
from gatehook.admin.ports import AdminStore
from gatehook.admin.slot_events import SlotChange, new_event, slot_events
from gatehook.domain.auth0 import compatible_triggers
from gatehook.domain.catalogue import (
    ACTION_NAME_RE,
    TRIGGERS,
    FlowType,
    Trigger,
    is_valid_slot,
    slot_problem,
    tenant_problem,
)
from gatehook.domain.config_schema import SchemaError, check_schema, validate
from gatehook.domain.contract import AuditEvent
from gatehook.domain.ingress import IngressSpec, masked, merge_masked
from gatehook.domain.model import (
    ActionDef,
    ActionKind,
    ActionVersion,
    Attachment,
    Disabled,
    FlowRevision,
    ScriptStyle,
    latest_of,
)
from gatehook.domain.semver import Bump, Version
from gatehook.domain.targets import TargetSpec
from gatehook.errors import CompileError, Conflict, NotFound, ValidationFailed
from gatehook.service.ports import AuditSink, Compiled
from gatehook.templates.registry import SECRET_MASK, TemplateRegistry

__all__ = ["ActionRow", "AdminService", "Compiler", "Draft", "check_handlers"]


class Compiler(Protocol):
    """The compile port (``SandboxPool.compile``)."""

    async def compile(
        self, source: str, *, language: str, name: str, style: str = "auto", timeout_s: float = 60
    ) -> Compiled: ...


@dataclass(frozen=True, slots=True)
class Draft:
    """What a publish is made of: a script (custom) or a config (template), and options."""

    source: str | None = None
    language: Literal["js", "ts"] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    timeout_ms: int | None = None
    allowed_to_fail: bool = False
    allowed_hosts: list[str] = field(default_factory=list)
    target: dict[str, Any] | None = None  # a target action's endpoint (TargetSpec fields)
    secrets: dict[str, str] = field(default_factory=dict)  # a custom action's, by name


@dataclass(frozen=True, slots=True)
class ActionRow:
    """An action as the list shows it."""

    action: ActionDef
    attached: int


def _check_tenant(tenant: str) -> None:
    problem = tenant_problem(tenant)
    if problem is not None:
        raise ValidationFailed(problem, field="tenant")


def _check_name(name: str) -> None:
    if not ACTION_NAME_RE.fullmatch(name):
        raise ValidationFailed(
            f"action name {name!r} must match [A-Za-z][A-Za-z0-9_-]{{0,63}}", field="name"
        )


def _flow_type(flow_type: str) -> FlowType:
    try:
        return FlowType(flow_type)
    except ValueError:
        raise ValidationFailed(f"unknown flow type {flow_type!r}", field="flow_type") from None


def _slot(flow_type: str, trigger: str) -> tuple[FlowType, Trigger]:
    check_slot(flow_type, trigger)
    return FlowType(flow_type), Trigger(trigger)


def check_slot(flow_type: str, trigger: str) -> None:
    """``ValidationFailed`` naming the field at fault unless the catalogue has the slot."""
    problem = slot_problem(flow_type, trigger)
    if problem is not None:
        raise ValidationFailed(problem[1], field=problem[0])


class AdminService:
    """The management API's use cases, over the store, the compiler and the audit stream."""

    def __init__(
        self,
        *,
        store: AdminStore,
        compiler: Compiler,
        templates: TemplateRegistry,
        audit: AuditSink,
        notify: Notify,
        default_timeout_ms: int = 1000,
    ) -> None:
        self._store = store
        self._compiler = compiler
        self._templates = templates
        self._writes = AuditedWrites(audit, notify)
        self._default_timeout_ms = default_timeout_ms

    # -- actions -----------------------------------------------------------------------------
    async def create_action(
        self,
        tenant: str,
        name: str,
        *,
        template: str | None = None,
        triggers: list[str] | None = None,
        kind: Literal["custom", "target"] | None = None,
        display_name: str | None = None,
        description: str | None = None,
        config_schema: dict[str, Any] | None = None,
        actor: str = "api",
    ) -> ActionDef:
        """Create a custom action (no template), a target action (``kind="target"``: a
        tenant's HTTP endpoint), or one based on a platform template. Audited
        ``admin.action_created``."""
        action = self.new_action(
            tenant,
            name,
            template=template,
            triggers=triggers,
            kind=kind,
            display_name=display_name,
            description=description,
            config_schema=config_schema,
        )
        event = self._event(
            "admin.action_created",
            tenant,
            actor,
            action=name,
            details={"kind": action.kind.value, "template": template},
        )
        await self._writes.change(
            [event],
            lambda: self._store.insert_action(action),
            lambda: self._store.delete_action(tenant, name),
        )
        return action

    def new_action(
        self,
        tenant: str,
        name: str,
        *,
        template: str | None = None,
        triggers: list[str] | None = None,
        kind: Literal["custom", "target"] | None = None,
        display_name: str | None = None,
        description: str | None = None,
        config_schema: dict[str, Any] | None = None,
    ) -> ActionDef:
        """The action ``create_action`` would create, validated, not stored.

        ``triggers`` names the compatible triggers (``post_authentication``) or slots
        (``external_authentication.post_authentication``); a custom action may bring a
        ``config_schema``."""
        _check_tenant(tenant)
        _check_name(name)
        if display_name is not None and len(display_name) > 100:
            raise ValidationFailed("display_name: at most 100 characters", field="display_name")
        if description is not None and len(description) > 2000:
            raise ValidationFailed("description: at most 2000 characters", field="description")
        if config_schema is not None:
            if template is not None or kind == "target":
                raise ValidationFailed(
                    "a config schema belongs to custom actions", field="config_schema"
                )
            try:
                check_schema(config_schema)
            except SchemaError as exc:
                raise ValidationFailed(f"config_schema: {exc}", field="config_schema") from None
        slots: list[str] = []
        if triggers and any("." in t for t in triggers):
            # slots given: each as is, and a trigger named alone stands for all its slots
            wanted: set[str] = set()
            for t in triggers:
                ft, dot, tr = t.partition(".")
                if dot and not is_valid_slot(ft, tr):
                    raise ValidationFailed(
                        f"{t} is not a slot of the catalogue (flow_type.trigger)", field="triggers"
                    )
                if dot:
                    wanted.add(t)
                else:
                    wanted |= {f"{f.value}.{t}" for f, trs in TRIGGERS.items() if t in trs}
            slots = sorted(wanted)
            triggers = sorted({t.partition(".")[2] for t in wanted})
        if template is not None and kind is not None:
            raise ValidationFailed("a template action has no other kind", field="kind")
        if template is not None:
            tpl = self._templates.get(template)
            if tpl is None:
                raise ValidationFailed(f"unknown template {template!r}", field="template")
            allowed = list(tpl.triggers)
        else:
            allowed = list(Trigger)
        chosen = allowed
        if triggers:
            try:
                chosen = [Trigger(t) for t in triggers]
            except ValueError as exc:
                raise ValidationFailed(str(exc), field="triggers") from None
            bad = [t.value for t in chosen if t not in allowed]
            if bad:
                raise ValidationFailed(
                    f"template {template} cannot run at {', '.join(bad)}", field="triggers"
                )
        return ActionDef(
            tenant=tenant,
            name=name,
            kind=ActionKind.TEMPLATE
            if template
            else (ActionKind.TARGET if kind == "target" else ActionKind.CUSTOM),
            template=template,
            triggers=chosen,
            slots=slots,
            display_name=display_name,
            description=description,
            config_schema=config_schema,
            created_at=datetime.now(UTC),
        )

    def merged_action(
        self,
        action: ActionDef,
        *,
        triggers: list[str] | None = None,
        display_name: str | None = None,
        description: str | None = None,
        config_schema: dict[str, Any] | None = None,
    ) -> ActionDef:
        """``action`` with the metadata given (None: as stored), validated as at create."""
        kind: Literal["custom", "target"] | None = (
            "target" if action.kind is ActionKind.TARGET else None
        )
        stored_triggers = action.compatible()
        merged = self.new_action(
            action.tenant,
            action.name,
            template=action.template,
            kind=kind,
            triggers=triggers if triggers is not None else stored_triggers,
            display_name=display_name if display_name is not None else action.display_name,
            description=description if description is not None else action.description,
            config_schema=config_schema if config_schema is not None else action.config_schema,
        )
        return merged.model_copy(
            update={
                "created_at": action.created_at,
                "latest_version": action.latest_version,
                "disabled": action.disabled,
            }
        )

    async def update_action(
        self,
        tenant: str,
        name: str,
        *,
        actor: str,
        triggers: list[str] | None = None,
        display_name: str | None = None,
        description: str | None = None,
        config_schema: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Change an action's own metadata where a value is given (None: left as stored);
        the names of the fields that changed. Audited ``admin.action_updated``. Narrowing
        the compatible slots is refused while the action is attached outside them."""
        action = await self.action(tenant, name)
        wanted = self.merged_action(
            action,
            triggers=triggers,
            display_name=display_name,
            description=description,
            config_schema=config_schema,
        )
        names = ("triggers", "slots", "display_name", "description", "config_schema")
        fields = {f: getattr(wanted, f) for f in names if getattr(wanted, f) != getattr(action, f)}
        if not fields:
            return []
        for ft in FlowType:
            flow = await self._store.latest_flow(tenant, ft)
            for tr, entries in (flow.slots if flow else {}).items():
                slot = f"{ft.value}.{tr.value}"
                if any(a.action == name for a in entries) and (not wanted.fits(ft.value, tr.value)):
                    raise ValidationFailed(
                        f"{name} is attached at {slot}, which its new compatible triggers"
                        " leave out: detach it first",
                        field="triggers",
                    )
        if dry_run:
            return sorted(fields)

        def stored(values: dict[str, Any]) -> dict[str, Any]:
            return {k: [t.value for t in v] if k == "triggers" else v for k, v in values.items()}

        event = self._event(
            "admin.action_updated", tenant, actor, action=name, details={"fields": sorted(fields)}
        )
        await self._writes.change(
            [event],
            lambda: self._store.set_action_metadata(tenant, name, stored(fields)),
            lambda: self._store.set_action_metadata(
                tenant, name, stored({k: getattr(action, k) for k in fields})
            ),
        )
        await self.changed(tenant)
        return sorted(fields)

    async def action(self, tenant: str, name: str) -> ActionDef:
        """One action of the tenant; ``NotFound`` otherwise (also for other tenants' actions)."""
        _check_tenant(tenant)
        action = await self._store.get_action(tenant, name)
        if action is None:
            raise NotFound(f"action {name} not found")
        return action

    async def versions(self, tenant: str, name: str) -> list[ActionVersion]:
        """Every version of one action, oldest first."""
        await self.action(tenant, name)
        return await self._store.list_versions(tenant, name)

    async def check_draft(self, action: ActionDef, draft: Draft) -> Compiled | None:
        """Everything ``publish`` would refuse about ``draft`` for ``action`` (which need not
        be stored yet), found without writing anything: the config, the target, and the
        script compiled (the compiler keeps the result, so the publish that follows does not
        compile again). The compiled script, if the draft has one."""
        _, canonical, _ = await self._normalise(action.tenant, action.name, draft, action)
        if canonical.source is None or canonical.language is None:
            return None
        return await self._compile(canonical.source, canonical.language, action.name)

    async def _compile(self, source: str, language: str, name: str) -> Compiled:
        """``source`` compiled, its packages checked: a package it names is the reason
        given, also when it made the script fail to load."""
        try:
            compiled = await self._compiler.compile(source, language=language, name=name)
        except CompileError as exc:
            _refuse_packages(exc.modules)
            raise
        _refuse_packages(compiled.modules)
        return compiled

    async def _normalise(
        self,
        tenant: str,
        name: str,
        draft: Draft,
        action: ActionDef | None = None,
        *,
        stored_secrets: bool = True,
    ) -> tuple[ActionDef, Draft, str]:
        """Validate a draft against its action; return the canonical draft and its digest.
        With ``stored_secrets`` False (a draft run, not a publish), a secret sent masked is
        not replaced by the stored one: it stays the mask, and no stored secret is read."""
        action = action or await self.action(tenant, name)
        timeout = draft.timeout_ms if draft.timeout_ms is not None else self._default_timeout_ms
        if not 1 <= timeout <= 30_000:
            raise ValidationFailed("timeout_ms must be between 1 and 30000", field="timeout_ms")
        hosts = sorted({h.strip().lower() for h in draft.allowed_hosts if h.strip()})
        cfg = dict(draft.config or {})
        secrets = dict(draft.secrets or {})
        if secrets and action.kind is not ActionKind.CUSTOM:
            raise ValidationFailed(
                "secrets belong to custom actions (a template keeps its own in its config)",
                field="secrets",
            )
        source, lang = draft.source, draft.language
        target: dict[str, Any] | None = None
        if action.kind is not ActionKind.TARGET and draft.target is not None:
            raise ValidationFailed("target belongs to target actions", field="target")
        if action.kind is ActionKind.TARGET:
            if source is not None or cfg:
                raise ValidationFailed(
                    "a target action takes a target, not a script or config", field="target"
                )
            target = await self._target(tenant, name, draft.target, stored_secrets)
            lang = None
        elif action.kind is ActionKind.TEMPLATE:
            if source is not None:
                raise ValidationFailed(
                    "a template action takes a config, not a script", field="source"
                )
            tpl = self._templates.get(action.template or "")
            if tpl is None:
                raise ValidationFailed(f"unknown template {action.template!r}", field="template")
            kept = [k for k in tpl.secret_fields if cfg.get(k) == SECRET_MASK]
            if kept and stored_secrets:
                # A form that showed the secret masked sends the mask back: keep the secret.
                existing = await self._store.list_versions(tenant, name)
                if not existing:
                    raise ValidationFailed(
                        f"{kept[0]}: there is no stored secret to keep", field=kept[0]
                    )
                latest = latest_of(existing)
                assert latest is not None
                for k in kept:
                    cfg[k] = latest.config.get(k)
            cfg = tpl.parse_config(cfg).model_dump(mode="json")
            lang = None
        else:
            if not source:
                raise ValidationFailed("a custom action needs a script", field="source")
            if action.config_schema is not None:
                try:
                    cfg = validate(action.config_schema, cfg)
                except SchemaError as exc:
                    raise ValidationFailed(f"config: {exc}", field=exc.path or "config") from None
            elif cfg:
                raise ValidationFailed(
                    "config belongs to template actions and custom actions with a config_schema",
                    field="config",
                )
            lang = lang or "js"
            secrets = await self._secrets(tenant, name, secrets, stored_secrets)
        canonical = Draft(
            source=source,
            language=lang,
            config=cfg,
            timeout_ms=timeout,
            allowed_to_fail=draft.allowed_to_fail,
            allowed_hosts=hosts,
            target=target,
            secrets=secrets,
        )
        content = json.dumps(dataclasses.asdict(canonical), sort_keys=True)
        return action, canonical, hashlib.sha256(content.encode()).hexdigest()

    async def _secrets(
        self, tenant: str, name: str, given: dict[str, str], stored_secrets: bool = True
    ) -> dict[str, str]:
        """A custom action's secrets, checked; a value sent as the mask keeps the stored one
        (a form or a file read back shows them masked), unless ``stored_secrets`` is False."""
        if len(given) > _MAX_SECRETS:
            raise ValidationFailed(f"at most {_MAX_SECRETS} secrets", field="secrets")
        kept = [k for k, v in given.items() if v == SECRET_MASK] if stored_secrets else []
        stored: dict[str, str] = {}
        if kept:
            existing = await self._store.list_versions(tenant, name)
            latest = latest_of(existing)
            if latest is not None:
                stored = latest.secrets
        out: dict[str, str] = {}
        for key, value in given.items():
            if not isinstance(key, str) or not _SECRET_NAME.fullmatch(key):
                raise ValidationFailed(
                    f"secret name {key!r}: letters, digits and _, not starting with a digit",
                    field="secrets",
                )
            if value == SECRET_MASK and stored_secrets:
                if key not in stored:
                    raise ValidationFailed(f"{key}: there is no stored secret to keep", field=key)
                value = stored[key]
            if not isinstance(value, str) or len(value.encode()) > _MAX_SECRET_BYTES:
                raise ValidationFailed(
                    f"secret {key}: a string of at most {_MAX_SECRET_BYTES} bytes", field=key
                )
            out[key] = value
        return dict(sorted(out.items()))

    async def _target(
        self, tenant: str, name: str, given: dict[str, Any] | None, stored_secrets: bool = True
    ) -> dict[str, Any]:
        """The canonical target of a draft. A signing key left out or sent back masked keeps
        the stored one; the first version without one gets a generated key."""
        if not given:
            raise ValidationFailed("a target action needs a target (endpoint, ...)", field="target")
        data = dict(given)
        key = data.get("signing_key")
        if not stored_secrets and (key is None or key == SECRET_MASK):
            data["signing_key"] = secrets.token_urlsafe(32)  # a draft's own, never the stored
        elif key is None or key == SECRET_MASK:
            existing = await self._store.list_versions(tenant, name)
            stored = None
            latest = latest_of(existing)
            if latest is not None and latest.target is not None:
                stored = latest.target.signing_key
            if stored is None and key == SECRET_MASK:
                raise ValidationFailed(
                    "signing_key: there is no stored key to keep", field="target.signing_key"
                )
            data["signing_key"] = stored or secrets.token_urlsafe(32)
        try:
            spec = TargetSpec.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["target", *(str(p) for p in first["loc"])])
            raise ValidationFailed(f"{where}: {first['msg']}", field=where) from None
        return spec.model_dump(mode="json")

    async def unchanged(self, tenant: str, name: str, draft: Draft) -> ActionVersion | None:
        """The newest version if publishing ``draft`` would change nothing, else None."""
        _, _, digest = await self._normalise(tenant, name, draft)
        existing = await self._store.list_versions(tenant, name)
        latest = latest_of(existing)
        return latest if latest is not None and latest.content_hash == digest else None

    async def draft_version(self, tenant: str, name: str, draft: Draft) -> ActionVersion:
        """``draft`` as the version a publish would make, compiled, not stored: for running
        an unsaved draft (``actions.test``). Its version is ``draft-<digest>``, so that no
        warm interpreter of another draft is taken for it. A draft never receives a stored
        secret: one sent masked reaches it as the mask."""
        action, draft, digest = await self._normalise(tenant, name, draft, stored_secrets=False)
        return await self._version_of(
            action, draft, digest, version=f"draft-{digest[:12]}", actor="draft"
        )

    async def _version_of(
        self, action: ActionDef, draft: Draft, digest: str, *, version: str, actor: str
    ) -> ActionVersion:
        """The version record of a normalised ``draft``, its script compiled."""
        source, lang = draft.source, draft.language
        compiled: Compiled | None = None
        if source is not None and lang is not None:
            compiled = await self._compile(source, lang, action.name)
        return ActionVersion(
            tenant=action.tenant,
            action=action.name,
            version=version,
            kind=action.kind,
            template=action.template,
            config=draft.config,
            language=lang,
            style=compiled.style if compiled else None,
            exports=list(compiled.exports) if compiled else [],
            uses_cache=bool(
                compiled
                and compiled.style is ScriptStyle.AUTH0
                and _CACHE.search(source or "") is not None
            ),
            source=source,
            compiled=compiled.code if compiled else None,
            timeout_ms=draft.timeout_ms or self._default_timeout_ms,
            allowed_to_fail=draft.allowed_to_fail,
            allowed_hosts=draft.allowed_hosts,
            target=TargetSpec.model_validate(draft.target) if draft.target else None,
            secrets=draft.secrets,
            content_hash=digest,
            created_at=datetime.now(UTC),
            created_by=actor,
        )

    async def publish(
        self,
        tenant: str,
        name: str,
        draft: Draft,
        *,
        actor: str,
        bump: Bump = "patch",
        version: str | None = None,
        generated: list[str] | None = None,
    ) -> tuple[ActionVersion, bool]:
        """Publish a new immutable version; ``(newest, False)`` when nothing changed.

        A target action's signing key made here (none given, none stored) is appended to
        ``generated``, for the caller to show once.

        The first version is 1.0.0 unless given. Later ones bump the patch (or ``bump``), or
        take an explicit ``version`` that must be above every existing one. Scripts are
        compiled here, once per version, and stored compiled.
        """
        given_key = (draft.target or {}).get("signing_key")
        action, draft, digest = await self._normalise(tenant, name, draft)
        existing = await self._store.list_versions(tenant, name)
        made_key = (
            action.kind is ActionKind.TARGET
            and given_key is None
            and not any(v.target and v.target.signing_key for v in existing)
        )
        latest = latest_of(existing)
        newest_version = Version.parse(latest.version) if latest is not None else None
        if latest is not None and version is None and latest.content_hash == digest:
            return latest, False
        if version is not None:
            try:
                wanted = Version.parse(version)
            except ValueError as exc:
                raise ValidationFailed(str(exc), field="version") from None
            if newest_version is not None and wanted <= newest_version:
                raise ValidationFailed(
                    f"version {wanted} is not above the newest version {newest_version}",
                    field="version",
                )
        else:
            wanted = newest_version.bump(bump) if newest_version is not None else Version(1, 0, 0)
        record = await self._version_of(action, draft, digest, version=str(wanted), actor=actor)
        event = self._event(
            "flow.action_published", tenant, actor, action=name, version=record.version
        )
        await self._writes.change(
            [event],
            lambda: self._store.insert_version(record),
            lambda: self._store.delete_version(tenant, name, record.version),
        )
        await self._store.set_latest_version(tenant, name, record.version)
        if made_key and generated is not None and record.target is not None:
            generated.append(record.target.signing_key or "")
        return record, True

    async def list_actions(self, tenant: str) -> list[ActionRow]:
        """Every action with how many flow slots currently use it."""
        _check_tenant(tenant)
        actions = await self._store.list_actions(tenant)
        counts: dict[str, int] = {}
        for ft in FlowType:
            flow = await self._store.latest_flow(tenant, ft)
            if flow is None:
                continue
            for atts in flow.slots.values():
                for name in {a.action for a in atts}:
                    counts[name] = counts.get(name, 0) + 1
        return [ActionRow(a, counts.get(a.name, 0)) for a in actions]

    # -- flows -------------------------------------------------------------------------------
    async def flow(self, tenant: str, flow_type: str) -> FlowRevision | None:
        """The current revision of one flow (None: the tenant has none)."""
        _check_tenant(tenant)
        return await self._store.latest_flow(tenant, _flow_type(flow_type))

    async def history(self, tenant: str, flow_type: str, limit: int = 50) -> list[FlowRevision]:
        """Revisions of one flow, newest first."""
        _check_tenant(tenant)
        return await self._store.flow_history(tenant, _flow_type(flow_type), limit)

    async def set_slot(
        self,
        tenant: str,
        flow_type: str,
        trigger: str,
        attachments: list[Attachment],
        *,
        actor: str,
        note: str | None = None,
    ) -> FlowRevision | None:
        """Make ``attachments`` the slot's list as a new revision (None when unchanged)."""
        _check_tenant(tenant)
        ft, tr = _slot(flow_type, trigger)
        await self._check_slot(tenant, ft, tr, attachments)
        current = await self._store.latest_flow(tenant, ft)
        before = current.slot(tr) if current else []
        if before == attachments:
            return None
        slots = dict(current.slots) if current else {}
        slots[tr] = list(attachments)
        return await self.commit_slots(tenant, ft, current, slots, actor, note, {tr: before})

    async def set_flow(
        self,
        tenant: str,
        flow_type: str,
        slots: dict[str, list[Attachment]],
        *,
        base: int | None,
        actor: str,
    ) -> FlowRevision | None:
        """Make each of ``slots`` (trigger -> list) its slot's list, together as one new
        revision (None when nothing changes); the other slots are kept. ``base`` is the
        revision the changes were made on: if another change committed since, ``Conflict``
        (the caller reloads and redoes them, as nothing is merged)."""
        _check_tenant(tenant)
        ft = _flow_type(flow_type)
        wanted = {}
        for trigger, attachments in slots.items():
            _, tr = _slot(flow_type, trigger)
            await self._check_slot(tenant, ft, tr, attachments)
            wanted[tr] = list(attachments)
        current = await self._store.latest_flow(tenant, ft)
        if (current.revision if current else None) != base:
            now = current.revision if current else "none"
            raise Conflict(
                f"{flow_type} changed since revision {base} (now {now}): reload and make"
                " the changes again"
            )
        befores = {tr: current.slot(tr) if current else [] for tr in wanted}
        changed = {tr for tr in wanted if befores[tr] != wanted[tr]}
        if not changed:
            return None
        new = dict(current.slots) if current else {}
        new.update({tr: wanted[tr] for tr in changed})
        return await self.commit_slots(
            tenant, ft, current, new, actor, None, {tr: befores[tr] for tr in changed}
        )

    async def _check_slot(
        self, tenant: str, ft: FlowType, tr: Trigger, attachments: list[Attachment]
    ) -> None:
        """Every entry's action exists, fits the slot, has its versions and handlers; no
        action twice."""
        trigger = tr.value
        for att in attachments:
            action = await self._store.get_action(tenant, att.action)
            if action is None:
                raise NotFound(f"action {att.action} not found")
            if not action.fits(ft.value, tr.value):
                raise ValidationFailed(
                    f"action {att.action} is not compatible with {ft.value}.{trigger} "
                    f"(compatible: {', '.join(action.compatible())})",
                    field="trigger",
                )
            wanted = [att.version]
            if att.rollout is not None:
                wanted += [v for v in (att.rollout.canary, att.rollout.shadow) if v]
            for version in wanted:
                found = await self._store.get_version(tenant, att.action, version)
                if found is None:
                    raise NotFound(f"version {version} of {att.action} not found")
                check_handlers(att.action, version, found.style, found.exports, tr)
        if len({a.action for a in attachments}) != len(attachments):
            raise ValidationFailed("an action can be attached to a slot only once", field="action")

    async def rollback(
        self, tenant: str, flow_type: str, revision: int, *, actor: str
    ) -> FlowRevision | None:
        """Make an earlier revision's slots current again (as a new revision)."""
        _check_tenant(tenant)
        ft = _flow_type(flow_type)
        target = await self._store.get_flow(tenant, ft, revision)
        if target is None:
            raise NotFound(f"revision {revision} of {flow_type} not found")
        current = await self._store.latest_flow(tenant, ft)
        assert current is not None
        if current.slots == target.slots:
            return None
        befores = {tr: current.slot(tr) for tr in set(current.slots) | set(target.slots)}
        return await self.commit_slots(
            tenant,
            ft,
            current,
            dict(target.slots),
            actor,
            f"rollback to revision {revision}",
            befores,
        )

    async def commit_slots(
        self,
        tenant: str,
        ft: FlowType,
        current: FlowRevision | None,
        slots: dict[Trigger, list[Attachment]],
        actor: str,
        note: str | None,
        befores: dict[Trigger, list[Attachment]],
        extra: list[AuditEvent] | None = None,
    ) -> FlowRevision:
        """A new revision with ``slots`` (``Conflict`` if another change committed first),
        audited with the slot differences and ``extra`` events, broadcast to every worker."""
        before_rev = current.revision if current else None
        flow = FlowRevision(
            tenant=tenant,
            flow_type=ft,
            revision=(before_rev or 0) + 1,
            slots={tr: atts for tr, atts in slots.items() if atts},
            created_at=datetime.now(UTC),
            actor=actor,
            note=note,
        )
        events = []
        for tr, before in befores.items():
            change = SlotChange(tenant, ft, tr, actor, before_rev, flow.revision)
            # rollouts that ``extra`` ends (a promotion, an abort) are audited there
            ended = {e.action for e in extra or [] if e.trigger == tr.value and e.action}
            events.extend(slot_events(change, before, flow.slot(tr), ended))
        for event in extra or []:
            events.append(
                event.model_copy(
                    update={"flow_revision": flow.revision, "flow_revision_before": before_rev}
                )
            )
        await self._writes.change(
            events,
            lambda: self._store.insert_flow(flow),  # Conflict if someone else committed first
            lambda: self._store.delete_flow(tenant, ft, flow.revision),
        )
        await self._store.advance_flow(tenant, ft, flow.revision, flow)
        await self.changed(tenant)
        return flow

    async def ingress(self, tenant: str) -> dict[str, dict[str, Any]]:
        """``tenant``'s providers for the gateway, the secrets opened (see ``domain.ingress``)."""
        _check_tenant(tenant)
        return await self._store.get_ingress(tenant)

    async def set_ingress(
        self, tenant: str, spec: IngressSpec, *, actor: str, dry_run: bool = False
    ) -> str | None:
        """Store the providers of ``spec`` (masked secrets keep the stored ones); the change
        in words, or ``None`` when nothing changes. Audited (``ingress.updated``)."""
        _check_tenant(tenant)
        stored = await self._store.get_ingress(tenant)
        try:
            wanted = merge_masked(spec.providers(), stored)
        except ValueError as exc:
            raise ValidationFailed(str(exc), field="ingress") from None
        if wanted == stored:
            return None
        change = "set ingress: " + (
            ", ".join(f"{n} ({len(e['secrets'])} secret(s))" for n, e in wanted.items()) or "none"
        )
        if not dry_run:
            event = self._event(
                "ingress.updated", tenant, actor, details={"ingress": masked(wanted)}
            )
            await self._writes.change(
                [event],
                lambda: self._store.set_ingress(tenant, wanted),
                lambda: self._store.set_ingress(tenant, stored),
            )
        return change

    async def set_recording(
        self, tenant: str, flow_type: str, trigger: str, redact: list[str] | None, *, actor: str
    ) -> bool:
        """Record the trigger inputs of a slot (``redact``: dotted paths to blank), or stop
        (None); False when nothing changes. Audited ``flow.recording_changed``."""
        _check_tenant(tenant)
        ft, tr = _slot(flow_type, trigger)
        slot = f"{ft.value}.{tr.value}"
        before = (await self._store.tenant_heads(tenant)).recordings.get(slot)
        if before == redact:
            return False
        event = self._event(
            "flow.recording_changed",
            tenant,
            actor,
            flow_type=ft.value,
            trigger=tr.value,
            details={"recording": redact is not None, "redact": redact or []},
        )
        await self._writes.change(
            [event],
            lambda: self._store.set_recording(tenant, slot, redact),
            lambda: self._store.set_recording(tenant, slot, before),
        )
        await self.changed(tenant)
        return True

    async def set_disabled(
        self, tenant: str, name: str, switch: Disabled | None, event: AuditEvent
    ) -> None:
        """Throw (or, with None, release) an action's kill switch, audited with ``event``."""
        action = await self.action(tenant, name)
        await self._writes.change(
            [event],
            lambda: self._store.set_disabled(tenant, name, switch),
            lambda: self._store.set_disabled(tenant, name, action.disabled),
        )
        await self.changed(tenant)

    @staticmethod
    def event(type_: str, tenant: str, actor: str, **fields: Any) -> AuditEvent:
        """A management audit event (its id new, its time now)."""
        return AdminService._event(type_, tenant, actor, **fields)

    async def publish_events(self, events: list[AuditEvent]) -> None:
        """Publish events that go with no write (a console sign-in, a refusal) and wait for
        the stream's acks."""
        await self._writes.record(events)

    async def changed(self, tenant: str) -> None:
        """Broadcast that ``tenant``'s flows or actions changed."""
        await self._writes.changed(tenant)

    @property
    def store(self) -> AdminStore:
        """The store (for the rollout and kill-switch use cases in ``admin.rollouts``)."""
        return self._store

    @staticmethod
    def _event(type_: str, tenant: str, actor: str, **fields: Any) -> AuditEvent:
        return new_event(type_, tenant, actor, **fields)


_CACHE = re.compile(r"\bcache\b")  # api.cache, or an alias of it: read before each run
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_SECRETS = 32
_MAX_SECRET_BYTES = 4096
_MODULES = ("zitadel/http", "zitadel/log", "zitadel/uuid")


def check_handlers(
    action: str, version: str, style: ScriptStyle | None, exports: Sequence[str], trigger: Trigger
) -> None:
    """An Auth0 Action runs only where one of its handlers does: refuse attaching it
    elsewhere, naming where it fits."""
    fits = compatible_triggers(list(exports))
    if style is ScriptStyle.AUTH0 and trigger not in fits:
        raise ValidationFailed(
            f"{action}@{version} is an Auth0 Action exporting {', '.join(exports)}: it cannot"
            f" run at {trigger.value} (compatible: {', '.join(t.value for t in fits) or 'none'})",
            field="trigger",
        )


def _refuse_packages(modules: Sequence[tuple[str, int, int]]) -> None:
    """npm packages are not available to scripts: a script whose syntax names one (a
    ``require('axios')`` call, an ``import`` from it) is refused at publish, naming it and
    where, not at its first run. The names come from the compiler's syntax tree, so a
    ``require`` in a string or a comment is none; a name computed at run time is refused by
    the runtime's ``require``."""
    for name, line, column in modules:
        if name not in _MODULES:
            raise ValidationFailed(
                f"the script requires {name!r} (line {line}, column {column}): npm packages"
                f" are not supported (available: {', '.join(_MODULES)})",
                field="source",
            )
