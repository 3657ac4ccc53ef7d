"""The console's action pages: the list and creation, an action's page (versions, editor,
test panel, metadata, kill switch) and what its forms post."""

from __future__ import annotations

import asyncio
import difflib
import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gatehook.console import forms
from gatehook.console.access import page
from gatehook.console.pages import (
    FLOW_TYPES,
    SAMPLE_REQUEST,
    Env,
    env_of,
    errors_of,
    render,
    texts,
)
from gatehook.console.script_editor import EDITOR_CSP
from gatehook.console.starters import STARTERS, starter
from gatehook.domain.catalogue import all_slots
from gatehook.domain.model import ActionDef
from gatehook.domain.semver import Version
from gatehook.errors import GatehookError

__all__ = ["ROUTES", "action_page", "compatible_slots"]


def _named_lines(text: str) -> tuple[dict[str, str], bool]:
    """``NAME=VALUE`` lines of a text area as a mapping, and whether every line had one."""
    pairs = [line.split("=", 1) for line in text.splitlines() if line.strip()]
    named = {p[0].strip(): p[1].strip() for p in pairs if len(p) == 2}
    return named, all(len(p) == 2 for p in pairs)


def _test_panel(
    form: dict[str, str], slots: list[str], errors: dict[str, str]
) -> tuple[dict[str, Any], str, str]:
    """The test panel's trigger request (JSON) and trigger (``slots[0]`` when none is
    picked); what is wrong with them goes into ``errors``."""
    sample: Any = {}
    try:
        sample = json.loads(form.get("request", ""))
    except ValueError as exc:
        errors["request"] = f"not valid JSON: {exc}"
    else:
        if not isinstance(sample, dict):
            errors["request"] = "a trigger request is a JSON object"
    slot = form.get("slot") or (slots[0] if slots else "")
    flow_type, _, trigger = slot.partition(".")
    return (sample if isinstance(sample, dict) else {}), flow_type, trigger


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


async def actions(request: Request, operator: str) -> Response:
    env = env_of(request)
    tenant = request.path_params["tenant"]
    api = env.api(operator)
    errors: dict[str, str] = {}
    values = {"name": "", "template": "", "starter": "empty"}
    if request.method == "POST":
        form = await request.form()
        values = {
            "name": str(form.get("name", "")).strip(),
            "template": str(form.get("template", "")),
            "starter": str(form.get("starter", "empty")),
        }
        kind = "target" if values["template"] == "@target" else None
        try:
            await api.call(
                tenant,
                "actions.create",
                name=values["name"],
                template=None if kind or not values["template"] else values["template"],
                kind=kind,
            )
        except GatehookError as exc:
            errors = errors_of(exc, default="name")
        else:
            query = {"msg": "created"}
            if not values["template"] and starter(values["starter"]) is not None:
                query["starter"] = values["starter"]  # the editor opens with it
            return RedirectResponse(
                f"/t/{tenant}/actions/{values['name']}?" + urlencode(query), 303
            )
    rows, templates = await asyncio.gather(
        api.call(tenant, "actions.list"), api.call(tenant, "templates.list")
    )
    # nothing stored: a first visit, or a typo of a tenant the picker offers? say both
    tenants = [t for t in env.offered(request.state.session) if t != tenant]
    meant = difflib.get_close_matches(tenant, tenants, n=1) if not rows else []
    return render(
        env,
        request,
        "actions.html",
        400 if errors else 200,
        rows=rows,
        meant=meant[0] if meant else None,
        templates=templates,
        starters=STARTERS,
        errors=errors,
        values=values,
    )


async def action(request: Request, operator: str) -> Response:
    env = env_of(request)
    return await action_page(env, request, operator)


async def publish(request: Request, operator: str) -> Response:
    env = env_of(request)
    tenant, name = request.path_params["tenant"], request.path_params["name"]
    api = env.api(operator)
    form = await request.form()
    shown = await api.call(tenant, "actions.show", name=name)
    kind = shown["action"]["kind"]
    body: dict[str, Any] = {
        "name": name,
        "allowed_to_fail": form.get("allowed_to_fail") == "on",
        "bump": str(form.get("bump") or "patch"),
    }
    errors: dict[str, str] = {}
    timeout = str(form.get("timeout_ms", "")).strip()
    if timeout:
        try:
            body["timeout_ms"] = int(timeout)
        except ValueError:
            errors["timeout_ms"] = f"{timeout!r} is not a whole number of milliseconds"
    if kind == "target":
        headers, well_formed = _named_lines(str(form.get("headers", "")))
        if not well_formed:
            errors["target.headers"] = "one NAME=VALUE a line"
        key = str(form.get("signing_key", "")).strip()
        body["target"] = {
            "endpoint": str(form.get("endpoint", "")).strip(),
            "type": str(form.get("target_type") or "call"),
            "payload": str(form.get("payload") or "zitadel"),
            "signing_key": key or None,
            "headers": headers,
        }
    elif kind == "template":
        tpl = await api.call(tenant, "templates.show", name=shown["action"]["template"])
        try:
            body["config"] = forms.parse(tpl["config_schema"], texts(form))
        except forms.FormErrors as exc:
            errors.update(exc.errors)
    else:
        body["source"] = str(form.get("source", ""))
        body["language"] = str(form.get("language") or "js")
        body["allowed_hosts"] = [
            h.strip() for h in str(form.get("allowed_hosts", "")).splitlines() if h.strip()
        ]
        body["secrets"], well_formed = _named_lines(str(form.get("secrets", "")))
        if not well_formed:
            errors["secrets"] = "one NAME=value a line"
        if shown["action"].get("config_schema"):
            try:
                body["config"] = forms.parse(shown["action"]["config_schema"], texts(form))
            except forms.FormErrors as exc:
                errors.update(exc.errors)
    if not errors and kind == "custom" and form.get("draft") == "1":
        return await test_draft(request, operator, shown["action"], body, texts(form))
    if not errors:
        try:
            result = await api.call(tenant, "actions.publish", **body)
        except GatehookError as exc:
            default = {"custom": "source", "target": "target.endpoint"}.get(kind, "form")
            errors = errors_of(exc, default=default)
        else:
            version = result["version"]["version"]
            if result.get("signing_key"):
                # shown on this page once, never put in a URL, never shown again
                return await action_page(
                    env, request, operator, generated_key=result["signing_key"]
                )
            msg = f"published {version}" if result["created"] else "unchanged: no new version"
            query = urlencode({"msg": msg, "version": version})
            return RedirectResponse(f"/t/{tenant}/actions/{name}?{query}", 303)
    return await action_page(env, request, operator, errors=errors, submitted=texts(form))


async def test_draft(
    request: Request,
    operator: str,
    act: dict[str, Any],
    body: dict[str, Any],
    form: dict[str, str],
) -> Response:
    """The test panel's "Test this draft": the editor's source run as a publish would
    make it, on the panel's trigger and request, nothing stored; the editor and the panel
    keep what they hold."""
    fields = ("source", "language", "config", "timeout_ms", "allowed_hosts", "secrets")
    draft = {k: body[k] for k in fields if k in body}
    return await on_test_panel(
        request, operator, form, compatible_slots(act), form, "source", draft=draft
    )


async def on_test_panel(
    request: Request,
    operator: str,
    form: dict[str, str],
    slots: list[str],
    submitted: dict[str, str] | None,
    default: str,
    **run: Any,
) -> Response:
    """``actions.test`` of ``run`` (a draft or a version) on the test panel's trigger and
    request, shown on the action page with the panel (and the editor, ``submitted``) as
    they were."""
    env = env_of(request)
    tenant, name = request.path_params["tenant"], request.path_params["name"]
    errors: dict[str, str] = {}
    result: Any = None
    sample, flow_type, trigger = _test_panel(form, slots, errors)
    if not errors:
        try:
            result = await env.api(operator).call(
                tenant,
                "actions.test",
                name=name,
                flow_type=flow_type,
                trigger=trigger,
                request=sample,
                **run,
            )
        except GatehookError as exc:
            errors = errors_of(exc, default=default, prefix="request")
    return await action_page(
        env,
        request,
        operator,
        errors=errors,
        submitted=submitted,
        test_form=form,
        test_result=result,
    )


async def metadata(request: Request, operator: str) -> Response:
    """The action page's "About this action": its metadata, saved as one change."""
    env = env_of(request)
    tenant, name = request.path_params["tenant"], request.path_params["name"]
    raw = await request.form()
    form = texts(raw)
    meta: dict[str, Any] = {
        "display_name": form.get("display_name", "").strip(),
        "description": form.get("description", "").strip(),
        "config_schema": form.get("config_schema", ""),
        "slots": [str(s) for s in raw.getlist("slot")],
    }
    body: dict[str, Any] = {
        "name": name,
        "display_name": meta["display_name"],
        "description": meta["description"],
        "triggers": meta["slots"],
    }
    errors: dict[str, str] = {}
    if not meta["slots"]:
        errors["triggers"] = "at least one trigger: an action runs somewhere"
    if meta["config_schema"].strip():
        try:
            body["config_schema"] = json.loads(meta["config_schema"])
        except ValueError as exc:
            errors["config_schema"] = f"not valid JSON: {exc}"
    if not errors:
        try:
            result = await env.api(operator).call(tenant, "actions.update", **body)
        except GatehookError as exc:
            errors = errors_of(exc, default="metadata")
        else:
            changed = result["changed"]
            msg = f"saved: {', '.join(changed)}" if changed else "unchanged"
            return RedirectResponse(f"/t/{tenant}/actions/{name}?" + urlencode({"msg": msg}), 303)
    return await action_page(env, request, operator, errors=errors, meta=meta)


async def switch(request: Request, operator: str) -> Response:
    """The kill switch buttons of the action page."""
    env = env_of(request)
    tenant, name = request.path_params["tenant"], request.path_params["name"]
    if request.path_params["op"] not in ("disable", "enable"):
        return render(env, request, "error.html", 404, message="no such operation")
    form = texts(await request.form())
    op = "actions.disable" if request.path_params["op"] == "disable" else "actions.enable"
    body: dict[str, Any] = {"name": name, "reason": form.get("reason", "")}
    if op == "actions.disable":
        body["fallback"] = form.get("fallback") or "continue"
    try:
        await env.api(operator).call(tenant, op, **body)
    except GatehookError as exc:
        return await action_page(env, request, operator, errors=errors_of(exc, default="switch"))
    msg = "disabled on every worker" if op == "actions.disable" else "enabled"
    return RedirectResponse(f"/t/{tenant}/actions/{name}?" + urlencode({"msg": msg}), 303)


async def test(request: Request, operator: str) -> Response:
    """The test panel's "Run the version": a published version on the panel's trigger and
    request; the editor beside it keeps what it holds."""
    form = texts(await request.form())
    submitted = form if "bump" in form else None  # the publish form came along
    version = form.get("version") or "latest"
    return await on_test_panel(request, operator, form, [], submitted, "request", version=version)


ROUTES = [
    Route("/t/{tenant}/actions", page(actions), methods=["GET", "POST"]),
    Route("/t/{tenant}/actions/{name}", page(action)),
    Route("/t/{tenant}/actions/{name}/publish", page(publish), methods=["POST"]),
    Route("/t/{tenant}/actions/{name}/test", page(test), methods=["POST"]),
    Route("/t/{tenant}/actions/{name}/metadata", page(metadata), methods=["POST"]),
    Route("/t/{tenant}/actions/{name}/{op:str}", page(switch), methods=["POST"]),
]
