"""Flows as code: ``apply`` a tenant file idempotently, with a plan first.

Unchanged actions publish nothing; a changed one publishes the next patch version; a slot is
updated only where its pinned list differs, each change audited by the admin use cases.
``@latest`` resolves to the newest version at apply time: stored flows pin concrete versions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gatehook.admin.files import load_yaml, read_inside
from gatehook.admin.service import AdminService, Draft, check_handlers
from gatehook.domain.catalogue import Trigger, slot_problem
from gatehook.domain.flowfile import ActionSpec, FlowsFile, SlotEntry, entry_refs, parse_ref
from gatehook.domain.model import (
    ActionDef,
    ActionKind,
    ActionVersion,
    Attachment,
    Rollout,
    latest_of,
)
from gatehook.domain.problems import field_of, problems, summary
from gatehook.domain.semver import Version
from gatehook.errors import NotFound, ValidationFailed
from gatehook.service.ports import Compiled

__all__ = ["Plan", "apply_file", "load_file"]


@dataclass
class Plan:
    """What an apply does (or did): one line a change; empty when nothing changes."""

    tenant: str
    changes: list[str] = field(default_factory=list)
    applied: bool = False

    @property
    def empty(self) -> bool:
        """True when the tenant already matches the file."""
        return not self.changes


def load_file(path: Path) -> tuple[FlowsFile, dict[str, str]]:
    """Parse a tenant file and read the scripts it names (paths relative to the file)."""
    try:
        raw = load_yaml(path.read_text())
    except OSError as exc:
        raise ValidationFailed(f"cannot read {path}: {exc}") from None
    try:
        doc = FlowsFile.model_validate(raw or {})
    except ValidationError as exc:
        lines = problems(exc, FlowsFile, raw)
        raise ValidationFailed(f"{path}: {summary(lines)}", field=field_of(exc, "file")) from None
    sources: dict[str, str] = {}
    for spec in doc.actions:
        if spec.file is not None:
            # a script's path is relative to the file, and stays in its folder
            sources[spec.name] = read_inside(
                path.parent, path.parent / spec.file, f"action {spec.name}"
            )
        elif spec.source is not None:
            sources[spec.name] = spec.source
    return doc, sources


def _draft(spec: ActionSpec, sources: dict[str, str]) -> Draft:
    language = spec.language
    if language is None and spec.file is not None:
        language = "ts" if spec.file.endswith((".ts", ".mts")) else "js"
    return Draft(
        source=sources.get(spec.name, spec.source),
        language=language,
        config=dict(spec.config),
        timeout_ms=spec.timeout_ms,
        allowed_to_fail=spec.allowed_to_fail,
        allowed_hosts=list(spec.allowed_hosts),
        target=spec.target.model_dump(mode="json") if spec.target is not None else None,
        secrets=dict(spec.secrets),
    )


async def apply_file(
    admin: AdminService,
    doc: FlowsFile,
    sources: dict[str, str],
    *,
    tenant: str | None = None,
    actor: str,
    dry_run: bool = False,
) -> Plan:
    """Bring ``tenant`` (or the file's tenant) in line with the file; return the plan.

    The whole file is validated before anything is written (every action's kind, template,
    config, target and script, which is compiled; every slot's actions, versions and
    triggers): a refused file changes nothing. With ``dry_run`` nothing is written either.
    """
    target = tenant or doc.tenant
    if target is None:
        raise ValidationFailed("no tenant: give one in the file or with --tenant", field="tenant")
    await _validate(admin, doc, sources, target)
    plan = Plan(target)
    newest: dict[str, str | None] = {}
    for spec in doc.actions:
        draft = _draft(spec, sources)
        try:
            action = await admin.action(target, spec.name)
        except NotFound:
            action = None
        if action is None:
            kind = f" (template {spec.template})" if spec.template else " (custom)"
            plan.changes.append(
                f"create action {spec.name}" + (" (target)" if spec.target else kind)
            )
            if dry_run:
                newest[spec.name] = None
                plan.changes.append(f"publish {spec.name} 1.0.0")
                continue
            await admin.create_action(target, spec.name, actor=actor, **_creation(spec))
        if action is not None:
            meta = {k: v for k, v in _creation(spec).items() if k not in ("template", "kind")}
            changed = await admin.update_action(
                target, spec.name, actor=actor, dry_run=dry_run, **meta
            )
            if changed:
                plan.changes.append(f"update action {spec.name}: {', '.join(changed)}")
        current = await admin.unchanged(target, spec.name, draft) if action else None
        if current is not None:
            newest[spec.name] = current.version
            continue
        if dry_run:
            plan.changes.append(f"publish {spec.name} (next version)")
            newest[spec.name] = None
            continue
        generated: list[str] = []
        published, created = await admin.publish(
            target, spec.name, draft, actor=actor, generated=generated
        )
        newest[spec.name] = published.version
        if created:
            shown = f" (signing key generated, shown once: {generated[0]})" if generated else ""
            plan.changes.append(f"publish {spec.name} {published.version}{shown}")

    for ft, slots in doc.flows.items():
        flow = await admin.flow(target, ft.value)
        for tr, refs in slots.items():
            before = flow.slot(tr) if flow else []
            wanted = await _resolve(admin, target, refs, newest, before)
            if wanted is not None and wanted == before:
                continue
            shown = ", ".join(f"{a}@{v}" for a, v in _shown(refs, wanted))
            plan.changes.append(f"set {ft.value}.{tr.value}: [{shown}]")
            if not dry_run:
                assert wanted is not None
                await admin.set_slot(target, ft.value, tr.value, wanted, actor=actor)
    if doc.ingress is not None:
        change = await admin.set_ingress(target, doc.ingress, actor=actor, dry_run=dry_run)
        if change is not None:
            plan.changes.append(change)
    plan.applied = not dry_run
    return plan


def _creation(spec: ActionSpec) -> dict[str, Any]:
    """How ``spec``'s action is created (template, triggers, kind)."""
    return {
        "template": spec.template,
        "triggers": list(spec.triggers) if spec.triggers else None,
        "kind": "target" if spec.target is not None else None,
        "display_name": spec.display_name,
        "description": spec.description,
        "config_schema": spec.config_schema,
    }


async def _validate(
    admin: AdminService, doc: FlowsFile, sources: dict[str, str], tenant: str
) -> None:
    """Refuse the file (``ValidationFailed``, ``NotFound``) before any write, for anything
    the writes would refuse: every action's kind, metadata, config, secrets, target and
    script (compiled, its packages checked); every slot's actions, versions, handlers and
    duplicates; the ingress."""
    actions: dict[str, ActionDef] = {}
    # what this apply publishes, by action: the version it becomes and its compiled script
    publishing: dict[str, tuple[str, Compiled | None]] = {}
    for spec in doc.actions:
        try:
            action: ActionDef | None = await admin.action(tenant, spec.name)
        except NotFound:
            action = None
        stored: list[ActionVersion] = []
        if action is None:
            action = admin.new_action(tenant, spec.name, **_creation(spec))
        elif (action.template or None) != spec.template or (
            (action.kind is ActionKind.TARGET) != (spec.target is not None)
        ):
            raise ValidationFailed(
                f"action {spec.name} exists with another kind; rename it in the file",
                field=spec.name,
            )
        else:
            meta = {k: v for k, v in _creation(spec).items() if k not in ("template", "kind")}
            await admin.update_action(tenant, spec.name, actor="", dry_run=True, **meta)
            action = admin.merged_action(action, **meta)
            stored = await admin.versions(tenant, spec.name)
        draft = _draft(spec, sources)
        try:
            compiled = await admin.check_draft(action, draft)
        except ValidationFailed as exc:
            raise ValidationFailed(
                f"action {spec.name}: {exc.message}", field=exc.field or spec.name
            ) from None
        actions[spec.name] = action
        latest = latest_of(stored)
        unchanged = stored and await admin.unchanged(tenant, spec.name, draft)
        if not unchanged:
            version = str(
                Version.parse(latest.version).bump("patch") if latest else Version(1, 0, 0)
            )
            publishing[spec.name] = (version, compiled)
    for ft, slots in doc.flows.items():
        for tr, refs in slots.items():
            slot = f"{ft.value}.{tr.value}"
            problem = slot_problem(ft.value, tr.value)
            if problem is not None:
                raise ValidationFailed(problem[1], field=tr.value)
            names = [parse_ref(entry_refs(entry))[0] for entry in refs]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValidationFailed(
                    f"{slot}: {', '.join(twice)} listed more than once (an action is attached"
                    " to a slot once)",
                    field=slot,
                )
            for entry in refs:
                wanted = [entry_refs(entry)]
                if isinstance(entry, SlotEntry):
                    wanted += [r for r in (entry.canary, entry.shadow) if r]
                for ref in wanted:
                    name, version = parse_ref(ref)
                    action = actions.get(name)
                    if action is None:
                        try:
                            action = await admin.action(tenant, name)
                        except NotFound:
                            raise NotFound(
                                f"{slot}: action {name} is neither in the file nor stored"
                            ) from None
                        actions[name] = action
                    if not action.fits(ft.value, tr.value):
                        raise ValidationFailed(
                            f"{slot}: action {name} is not compatible with {slot}"
                            f" (compatible: {', '.join(action.compatible())})",
                            field="trigger",
                        )
                    await _check_version(admin, tenant, slot, tr, name, version, publishing)
    if doc.ingress is not None:
        await admin.set_ingress(tenant, doc.ingress, actor="", dry_run=True)


async def _check_version(
    admin: AdminService,
    tenant: str,
    slot: str,
    trigger: Trigger,
    name: str,
    version: str,
    publishing: dict[str, tuple[str, Compiled | None]],
) -> None:
    """The version ``name@version`` of a slot entry exists (stored, or published by this
    apply) and its handlers run at ``trigger``."""
    made = publishing.get(name)
    if made is not None and version in ("latest", made[0]):
        compiled = made[1]
        if compiled is not None:
            check_handlers(name, made[0], compiled.style, compiled.exports, trigger)
        return
    stored = {v.version: v for v in await admin.versions(tenant, name)}
    if version == "latest":
        latest = latest_of(stored.values())
        if latest is None:
            raise NotFound(f"{slot}: action {name} has no published version")
        version = latest.version
    found = stored.get(version)
    if found is None:
        raise NotFound(f"{slot}: version {version} of {name}")
    check_handlers(name, version, found.style, found.exports, trigger)


async def _resolve(
    admin: AdminService,
    tenant: str,
    refs: list[str | SlotEntry],
    newest: dict[str, str | None],
    before: list[Attachment] | None = None,
) -> list[Attachment] | None:
    """The concrete attachments for ``refs`` (None when a dry run cannot know a version).

    A rollout entry keeps the rollout now in the slot when its canary and shadow versions are
    the same (so a rolled-back canary stays rolled back when the same file is applied again);
    new versions start a new rollout."""

    async def concrete(ref: str) -> tuple[str, str] | None:
        name, version = parse_ref(ref)
        if version != "latest":
            return name, version
        if name in newest:
            resolved = newest[name]
            return None if resolved is None else (name, resolved)
        latest = latest_of(await admin.versions(tenant, name))
        if latest is None:
            raise NotFound(f"action {name} has no version")
        return name, latest.version

    current = {a.action: a for a in before or []}
    out = []
    for entry in refs:
        use = await concrete(entry_refs(entry))
        if use is None:
            return None
        name, version = use
        rollout: Rollout | None = None
        if isinstance(entry, SlotEntry):
            canary = await concrete(entry.canary) if entry.canary else None
            shadow = await concrete(entry.shadow) if entry.shadow else None
            if (entry.canary and canary is None) or (entry.shadow and shadow is None):
                return None
            rollout = Rollout(
                id=uuid.uuid4().hex,
                canary=canary[1] if canary else None,
                percent=entry.percent,
                error_rate=entry.rollback.error_rate,
                min_runs=entry.rollback.min_runs,
                shadow=shadow[1] if shadow else None,
                started_at=datetime.now(UTC),
            )
            kept = current.get(name)
            if (
                kept is not None
                and kept.rollout is not None
                and kept.version == version
                and (kept.rollout.canary, kept.rollout.shadow) == (rollout.canary, rollout.shadow)
                and (kept.rollout.percent, kept.rollout.error_rate, kept.rollout.min_runs)
                == (rollout.percent, rollout.error_rate, rollout.min_runs)
            ):
                rollout = kept.rollout  # the same rollout: its state (rolled back...) stays
        out.append(Attachment(action=name, version=version, rollout=rollout))
    return out


def _shown(refs: list[str | SlotEntry], wanted: list[Attachment] | None) -> list[tuple[str, str]]:
    if wanted is not None:
        return [
            (
                a.action,
                a.version
                + (f" (canary {a.rollout.canary})" if a.rollout and a.rollout.canary else "")
                + (f" (shadow {a.rollout.shadow})" if a.rollout and a.rollout.shadow else ""),
            )
            for a in wanted
        ]
    return [parse_ref(entry_refs(r)) for r in refs]
