"""``gatehook import auth0 DIR``: an Auth0 Deploy CLI export (directory format) as a flows
file that ``gatehook apply`` takes.

The export holds ``actions/<name>.json`` (name, code file, runtime, supported triggers,
dependencies, secret names) with ``actions/<name>/code.js``, and ``triggers/triggers.json``
(per Auth0 trigger, the bound actions in order). Each action becomes a custom action with
its code as written (it runs as an Auth0 Action, docs/contract.md), its secrets as named
placeholders to fill (Auth0 exports no secret value), and each binding an entry of the
gatehook slots that Auth0 trigger maps to. What does not carry over (npm dependencies,
triggers gatehook has no slot for) is said in comments at the top of the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatehook.admin.files import read_inside
from gatehook.domain.catalogue import ACTION_NAME_RE, tenant_problem
from gatehook.domain.flowfile import FlowsFile
from gatehook.errors import ValidationFailed

__all__ = ["AUTH0_TRIGGERS", "Imported", "import_auth0", "read_export"]

#: Auth0 trigger id -> the gatehook slots (flow type, trigger) its actions go to.
AUTH0_TRIGGERS: dict[str, tuple[tuple[str, str], ...]] = {
    "post-login": (
        ("external_authentication", "post_authentication"),
        ("internal_authentication", "post_authentication"),
    ),
    "pre-user-registration": (
        ("external_authentication", "pre_creation"),
        ("internal_authentication", "pre_creation"),
    ),
    "post-user-registration": (
        ("external_authentication", "post_creation"),
        ("internal_authentication", "post_creation"),
    ),
    "credentials-exchange": (("complement_token", "pre_access_token_creation"),),
}
PLACEHOLDER = "FILL-ME"  # a secret's value, to be replaced before apply


@dataclass
class Imported:
    """The flows file (as a mapping) and what did not carry over."""

    file: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def yaml(self, source: str) -> str:
        """The file as YAML, with a comment header: where it came from, what to do."""
        head = [
            f"# Imported from the Auth0 Deploy CLI export {source} by `gatehook import auth0`.",
            f"# Secrets: Auth0 exports no values; replace every {PLACEHOLDER} before `apply`.",
            *(f"# {note}" for note in self.notes),
        ]
        body = yaml.safe_dump(self.file, sort_keys=False, allow_unicode=True, width=100)
        return "\n".join(head) + "\n" + body


def slug(name: str) -> str:
    """An Auth0 action name ("Add roles to tokens") as a gatehook action name."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", name.strip()).strip("-").lower()
    if not s or not s[0].isalpha():
        s = "a-" + s
    return s[:64].rstrip("-")


def read_export(root: Path) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The actions (each with its ``code`` read) and trigger bindings of an export."""
    folder = root / "actions"
    if not folder.is_dir():
        raise ValidationFailed(f"{root}: no actions/ folder (a Deploy CLI directory export)")
    actions: list[dict[str, Any]] = []
    for meta in sorted(folder.glob("*.json")):
        try:
            action = json.loads(meta.read_text())
        except (OSError, ValueError) as exc:
            raise ValidationFailed(f"{meta}: {exc}") from None
        if not isinstance(action, dict) or not isinstance(action.get("name"), str):
            raise ValidationFailed(f"{meta}: an action needs a name")
        action["code"] = _code(root, folder, action)
        actions.append(action)
    bindings: dict[str, list[dict[str, Any]]] = {}
    triggers = root / "triggers" / "triggers.json"
    if triggers.is_file():
        try:
            raw = json.loads(triggers.read_text())
        except (OSError, ValueError) as exc:
            raise ValidationFailed(f"{triggers}: {exc}") from None
        if not isinstance(raw, dict):
            raise ValidationFailed(f"{triggers}: a mapping of trigger id -> bindings")
        bindings = {str(k): list(v or []) for k, v in raw.items()}
    return actions, bindings


def _code(root: Path, folder: Path, action: dict[str, Any]) -> str:
    """The action's code: its ``code`` path as the Deploy CLI wrote it (relative to the
    export; an absolute path from the machine it ran on is looked for by its file name in the
    action's folder), else ``actions/<name>/code.js``. Only files inside the export are read:
    a path that leaves it (``..``, an absolute path, a link pointing out) is refused, since an
    export is someone else's file and must not make the import read ``/proc/self/environ``."""
    given = action.get("code")
    own = folder / str(action["name"])
    candidates: list[Path] = []
    if isinstance(given, str) and given:
        path = Path(given)
        candidates += [own / path.name] if path.is_absolute() else [root / path]
    candidates.append(own / "code.js")
    for path in candidates:
        if path.is_file():
            return read_inside(root, path, f"action {action['name']}")
    raise ValidationFailed(f"action {action['name']}: its code is not in the export ({given!r})")


def import_auth0(
    actions: list[dict[str, Any]],
    bindings: dict[str, list[dict[str, Any]]],
    tenant: str | None = None,
) -> Imported:
    """The flows file for an export's ``actions`` and trigger ``bindings``."""
    problem = None if tenant is None else tenant_problem(tenant)
    if problem is not None:
        raise ValidationFailed(problem, field="tenant")
    notes: list[str] = []
    names: dict[str, str] = {}
    specs: list[dict[str, Any]] = []
    for action in actions:
        name = slug(action["name"])
        if name in names.values() or not ACTION_NAME_RE.fullmatch(name):
            raise ValidationFailed(f"action {action['name']!r}: no unique gatehook name ({name})")
        names[action["name"]] = name
        spec: dict[str, Any] = {"name": name, "source": action["code"], "language": "js"}
        secrets = [s.get("name") for s in action.get("secrets") or [] if isinstance(s, dict)]
        if secrets:
            spec["secrets"] = {str(s): PLACEHOLDER for s in secrets if s}
        deps = [
            f"{d.get('name')}@{d.get('version', 'latest')}"
            for d in action.get("dependencies") or []
            if isinstance(d, dict)
        ]
        if deps:
            notes.append(
                f"{name}: npm dependencies are not supported, remove their require() calls:"
                f" {', '.join(deps)}"
            )
        ids = [
            str(t.get("id"))
            for t in action.get("supported_triggers") or []
            if isinstance(t, dict) and t.get("id")
        ]
        unsupported = [t for t in ids if t not in AUTH0_TRIGGERS]
        if ids and len(unsupported) == len(ids):
            notes.append(f"{name}: not imported, no gatehook trigger for {', '.join(ids)}")
            names[action["name"]] = ""  # known, not imported
            continue
        if unsupported:
            notes.append(f"{name}: no gatehook trigger for {', '.join(unsupported)}")
        specs.append(spec)
    flows: dict[str, dict[str, list[str]]] = {}
    for trigger_id, bound in bindings.items():
        slots = AUTH0_TRIGGERS.get(trigger_id)
        if not bound:
            continue
        if slots is None:
            listed = ", ".join(str(b.get("action_name")) for b in bound if isinstance(b, dict))
            notes.append(f"trigger {trigger_id} has no gatehook slot; not bound: {listed}")
            continue
        for binding in bound:
            action_name = str(binding.get("action_name")) if isinstance(binding, dict) else ""
            imported = names.get(action_name)
            if not imported:
                notes.append(f"{trigger_id}: {action_name!r} is bound but not imported")
                continue
            for flow_type, trigger in slots:
                flows.setdefault(flow_type, {}).setdefault(trigger, []).append(f"{imported}@latest")
    file: dict[str, Any] = {}
    if tenant is not None:
        file["tenant"] = tenant
    file["actions"] = specs
    file["flows"] = flows
    FlowsFile.model_validate(file)  # what apply will read
    return Imported(file, notes)
