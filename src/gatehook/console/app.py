"""The web console: server-rendered pages over the management API.

Every change goes through ``AdminClient`` over NATS, so the console takes the same path as
the CLI and flows-as-code (validation, versioning, audit, change broadcast): it holds no data
of its own and needs no database. Pages are Jinja templates rendered by Starlette; forms
post back and redirect (no JavaScript needed), and an error from the API is shown next to
the field it names.
"""

from __future__ import annotations

import asyncio
import difflib
import html
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, get_args
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gatehook.admin.client import AdminClient
from gatehook.audit.reader import latest_events, latest_records
from gatehook.console import forms
from gatehook.console.auth import EVERY_TENANT, OPERATOR_RE, Session, Sessions
from gatehook.console.oidc import Oidc, SignInRefused
from gatehook.console.pages import (
    COOKIE,
    FLOW_TYPES,
    Env,
    action_page,
    compatible_slots,
    errors_of,
    flow_changes,
    flows_page,
    render,
    texts,
)
from gatehook.console.security import SecurityHeaders, local_path
from gatehook.console.starters import STARTERS, starter
from gatehook.domain.catalogue import TENANT_RE
from gatehook.domain.contract import AuditEvent, AuditEventType, DecisionRecord
from gatehook.errors import GatehookError, ValidationFailed
from gatehook.security.connections import connect_nats
from gatehook.service.cache import Lru
from gatehook.settings import Settings

__all__ = ["build_app"]

log = logging.getLogger("gatehook.console")


EVENT_TYPES: list[str] = list(get_args(AuditEventType))  # every type the stream carries
AUDIT_ROWS = 200  # newest events on the audit page
AUDIT_DECISIONS = 20  # a request's or sign-in's newest decisions shown above them
FIRST_VISITS_KEPT = 10_000  # (session, tenant) pairs remembered as audited
AUDIT_MAX_SCAN = 200_000  # stream sequence numbers looked at, at most, for one page


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


def build_app(settings: Settings, token: str) -> Starlette:
    """The console's ASGI app; it connects to NATS when it starts and drains when it stops."""
    env = Env(settings, Sessions(token, settings.console.session_ttl_s))
    oidc = Oidc(settings.console.oidc) if settings.console.oidc.issuer else None
    token_sign_in = oidc is None or settings.console.oidc.token_sign_in
    # (session cookie, tenant) pairs whose first page was audited (see ``first_visit``)
    visited: Lru[tuple[str, str], bool] = Lru(FIRST_VISITS_KEPT)
    STATE_COOKIE = "gatehook_oidc_state"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        env.nc = await connect_nats(settings, name="gatehook-console")
        env.editor.announce()
        try:
            yield
        finally:
            await env.nc.drain()
            if oidc is not None:
                await oidc.aclose()

    async def record(operator: str, tenants: list[str], event: str, **fields: Any) -> None:
        """A console audit event for each tenant, written by a worker (``console.audit``);
        when no worker answers, the console logs it instead of failing the operator."""
        for tenant in tenants:
            try:
                await env.api(operator).call(tenant, "console.audit", event=event, **fields)
            except GatehookError as exc:
                log.warning(
                    "console %s of %s for tenant %s not audited: %s",
                    event,
                    operator,
                    tenant,
                    exc.message,
                )

    def audited_tenants(roles: dict[str, str]) -> list[str]:
        """The tenants a sign-in concerns: those named, or the picker's for every tenant."""
        named = [t for t in roles if t != "*"]
        return named + [t for t in settings.console.tenants if "*" in roles and t not in named]

    def signed_in(session_cookie: str, target: str) -> Response:
        # A page that moves on by itself: a redirect would carry the navigation that came
        # from the provider's site, and the browser would hold back the SameSite=Strict
        # session cookie on it.
        safe = html.escape(local_path(target), quote=True)
        resp = HTMLResponse(
            f'<!doctype html><meta http-equiv="refresh" content="0;url={safe}">'
            f'<p>Signed in. <a href="{safe}">Continue</a></p>'
        )
        resp.set_cookie(
            COOKIE,
            session_cookie,
            max_age=int(settings.console.session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=settings.console.secure_cookie,
        )
        resp.delete_cookie(STATE_COOKIE)
        return resp

    Handler = Callable[[Request, str], Awaitable[Response]]

    def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Signed-in pages only; POSTs must carry the session's CSRF token."""

        async def endpoint(request: Request) -> Response:
            cookie = request.cookies.get(COOKIE, "")
            session = env.sessions.session(cookie)
            if session is None:
                return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
            operator = session.operator
            tenant = request.path_params.get("tenant")
            if tenant is not None and not TENANT_RE.fullmatch(tenant):
                return render(env, request, "error.html", 404, message="no such tenant")
            if request.method == "POST":
                form = await request.form()
                if not env.sessions.csrf_ok(cookie, str(form.get("csrf", ""))):
                    return render(env, request, "error.html", 403, message="stale form: reload")
            if tenant is not None:
                refusal = refused(session, tenant, request.method)
                if refusal is not None:
                    await record(
                        operator,
                        [tenant],
                        "refused",
                        role=session.role(tenant),
                        path=f"{request.method} {request.url.path}"[:500],
                        reason=refusal,
                    )
                    return render(env, request, "error.html", 403, message=refusal)
                await first_visit(cookie, session, tenant, f"{request.method} {request.url.path}")
            request.state.session = session
            return await handler(request, operator)

        return endpoint

    async def first_visit(cookie: str, session: Session, tenant: str, path: str) -> None:
        """A session that may open every tenant was audited at sign-in only for the picker's
        tenants (``GATEHOOK_CONSOLE__TENANTS``): its first page of any other tenant is
        recorded for that tenant as ``console.signed_in`` (with the page), so every tenant's
        audit names each operator who opened it. Remembered per console process for the
        last ``FIRST_VISITS_KEPT`` pairs (a console restart records a session again)."""
        if not session.every_tenant or tenant in audited_tenants(session.roles):
            return
        if visited.peek((cookie, tenant)) is not None:
            return
        visited.put((cookie, tenant), True)
        await record(
            session.operator,
            [tenant],
            "signed_in",
            method=session.method,
            role=session.role(tenant),
            path=path[:500],
        )

    def refused(session: Session, tenant: str, method: str) -> str | None:
        """Why ``session`` may not do ``method`` on ``tenant``'s pages (None: it may)."""
        role = session.role(tenant)
        if role is None:
            return f"{session.operator} has no role for tenant {tenant}"
        if method != "GET" and role != "editor":
            return f"{session.operator} may view tenant {tenant} but not change it (viewer)"
        return None

    # -- sign-in ---------------------------------------------------------------------------
    def login_page(request: Request, status: int = 200, **context: Any) -> Response:
        context.setdefault("next", request.query_params.get("next", "/"))
        context.setdefault("errors", {})
        context.setdefault("typed", "")
        return render(
            env,
            request,
            "login.html",
            status,
            oidc=oidc is not None,
            token_sign_in=token_sign_in,
            **context,
        )

    async def login(request: Request) -> Response:
        nxt = request.query_params.get("next", "/")
        if request.method == "GET":
            return login_page(request)
        if not token_sign_in:
            return login_page(request, 403, errors={"token": "sign in with OpenID Connect"})
        form = await request.form()
        operator = str(form.get("operator", "")).strip()
        errors: dict[str, str] = {}
        if not OPERATOR_RE.fullmatch(operator):
            errors["operator"] = "a name of letters, digits, . _ @ - (it signs your changes)"
        if not env.sessions.token_ok(str(form.get("token", ""))):
            errors["token"] = "wrong token"
        if errors:
            return login_page(request, 401, errors=errors, typed=operator)
        resp = RedirectResponse(local_path(nxt), 303)
        resp.set_cookie(
            COOKIE,
            env.sessions.issue(operator),
            max_age=int(settings.console.session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=settings.console.secure_cookie,
        )
        await record(operator, audited_tenants(EVERY_TENANT), "signed_in", method="token")
        return resp

    async def oidc_start(request: Request) -> Response:
        if oidc is None:
            return render(env, request, "error.html", 404, message="OpenID Connect is off")
        target = local_path(request.query_params.get("next", "/"))
        client = request.client.host if request.client else "unknown"
        try:
            url, state = await oidc.start(str(request.base_url), target, client=client)
        except SignInRefused as exc:
            return login_page(request, 502, errors={"oidc": exc.message})
        resp = RedirectResponse(url, 303)
        # SameSite=Lax: the provider's redirect back is a cross-site top-level navigation
        resp.set_cookie(
            STATE_COOKIE,
            state,
            max_age=600,
            httponly=True,
            samesite="lax",
            secure=settings.console.secure_cookie,
            path="/oidc",
        )
        return resp

    async def oidc_callback(request: Request) -> Response:
        if oidc is None:
            return render(env, request, "error.html", 404, message="OpenID Connect is off")
        q = request.query_params
        if "error" in q:
            message = f"the provider says: {q.get('error_description') or q['error']}"[:300]
            return login_page(request, 401, errors={"oidc": message})
        try:
            identity, target = await oidc.finish(
                str(request.base_url),
                q.get("code", ""),
                q.get("state", ""),
                request.cookies.get(STATE_COOKIE),
            )
        except SignInRefused as exc:
            log.info("console sign-in refused: %s", exc.message)
            return login_page(request, 401, errors={"oidc": exc.message})
        cookie = env.sessions.issue(identity.operator, identity.roles, method="oidc")
        await record(
            identity.operator,
            audited_tenants(identity.roles),
            "signed_in",
            method="oidc",
        )
        return signed_in(cookie, target)

    async def logout(request: Request, operator: str) -> Response:
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(COOKIE)
        return resp

    # -- tenants -----------------------------------------------------------------------------
    def offered(session: Session) -> list[str]:
        """The tenants the picker offers ``session``: the configured ones it has a role
        for, then those its roles name."""
        shown = [t for t in settings.console.tenants if session.role(t)]
        return shown + [t for t in session.roles if t != "*" and t not in shown]

    async def home(request: Request, operator: str) -> Response:
        wanted = request.query_params.get("tenant", "").strip()
        tenants = offered(request.state.session)
        if wanted:
            if TENANT_RE.fullmatch(wanted):
                return RedirectResponse(f"/t/{wanted}/actions", 303)
            return render(
                env,
                request,
                "home.html",
                400,
                tenants=tenants,
                errors={"tenant": "a tenant slug: lowercase letters, digits and -"},
                wanted=wanted,
            )
        return render(env, request, "home.html", tenants=tenants, errors={}, wanted="")

    # -- actions -----------------------------------------------------------------------------
    async def actions(request: Request, operator: str) -> Response:
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
        tenants = [t for t in offered(request.state.session) if t != tenant]
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
        return await action_page(env, request, operator)

    async def publish(request: Request, operator: str) -> Response:
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
                return RedirectResponse(
                    f"/t/{tenant}/actions/{name}?" + urlencode({"msg": msg}), 303
                )
        return await action_page(env, request, operator, errors=errors, meta=meta)

    async def switch(request: Request, operator: str) -> Response:
        """The kill switch buttons of the action page."""
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
            return await action_page(
                env, request, operator, errors=errors_of(exc, default="switch")
            )
        msg = "disabled on every worker" if op == "actions.disable" else "enabled"
        return RedirectResponse(f"/t/{tenant}/actions/{name}?" + urlencode({"msg": msg}), 303)

    async def test(request: Request, operator: str) -> Response:
        """The test panel's "Run the version": a published version on the panel's trigger and
        request; the editor beside it keeps what it holds."""
        form = texts(await request.form())
        submitted = form if "bump" in form else None  # the publish form came along
        version = form.get("version") or "latest"
        return await on_test_panel(
            request, operator, form, [], submitted, "request", version=version
        )

    # -- flows -------------------------------------------------------------------------------
    async def flows(request: Request, operator: str) -> Response:
        return await flows_page(env, request, operator)

    async def stage(request: Request, operator: str) -> Response:
        """The flows page's edits: each applied to the staged lists the page carries (made on
        revision ``base``) and shown, nothing written; "Save" writes them all as one
        revision (``flows.set``), removals only once confirmed."""
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
        result = await api.call(
            tenant, "flows.set", flow_type=flow_type, slots=staged, revision=base
        )
        flow = result["flow"] or {}
        msg = f"revision {flow.get('revision')}" if result["changed"] else "unchanged"
        return RedirectResponse(f"/t/{tenant}/flows/{flow_type}?" + urlencode({"msg": msg}), 303)

    async def flow_change(request: Request, operator: str) -> Response:
        tenant = request.path_params["tenant"]
        flow_type, op = request.path_params["flow_type"], request.path_params["op"]
        form = texts(await request.form())
        trigger = form.get("trigger", "")
        slot = {"flow_type": flow_type, "trigger": trigger}
        api = env.api(operator)
        try:
            if op in ("promote", "abort"):
                result = await api.call(
                    tenant, f"rollouts.{op}", action=form.get("action", ""), **slot
                )
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

    # -- audit -------------------------------------------------------------------------------
    async def audit(request: Request, operator: str) -> Response:
        tenant = request.path_params["tenant"]
        q = request.query_params
        kind = q.get("type", "")
        action = q.get("action", "").strip()
        sought = q.get("request", "").strip()  # a request_id, a signin_id or a user's id
        assert env.nc is not None
        events: list[AuditEvent] = []
        decisions: list[DecisionRecord] = []
        error = ""

        def keep(e: AuditEvent) -> bool:
            return (not action or e.action == action) and (
                not sought or sought in (e.request_id, e.signin_id)
            )

        js = env.nc.jetstream()

        async def decided() -> list[DecisionRecord]:
            """The decisions themselves, asked for a request, a sign-in or a user: what was
            decided, and why."""
            if not sought:
                return []
            return await latest_records(
                js,
                tenant=tenant,
                limit=AUDIT_DECISIONS,
                keep=lambda r: sought in (r.request_id, r.signin_id, r.user_id),
                stream=settings.audit.stream,
                max_scan=AUDIT_MAX_SCAN,
            )

        try:  # the two reads at once: the page waits for the slower, not for both
            events, decisions = await asyncio.gather(
                latest_events(
                    js,
                    tenant=tenant,
                    event_type=kind if kind in EVENT_TYPES else None,
                    limit=AUDIT_ROWS,
                    keep=keep if action or sought else None,
                    stream=settings.audit.stream,
                    max_scan=AUDIT_MAX_SCAN,
                ),
                decided(),
            )
        except Exception as exc:  # the stream may be missing on a fresh install
            error = f"cannot read the audit stream: {exc}"
        # a user's decisions bring their action runs along (an event names no user)
        shown = {e.event_id for e in events}
        runs = [e for d in decisions for e in d.events() if e.event_id not in shown]
        if runs:
            events = sorted(events + runs, key=lambda e: e.at)[-AUDIT_ROWS:]
        events.reverse()
        decisions.reverse()
        return render(
            env,
            request,
            "audit.html",
            events=events,
            kinds=EVENT_TYPES,
            kind=kind,
            action=action,
            sought=sought,
            decisions=decisions,
            rows=AUDIT_ROWS,
            error=error,
        )

    async def flows_default(request: Request, operator: str) -> Response:
        tenant = request.path_params["tenant"]
        return RedirectResponse(f"/t/{tenant}/flows/{FLOW_TYPES[0]}", 303)

    async def health(request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    routes = [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/oidc/start", oidc_start),
        Route("/oidc/callback", oidc_callback),
        Route("/logout", page(logout), methods=["POST"]),
        Route("/healthz", health),
        Route("/", page(home)),
        Route("/t/{tenant}/actions", page(actions), methods=["GET", "POST"]),
        Route("/t/{tenant}/actions/{name}", page(action)),
        Route("/t/{tenant}/actions/{name}/publish", page(publish), methods=["POST"]),
        Route("/t/{tenant}/actions/{name}/test", page(test), methods=["POST"]),
        Route("/t/{tenant}/actions/{name}/metadata", page(metadata), methods=["POST"]),
        Route(
            "/t/{tenant}/actions/{name}/{op:str}",
            page(switch),
            methods=["POST"],
        ),
        Route("/t/{tenant}/flows", page(flows_default)),
        Route("/t/{tenant}/flows/{flow_type}", page(flows)),
        Route("/t/{tenant}/flows/{flow_type}/stage", page(stage), methods=["POST"]),
        Route("/t/{tenant}/flows/{flow_type}/{op}", page(flow_change), methods=["POST"]),
        Route("/t/{tenant}/audit", page(audit)),
        Mount("/static", StaticFiles(packages=[("gatehook.console", "static")]), name="static"),
        *env.editor.routes(),
    ]

    async def api_error(request: Request, exc: Exception) -> Response:
        """An API failure no page handled (the worker down, a thing gone): say so plainly."""
        assert isinstance(exc, GatehookError)
        status = 503 if exc.retryable else 404
        if exc.retryable:
            log.warning("console: %s %s: %s", request.method, request.url.path, exc.message)
        return render(env, request, "error.html", status, message=exc.message)

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={GatehookError: api_error},
        middleware=[Middleware(SecurityHeaders)],
    )
