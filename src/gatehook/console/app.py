"""The web console: server-rendered pages over the management API.

Every change goes through ``AdminClient`` over NATS, so the console takes the same path as
the CLI and flows-as-code (validation, versioning, audit, change broadcast): it holds no data
of its own and needs no database. Pages are Jinja templates rendered by Starlette; forms
post back and redirect (no JavaScript needed), and an error from the API is shown next to
the field it names.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import jinja2
import nats
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gatehook.admin.client import AdminClient
from gatehook.audit.reader import latest_events
from gatehook.console import forms
from gatehook.console.auth import OPERATOR_RE, Sessions
from gatehook.domain.catalogue import TENANT_RE, TRIGGERS
from gatehook.domain.contract import AuditEvent
from gatehook.errors import GatehookError, ValidationFailed
from gatehook.settings import Settings

__all__ = ["build_app"]

log = logging.getLogger("gatehook.console")

COOKIE = "gatehook_console"
FLOW_TYPES = [ft.value for ft in TRIGGERS]
EVENT_TYPES = [
    "flow.action_published",
    "flow.action_attached",
    "flow.action_detached",
    "flow.action_updated",
    "flow.action_executed",
]
AUDIT_ROWS = 200  # newest events on the audit page
AUDIT_MAX_SCAN = 200_000  # stream sequence numbers looked at, at most, for one page
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


class _Env:
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

    def api(self, operator: str) -> AdminClient:
        assert self.nc is not None
        return AdminClient(self.nc, actor=f"console:{operator}", timeout=30)


def build_app(settings: Settings, token: str) -> Starlette:
    """The console's ASGI app; it connects to NATS when it starts and drains when it stops."""
    env = _Env(settings, Sessions(token, settings.console.session_ttl_s))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        env.nc = await nats.connect(settings.nats_url, name="gatehook-console")
        try:
            yield
        finally:
            await env.nc.drain()

    Handler = Callable[[Request, str], Awaitable[Response]]

    def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Signed-in pages only; POSTs must carry the session's CSRF token."""

        async def endpoint(request: Request) -> Response:
            cookie = request.cookies.get(COOKIE, "")
            operator = env.sessions.operator(cookie)
            if operator is None:
                return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
            tenant = request.path_params.get("tenant")
            if tenant is not None and not TENANT_RE.fullmatch(tenant):
                return _html(env, request, "error.html", 404, message="no such tenant")
            if request.method == "POST":
                form = await request.form()
                if not env.sessions.csrf_ok(cookie, str(form.get("csrf", ""))):
                    return _html(env, request, "error.html", 403, message="stale form: reload")
            return await handler(request, operator)

        return endpoint

    # -- sign-in ---------------------------------------------------------------------------
    async def login(request: Request) -> Response:
        nxt = request.query_params.get("next", "/")
        if request.method == "GET":
            return _html(env, request, "login.html", next=nxt, errors={}, typed="")
        form = await request.form()
        operator = str(form.get("operator", "")).strip()
        errors: dict[str, str] = {}
        if not OPERATOR_RE.fullmatch(operator):
            errors["operator"] = "a name of letters, digits, . _ @ - (it signs your changes)"
        if not env.sessions.token_ok(str(form.get("token", ""))):
            errors["token"] = "wrong token"
        if errors:
            return _html(env, request, "login.html", 401, next=nxt, errors=errors, typed=operator)
        target = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"
        resp = RedirectResponse(target, 303)
        resp.set_cookie(
            COOKIE,
            env.sessions.issue(operator),
            max_age=int(settings.console.session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=settings.console.secure_cookie,
        )
        return resp

    async def logout(request: Request, operator: str) -> Response:
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(COOKIE)
        return resp

    # -- tenants -----------------------------------------------------------------------------
    async def home(request: Request, operator: str) -> Response:
        wanted = request.query_params.get("tenant", "").strip()
        if wanted:
            if TENANT_RE.fullmatch(wanted):
                return RedirectResponse(f"/t/{wanted}/actions", 303)
            return _html(
                env,
                request,
                "home.html",
                400,
                tenants=settings.console.tenants,
                errors={"tenant": "a tenant slug: lowercase letters, digits and -"},
                wanted=wanted,
            )
        return _html(
            env, request, "home.html", tenants=settings.console.tenants, errors={}, wanted=""
        )

    # -- actions -----------------------------------------------------------------------------
    async def actions(request: Request, operator: str) -> Response:
        tenant = request.path_params["tenant"]
        api = env.api(operator)
        errors: dict[str, str] = {}
        values = {"name": "", "template": ""}
        if request.method == "POST":
            form = await request.form()
            values = {
                "name": str(form.get("name", "")).strip(),
                "template": str(form.get("template", "")),
            }
            try:
                await api.call(
                    tenant,
                    "actions.create",
                    name=values["name"],
                    template=values["template"] or None,
                )
            except GatehookError as exc:
                errors = _errors(exc, default="name")
            else:
                return RedirectResponse(
                    f"/t/{tenant}/actions/{values['name']}?" + urlencode({"msg": "created"}), 303
                )
        rows, templates = await asyncio.gather(
            api.call(tenant, "actions.list"), api.call(tenant, "templates.list")
        )
        return _html(
            env,
            request,
            "actions.html",
            400 if errors else 200,
            tenant=tenant,
            rows=rows,
            templates=templates,
            errors=errors,
            values=values,
        )

    async def action(request: Request, operator: str) -> Response:
        return await _action_page(env, request, operator)

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
        if kind == "template":
            tpl = await api.call(tenant, "templates.show", name=shown["action"]["template"])
            try:
                body["config"] = forms.parse(tpl["config_schema"], _text(form))
            except forms.FormErrors as exc:
                errors.update(exc.errors)
        else:
            body["source"] = str(form.get("source", ""))
            body["language"] = str(form.get("language") or "js")
            body["allowed_hosts"] = [
                h.strip() for h in str(form.get("allowed_hosts", "")).splitlines() if h.strip()
            ]
        if not errors:
            try:
                result = await api.call(tenant, "actions.publish", **body)
            except GatehookError as exc:
                errors = _errors(exc, default="source" if kind == "custom" else "form")
            else:
                version = result["version"]["version"]
                msg = f"published {version}" if result["created"] else "unchanged: no new version"
                query = urlencode({"msg": msg, "version": version})
                return RedirectResponse(f"/t/{tenant}/actions/{name}?{query}", 303)
        return await _action_page(env, request, operator, errors=errors, submitted=_text(form))

    async def test(request: Request, operator: str) -> Response:
        tenant, name = request.path_params["tenant"], request.path_params["name"]
        form = _text(await request.form())
        errors: dict[str, str] = {}
        result: Any = None
        try:
            sample = json.loads(form.get("request", ""))
        except ValueError as exc:
            errors["request"] = f"not valid JSON: {exc}"
        else:
            flow_type, _, trigger = form.get("slot", "").partition(".")
            try:
                result = await env.api(operator).call(
                    tenant,
                    "actions.test",
                    name=name,
                    version=form.get("version") or "latest",
                    flow_type=flow_type,
                    trigger=trigger,
                    request=sample if isinstance(sample, dict) else {},
                )
            except GatehookError as exc:
                errors = _errors(exc, default="request", prefix="request")
        return await _action_page(
            env, request, operator, errors=errors, test_form=form, test_result=result
        )

    # -- flows -------------------------------------------------------------------------------
    async def flows(request: Request, operator: str) -> Response:
        return await _flows_page(env, request, operator)

    async def flow_change(request: Request, operator: str) -> Response:
        tenant = request.path_params["tenant"]
        flow_type, op = request.path_params["flow_type"], request.path_params["op"]
        form = _text(await request.form())
        trigger = form.get("trigger", "")
        slot = {"flow_type": flow_type, "trigger": trigger}
        api = env.api(operator)
        try:
            if op == "attach":
                result = await api.call(
                    tenant,
                    "flows.attach",
                    action=form.get("action", ""),
                    version=form.get("version") or "latest",
                    **slot,
                )
            elif op == "detach":
                result = await api.call(
                    tenant, "flows.detach", action=form.get("action", ""), **slot
                )
            elif op == "pin":
                result = await api.call(
                    tenant,
                    "flows.update",
                    action=form.get("action", ""),
                    version=form.get("version", ""),
                    **slot,
                )
            elif op == "move":
                order = [n for n in form.get("order", "").split(",") if n]
                i, d = order.index(form.get("action", "")), int(form.get("delta", "0"))
                j = max(0, min(len(order) - 1, i + d))
                order[i], order[j] = order[j], order[i]
                result = await api.call(tenant, "flows.reorder", order=order, **slot)
            elif op == "rollback":
                revision = int(form.get("revision", "0"))
                result = await api.call(
                    tenant, "flows.rollback", flow_type=flow_type, revision=revision
                )
            else:
                return _html(env, request, "error.html", 404, message=f"no operation {op}")
        except (GatehookError, ValueError) as exc:
            errors = (
                _errors(exc, default="action")
                if isinstance(exc, GatehookError)
                else {"action": str(exc)}
            )
            return await _flows_page(env, request, operator, errors=errors, failed_slot=trigger)
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
        assert env.nc is not None
        events: list[AuditEvent] = []
        error = ""
        try:
            events = await latest_events(
                env.nc.jetstream(),
                tenant=tenant,
                event_type=kind if kind in EVENT_TYPES else None,
                limit=AUDIT_ROWS,
                keep=(lambda e: e.action == action) if action else None,
                stream=settings.audit.stream,
                max_scan=AUDIT_MAX_SCAN,
            )
        except Exception as exc:  # the stream may be missing on a fresh install
            error = f"cannot read the audit stream: {exc}"
        events.reverse()
        return _html(
            env,
            request,
            "audit.html",
            tenant=tenant,
            events=events,
            kinds=EVENT_TYPES,
            kind=kind,
            action=action,
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
        Route("/logout", page(logout), methods=["POST"]),
        Route("/healthz", health),
        Route("/", page(home)),
        Route("/t/{tenant}/actions", page(actions), methods=["GET", "POST"]),
        Route("/t/{tenant}/actions/{name}", page(action)),
        Route("/t/{tenant}/actions/{name}/publish", page(publish), methods=["POST"]),
        Route("/t/{tenant}/actions/{name}/test", page(test), methods=["POST"]),
        Route("/t/{tenant}/flows", page(flows_default)),
        Route("/t/{tenant}/flows/{flow_type}", page(flows)),
        Route("/t/{tenant}/flows/{flow_type}/{op}", page(flow_change), methods=["POST"]),
        Route("/t/{tenant}/audit", page(audit)),
        Mount("/static", StaticFiles(packages=[("gatehook.console", "static")]), name="static"),
    ]

    async def api_error(request: Request, exc: Exception) -> Response:
        """An API failure no page handled (the worker down, a thing gone): say so plainly."""
        assert isinstance(exc, GatehookError)
        status = 503 if exc.retryable else 404
        return _html(env, request, "error.html", status, message=exc.message)

    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={GatehookError: api_error}
    )


# -- shared page builders ----------------------------------------------------------------------


def _text(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _errors(exc: GatehookError, *, default: str, prefix: str = "") -> dict[str, str]:
    """The API's error keyed by the form field it concerns (``default`` when it names none)."""
    field = getattr(exc, "field", None) if isinstance(exc, ValidationFailed) else None
    key = str(field) if field else default
    if prefix and key.startswith(prefix + "."):
        key = prefix
    return {key: exc.message}


def _html(
    env: _Env, request: Request, page: str, status: int = 200, **context: Any
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


async def _action_page(
    env: _Env,
    request: Request,
    operator: str,
    *,
    errors: dict[str, str] | None = None,
    submitted: dict[str, str] | None = None,
    test_form: dict[str, str] | None = None,
    test_result: Any = None,
) -> Response:
    tenant, name = request.path_params["tenant"], request.path_params["name"]
    api = env.api(operator)
    shown = await api.call(tenant, "actions.show", name=name)
    act, versions = shown["action"], shown["versions"]
    versions.sort(key=lambda v: [int(x) for x in v["version"].split(".")], reverse=True)
    wanted = request.query_params.get("version") or (test_form or {}).get("version")
    current = next(
        (v for v in versions if v["version"] == wanted), versions[0] if versions else None
    )
    template = None
    fields: list[forms.Field] = []
    if act["kind"] == "template":
        template = await api.call(tenant, "templates.show", name=act["template"])
        config = (current or {}).get("config") or {}
        fields = forms.fields(template["config_schema"], config)
        if submitted is not None:
            fields = _refill(fields, submitted)
    slots = [
        f"{ft}.{tr.value}"
        for ft_enum, triggers in TRIGGERS.items()
        for ft in [ft_enum.value]
        for tr in triggers
        if not act["triggers"] or tr.value in act["triggers"]
    ]
    form = submitted or {}
    status = 400 if errors else 200
    return _html(
        env,
        request,
        "action.html",
        status,
        tenant=tenant,
        act=act,
        versions=versions,
        current=current,
        template=template,
        fields=fields,
        errors=errors or {},
        form={
            "source": form.get("source", (current or {}).get("source") or _STARTER),
            "language": form.get("language", (current or {}).get("language") or "js"),
            "timeout_ms": form.get("timeout_ms", str((current or {}).get("timeout_ms") or "")),
            "allowed_to_fail": (
                form.get("allowed_to_fail") == "on"
                if submitted is not None
                else bool((current or {}).get("allowed_to_fail"))
            ),
            "allowed_hosts": form.get(
                "allowed_hosts", "\n".join((current or {}).get("allowed_hosts") or [])
            ),
            "bump": form.get("bump", "patch"),
        },
        slots=slots,
        test_form=test_form
        or {"request": json.dumps(SAMPLE_REQUEST, indent=2), "slot": slots[0] if slots else ""},
        test_result=test_result,
    )


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


_STARTER = """export async function execute(input) {
  // input.user, input.request, input.context, input.state, input.config
  return { kind: 'continue', claims: {} };
}
"""


async def _flows_page(
    env: _Env,
    request: Request,
    operator: str,
    *,
    errors: dict[str, str] | None = None,
    failed_slot: str = "",
) -> Response:
    tenant, flow_type = request.path_params["tenant"], request.path_params["flow_type"]
    if flow_type not in FLOW_TYPES:
        return _html(env, request, "error.html", 404, message=f"no flow type {flow_type}")
    api = env.api(operator)
    flow, history, rows = await asyncio.gather(
        api.call(tenant, "flows.show", flow_type=flow_type),
        api.call(tenant, "flows.history", flow_type=flow_type, limit=20),
        api.call(tenant, "actions.list"),
    )
    slots = (flow or {}).get("slots") or {}
    attached = {a["action"] for atts in slots.values() for a in atts}
    shows = await asyncio.gather(*(api.call(tenant, "actions.show", name=n) for n in attached))
    versions = {
        s["action"]["name"]: sorted(
            (v["version"] for v in s["versions"]),
            key=lambda v: [int(x) for x in v.split(".")],
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
                "order": ",".join(names),
                "candidates": [
                    r
                    for r in rows
                    if r["name"] not in names
                    and r["latest_version"]
                    and (not r["triggers"] or tr.value in r["triggers"])
                ],
            }
        )
    return _html(
        env,
        request,
        "flows.html",
        400 if errors else 200,
        tenant=tenant,
        flow_type=flow_type,
        flow_types=FLOW_TYPES,
        flow=flow,
        history=history,
        sections=sections,
        versions=versions,
        errors=errors or {},
        failed_slot=failed_slot,
    )
