"""The console's flow pages: a flow type's slots, changes staged and saved as one revision,
rollouts started, promoted and aborted, a revision rolled back."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gatehook.admin.client import AdminClient
from gatehook.console.access import page
from gatehook.console.pages import FLOW_TYPES, Env, env_of, errors_of, render, texts
from gatehook.domain.catalogue import TRIGGERS
from gatehook.domain.semver import Version
from gatehook.errors import GatehookError, ValidationFailed

__all__ = ["ROUTES", "flow_changes", "flows_page"]


async def _latest(
    api: AdminClient, tenant: str, op: str, args: list[str], form: dict[str, str]
) -> str:
    """The version an "add" asks for, ``latest`` made concrete (what the entry pins)."""
    if op != "add":
        return ""
    action = form.get(f"add|{args[0]}", "")
    wanted = form.get(f"addv|{args[0]}", "").strip() or "latest"
    if wanted != "latest":
        return wanted
    latest = (await api.call(tenant, "actions.show", name=action))["action"]["latest_version"]
    if not latest:
        raise ValidationFailed(f"{action} has no published version", field="save")
    return str(latest)


def _edit(
    staged: dict[str, list[dict[str, Any]]],
    op: str,
    args: list[str],
    form: dict[str, str],
    version: str,
) -> None:
    """Apply one of the flows page's edits to the staged lists (trigger -> entries)."""
    trigger = args[0]
    entries = staged.setdefault(trigger, [])
    names = [e["action"] for e in entries]
    if op == "add":
        action = form.get(f"add|{trigger}", "")
        if not action or action in names:
            raise ValueError(action)
        entries.append({"action": action, "version": version, "rollout": None})
    elif op == "remove":
        entries.pop(names.index(args[1]))
    elif op == "move":
        i = names.index(args[1])
        j = max(0, min(len(entries) - 1, i + int(args[2])))
        entries[i], entries[j] = entries[j], entries[i]
    elif op == "pin":
        i = names.index(args[1])
        entries[i] = {
            "action": args[1],
            "version": form[f"pin|{trigger}|{args[1]}"],
            "rollout": None,
        }
    else:
        raise ValueError(op)


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


async def flows(request: Request, operator: str) -> Response:
    env = env_of(request)
    return await flows_page(env, request, operator)


async def stage(request: Request, operator: str) -> Response:
    """The flows page's edits: each applied to the staged lists the page carries (made on
    revision ``base``) and shown, nothing written; "Save" writes them all as one
    revision (``flows.set``), removals only once confirmed."""
    env = env_of(request)
    tenant, flow_type = request.path_params["tenant"], request.path_params["flow_type"]
    form = texts(await request.form())
    api = env.api(operator)
    base = int(form["base"]) if form.get("base", "").isdigit() else None
    try:
        staged = json.loads(form.get("staged") or "null")
    except ValueError:
        staged = None
    if not isinstance(staged, dict):  # nothing staged yet: the saved lists
        flow = await api.call(tenant, "flows.show", flow_type=flow_type)
        staged = dict((flow or {}).get("slots") or {})
        base = (flow or {}).get("revision")
    op, *args = form.get("op", "").split("|")
    errors: dict[str, str] = {}
    try:
        if op == "save":
            return await save_flow(request, operator, staged, base, form, errors)
        _edit(staged, op, args, form, await _latest(api, tenant, op, args, form))
    except GatehookError as exc:  # said at the staged changes, which stay
        errors = {"save": exc.message}
    except (ValueError, LookupError):
        errors["save"] = f"not an edit of this page: {form.get('op', '')!r}"
    return await flows_page(env, request, operator, errors=errors, staged=staged, base=base)


async def save_flow(
    request: Request,
    operator: str,
    staged: dict[str, Any],
    base: int | None,
    form: dict[str, str],
    errors: dict[str, str],
) -> Response:
    env = env_of(request)
    tenant, flow_type = request.path_params["tenant"], request.path_params["flow_type"]
    api = env.api(operator)
    flow = await api.call(tenant, "flows.show", flow_type=flow_type)
    _, removals = flow_changes((flow or {}).get("slots") or {}, staged)
    # removals are asked about on the revision they were staged on; on a moved flow
    # flows.set refuses the save itself (a conflict, said at the staged changes)
    unconfirmed = removals and form.get("confirm_removals") != "on"
    if unconfirmed and (flow or {}).get("revision") == base:
        errors["save"] = "tick the box to confirm the removals, then save"
        return await flows_page(env, request, operator, errors=errors, staged=staged, base=base)
    result = await api.call(tenant, "flows.set", flow_type=flow_type, slots=staged, revision=base)
    flow = result["flow"] or {}
    msg = f"revision {flow.get('revision')}" if result["changed"] else "unchanged"
    return RedirectResponse(f"/t/{tenant}/flows/{flow_type}?" + urlencode({"msg": msg}), 303)


async def flow_change(request: Request, operator: str) -> Response:
    env = env_of(request)
    tenant = request.path_params["tenant"]
    flow_type, op = request.path_params["flow_type"], request.path_params["op"]
    form = texts(await request.form())
    trigger = form.get("trigger", "")
    slot = {"flow_type": flow_type, "trigger": trigger}
    api = env.api(operator)
    try:
        if op in ("promote", "abort"):
            result = await api.call(tenant, f"rollouts.{op}", action=form.get("action", ""), **slot)
            result["changed"] = True
        elif op == "rollout":
            mode = form.get("mode", "canary")
            version = form.get("rollout_version") or None
            result = await api.call(
                tenant,
                "rollouts.start",
                action=form.get("action", ""),
                canary=version if mode == "canary" else None,
                shadow=version if mode == "shadow" else None,
                percent=int(form.get("percent") or "10"),
                error_rate=float(form.get("error_rate") or "0.05"),
                min_runs=int(form.get("min_runs") or "50"),
                **slot,
            )
            result["changed"] = True
        elif op == "rollback":
            revision = int(form.get("revision", "0"))
            result = await api.call(
                tenant, "flows.rollback", flow_type=flow_type, revision=revision
            )
        else:
            return render(env, request, "error.html", 404, message=f"no operation {op}")
    except (GatehookError, ValueError) as exc:
        errors = (
            errors_of(exc, default="action")
            if isinstance(exc, GatehookError)
            else {"action": str(exc)}
        )
        return await flows_page(env, request, operator, errors=errors, failed_slot=trigger)
    flow = result.get("flow") or {}
    msg = f"revision {flow.get('revision')}" if result.get("changed") else "no change"
    return RedirectResponse(
        f"/t/{tenant}/flows/{flow_type}?" + urlencode({"msg": msg}) + f"#{trigger}", 303
    )


async def flows_default(request: Request, operator: str) -> Response:
    tenant = request.path_params["tenant"]
    return RedirectResponse(f"/t/{tenant}/flows/{FLOW_TYPES[0]}", 303)


ROUTES = [
    Route("/t/{tenant}/flows", page(flows_default)),
    Route("/t/{tenant}/flows/{flow_type}", page(flows)),
    Route("/t/{tenant}/flows/{flow_type}/stage", page(stage), methods=["POST"]),
    Route("/t/{tenant}/flows/{flow_type}/{op}", page(flow_change), methods=["POST"]),
]
