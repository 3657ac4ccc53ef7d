"""What the console's pages share, and the two pages built from several API calls (an
action, a flow type): rendering, form values, API errors keyed by field."""

from __future__ import annotations

import asyncio
import difflib
import json
from typing import Any

import jinja2
from nats.aio.client import Client as NATS
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gatehook.admin.client import AdminClient
from gatehook.console import forms
from gatehook.console.auth import Sessions
from gatehook.console.script_editor import EDITOR_CSP, ScriptEditor
from gatehook.console.starters import STARTERS, starter
from gatehook.domain.catalogue import TRIGGERS, all_slots
from gatehook.domain.model import ActionDef
from gatehook.domain.semver import Version
from gatehook.errors import GatehookError, ValidationFailed
from gatehook.settings import Settings

__all__ = [
    "COOKIE",
    "FLOW_TYPES",
    "SAMPLE_REQUEST",
    "Env",
    "action_page",
    "compatible_slots",
    "errors_of",
    "flows_page",
    "render",
    "texts",
]

COOKIE = "gatehook_console"
FLOW_TYPES = [ft.value for ft in TRIGGERS]
SAMPLE_REQUEST = {
    "request_id": "console-test",
    "user": {
        "id": "u1",
        "username": "ann",
        "email": "ann@acme.com",
        "groups": ["staff"],
        "metadata": {},
    },
    "request": {"ip": "203.0.113.7", "user_agent": "console", "risk_score": 0.1},
    "context": {},
    "state": {},
}


class Env:
    """What the pages share: the NATS connection, the API client factory, the renderer."""

    def __init__(self, settings: Settings, sessions: Sessions) -> None:
        self.settings = settings
        self.sessions = sessions
        self.nc: NATS | None = None
        self.jinja = jinja2.Environment(
            loader=jinja2.PackageLoader("gatehook.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.jinja.filters["pretty"] = lambda v: json.dumps(v, indent=2, default=str)
        self.editor = ScriptEditor(settings.console.editor_assets)

    def api(self, operator: str) -> AdminClient:
        assert self.nc is not None
        # as the console's NATS user (without one, the console role's name: a local stack
        # with no NATS authentication, where nothing is authenticated anyway)
        principal = self.settings.nats_principal or "gatehook-console"
        return AdminClient(self.nc, actor=f"console:{operator}", timeout=30, principal=principal)


def texts(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def errors_of(exc: GatehookError, *, default: str, prefix: str = "") -> dict[str, str]:
    """The API's error keyed by the form field it concerns (``default`` when it names none)."""
    field = getattr(exc, "field", None) if isinstance(exc, ValidationFailed) else None
    key = str(field) if field else default
    if prefix and key.startswith(prefix + "."):
        key = prefix
    return {key: exc.message}


def render(
    env: Env, request: Request, page: str, status: int = 200, **context: Any
) -> HTMLResponse:
    cookie = request.cookies.get(COOKIE, "")
    operator = env.sessions.operator(cookie)
    context.setdefault("tenant", request.path_params.get("tenant"))
    context.setdefault("msg", request.query_params.get("msg", ""))
    html = env.jinja.get_template(page).render(
        operator=operator,
        csrf=env.sessions.csrf(cookie) if operator else "",
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def compatible_slots(act: dict[str, Any]) -> list[str]:
    """The slots (``flow_type.trigger``) an action (as ``actions.show`` gives it) may run at."""
    action = ActionDef.model_validate(act)
    return [f"{ft.value}.{tr.value}" for ft, tr in all_slots() if action.fits(ft.value, tr.value)]


async def _attached_at(api: Any, tenant: str, name: str) -> dict[str, list[str]]:
    """Version -> the slots of the current flows where it is pinned (as the entry's version,
    or its canary or shadow)."""
    flows = await asyncio.gather(
        *(api.call(tenant, "flows.show", flow_type=ft) for ft in FLOW_TYPES)
    )
    where: dict[str, list[str]] = {}
    for ft, flow in zip(FLOW_TYPES, flows, strict=True):
        for tr, entries in ((flow or {}).get("slots") or {}).items():
            for entry in entries:
                if entry["action"] != name:
                    continue
                rollout = entry.get("rollout") or {}
                for role, version in (
                    ("", entry["version"]),
                    (" (canary)", rollout.get("canary")),
                    (" (shadow)", rollout.get("shadow")),
                ):
                    if version:
                        where.setdefault(version, []).append(f"{ft}.{tr}{role}")
    return where


def _diff(versions: list[dict[str, Any]], wanted: str | None) -> dict[str, Any] | None:
    """``?diff=A..B``: the unified diff of two versions' sources (or configs, endpoints)."""
    if not wanted or ".." not in wanted:
        return None
    a, _, b = wanted.partition("..")
    by = {v["version"]: v for v in versions}
    if a not in by or b not in by:
        return None

    def text(v: dict[str, Any]) -> list[str]:
        body = v.get("source")
        if body is None:
            body = json.dumps({"config": v.get("config"), "target": v.get("target")}, indent=2)
        return str(body).splitlines(keepends=True)

    lines = difflib.unified_diff(text(by[a]), text(by[b]), fromfile=a, tofile=b)
    return {"from": a, "to": b, "text": "".join(lines) or "(no difference)"}


async def action_page(
    env: Env,
    request: Request,
    operator: str,
    *,
    errors: dict[str, str] | None = None,
    submitted: dict[str, str] | None = None,
    test_form: dict[str, str] | None = None,
    test_result: Any = None,
    generated_key: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Response:
    tenant, name = request.path_params["tenant"], request.path_params["name"]
    api = env.api(operator)
    shown = await api.call(tenant, "actions.show", name=name)
    act, versions = shown["action"], shown["versions"]
    versions.sort(key=lambda v: Version.parse(v["version"]), reverse=True)
    wanted = request.query_params.get("version") or (test_form or {}).get("version")
    current = next(
        (v for v in versions if v["version"] == wanted), versions[0] if versions else None
    )
    # a new action's editor opens with the starter picked (TypeScript's empty one by default)
    begin = starter(request.query_params.get("starter")) or STARTERS[0]
    template = None
    fields: list[forms.Field] = []
    if act["kind"] == "template":
        template = await api.call(tenant, "templates.show", name=act["template"])
        config = (current or {}).get("config") or {}
        fields = forms.fields(template["config_schema"], config)
        if submitted is not None:
            fields = _refill(fields, submitted)
    elif act.get("config_schema"):
        fields = forms.fields(act["config_schema"], (current or {}).get("config") or {})
        if submitted is not None:
            fields = _refill(fields, submitted)
    slots = compatible_slots(act)
    attached = await _attached_at(api, tenant, name)
    diff = _diff(versions, request.query_params.get("diff"))
    form = submitted or {}
    status = 400 if errors else 200
    target = (current or {}).get("target") or {}
    editor = env.editor.page_context() if act["kind"] == "custom" else {}
    response = render(
        env,
        request,
        "action.html",
        status,
        editor=editor,
        act=act,
        versions=versions,
        current=current,
        attached=attached,
        diff=diff,
        template=template,
        fields=fields,
        errors=errors or {},
        form={
            "source": form.get("source", (current or {}).get("source") or begin.for_action(name)),
            "language": form.get("language", (current or {}).get("language") or begin.language),
            "timeout_ms": form.get(
                "timeout_ms",
                str((current or {}).get("timeout_ms") or env.settings.sandbox.default_timeout_ms),
            ),
            "allowed_to_fail": (
                form.get("allowed_to_fail") == "on"
                if submitted is not None
                else bool((current or {}).get("allowed_to_fail"))
            ),
            "allowed_hosts": form.get(
                "allowed_hosts",
                "\n".join((current or {}).get("allowed_hosts") or begin.allowed_hosts),
            ),
            "secrets": form.get(
                "secrets",
                "\n".join(f"{k}={v}" for k, v in ((current or {}).get("secrets") or {}).items()),
            ),
            "bump": form.get("bump", "patch"),
            "endpoint": form.get("endpoint", target.get("endpoint", "")),
            "target_type": form.get("target_type", target.get("type", "call")),
            "payload": form.get("payload", target.get("payload", "zitadel")),
            "headers": form.get(
                "headers", "\n".join(f"{k}={v}" for k, v in (target.get("headers") or {}).items())
            ),
            # masked ("********") once a key is stored: sent back as is, it keeps the key
            "signing_key": form.get("signing_key", target.get("signing_key") or ""),
        },
        generated_key=generated_key,
        slots=slots,
        every_slot=[f"{ft.value}.{tr.value}" for ft, tr in all_slots()],
        metadata=meta
        or {
            "display_name": act.get("display_name") or "",
            "description": act.get("description") or "",
            "config_schema": json.dumps(act["config_schema"], indent=2)
            if act.get("config_schema")
            else "",
            "slots": slots,
        },
        test_form=test_form
        or {"request": json.dumps(SAMPLE_REQUEST, indent=2), "slot": slots[0] if slots else ""},
        test_result=test_result,
    )
    if editor:
        response.headers["content-security-policy"] = EDITOR_CSP
    return response


def _refill(fields: list[forms.Field], submitted: dict[str, str]) -> list[forms.Field]:
    """The fields showing what was submitted (after an error), not what is stored."""
    out = []
    for f in fields:
        raw = submitted.get(f"config.{f.name}")
        value = ("on" if raw else "") if f.widget == "checkbox" else (raw or "")
        out.append(
            forms.Field(f.name, f.label, f.widget, value, f.required, f.help, f.options, f.secret)
        )
    return out


def flow_changes(
    before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]
) -> tuple[list[str], list[str]]:
    """What ``after`` changes in ``before`` (trigger -> entries), one line each, and the
    removals among them (``action from trigger``), for the staged changes' summary."""
    lines: list[str] = []
    removed: list[str] = []
    for tr in sorted(set(before) | set(after)):
        old = {a["action"]: a for a in before.get(tr) or []}
        new = {a["action"]: a for a in after.get(tr) or []}
        for name in old.keys() - new.keys():
            lines.append(f"{tr}: remove {name}")
            removed.append(f"{name} from {tr}")
        for name, a in new.items():
            if name not in old:
                lines.append(f"{tr}: add {name}@{a['version']}")
            elif old[name]["version"] != a["version"]:
                lines.append(f"{tr}: pin {name} {old[name]['version']} -> {a['version']}")
        kept = [a["action"] for a in after.get(tr) or [] if a["action"] in old]
        if kept != [a["action"] for a in before.get(tr) or [] if a["action"] in new]:
            lines.append(f"{tr}: order {', '.join(a['action'] for a in after.get(tr) or [])}")
    return lines, sorted(removed)


async def flows_page(
    env: Env,
    request: Request,
    operator: str,
    *,
    errors: dict[str, str] | None = None,
    failed_slot: str = "",
    staged: dict[str, list[dict[str, Any]]] | None = None,
    base: int | None = None,
) -> Response:
    """A flow type's page; with ``staged`` (changes not saved yet, made on revision
    ``base``), those lists and what they change, to be saved as one revision."""
    tenant, flow_type = request.path_params["tenant"], request.path_params["flow_type"]
    if flow_type not in FLOW_TYPES:
        return render(env, request, "error.html", 404, message=f"no flow type {flow_type}")
    api = env.api(operator)
    flow, history, rows = await asyncio.gather(
        api.call(tenant, "flows.show", flow_type=flow_type),
        api.call(tenant, "flows.history", flow_type=flow_type, limit=20),
        api.call(tenant, "actions.list"),
    )
    saved = (flow or {}).get("slots") or {}
    if staged is None:
        base = (flow or {}).get("revision")
    slots = saved if staged is None else staged
    pending, removals = flow_changes(saved, slots) if staged is not None else ([], [])
    rolling = any(a.get("rollout") for atts in slots.values() for a in atts)
    # a rollout's runs and failure rates (the CLI's `rollout status`), by trigger and action
    counts = {
        (r["slot"].partition(".")[2], r["action"]): r
        for r in (await api.call(tenant, "rollouts.status") if rolling else [])
        if r["slot"].startswith(flow_type + ".")
    }
    attached = {a["action"] for atts in slots.values() for a in atts}
    shows = await asyncio.gather(*(api.call(tenant, "actions.show", name=n) for n in attached))
    versions = {
        s["action"]["name"]: sorted(
            (v["version"] for v in s["versions"]),
            key=Version.parse,
            reverse=True,
        )
        for s in shows
    }
    triggers = next(t for ft, t in TRIGGERS.items() if ft.value == flow_type)
    sections = []
    for tr in triggers:
        atts = slots.get(tr.value) or []
        names = [a["action"] for a in atts]
        sections.append(
            {
                "trigger": tr.value,
                "attachments": atts,
                "runs": {a["action"]: counts.get((tr.value, a["action"])) for a in atts},
                "candidates": [
                    r
                    for r in rows
                    if r["name"] not in names
                    and r["latest_version"]
                    and f"{flow_type}.{tr.value}" in r["slots"]
                ],
            }
        )
    return render(
        env,
        request,
        "flows.html",
        400 if errors else 200,
        flow_type=flow_type,
        flow_types=FLOW_TYPES,
        flow=flow,
        history=history,
        sections=sections,
        versions=versions,
        errors=errors or {},
        failed_slot=failed_slot,
        staged=json.dumps(slots),
        base="" if base is None else base,
        pending=pending,
        removals=removals,
    )
