"""What the console's pages share: the console's state (``Env``, on the app), rendering,
form values, API errors keyed by the field they concern."""

from __future__ import annotations

import json
import logging
from typing import Any

import jinja2
from nats.aio.client import Client as NATS
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gatehook.admin.client import AdminClient
from gatehook.console.auth import Session, Sessions
from gatehook.console.oidc import Oidc
from gatehook.console.script_editor import ScriptEditor
from gatehook.domain.catalogue import TRIGGERS
from gatehook.errors import GatehookError, ValidationFailed
from gatehook.service.cache import Lru
from gatehook.settings import Settings

__all__ = [
    "COOKIE",
    "FLOW_TYPES",
    "SAMPLE_REQUEST",
    "Env",
    "env_of",
    "errors_of",
    "render",
    "texts",
]

log = logging.getLogger("gatehook.console")

COOKIE = "gatehook_console"
FIRST_VISITS_KEPT = 10_000  # (session, tenant) pairs remembered as audited
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
    """What the pages share: the settings, sessions and sign-in, the NATS connection, the
    API client factory, the renderer; one per console app (``app.state.env``)."""

    def __init__(self, settings: Settings, sessions: Sessions) -> None:
        self.settings = settings
        self.sessions = sessions
        self.oidc = Oidc(settings.console.oidc) if settings.console.oidc.issuer else None
        self.token_sign_in = self.oidc is None or settings.console.oidc.token_sign_in
        # (session cookie, tenant) pairs whose first page was audited (``access.first_visit``)
        self.visited: Lru[tuple[str, str], bool] = Lru(FIRST_VISITS_KEPT)
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

    async def record(self, operator: str, tenants: list[str], event: str, **fields: Any) -> None:
        """A console audit event for each tenant, written by a worker (``console.audit``);
        when no worker answers, the console logs it instead of failing the operator."""
        for tenant in tenants:
            try:
                await self.api(operator).call(tenant, "console.audit", event=event, **fields)
            except GatehookError as exc:
                log.warning(
                    "console %s of %s for tenant %s not audited: %s",
                    event,
                    operator,
                    tenant,
                    exc.message,
                )

    def audited_tenants(self, roles: dict[str, str]) -> list[str]:
        """The tenants a sign-in concerns: those named, or the picker's for every tenant."""
        named = [t for t in roles if t != "*"]
        every = "*" in roles
        return named + [t for t in self.settings.console.tenants if every and t not in named]

    def offered(self, session: Session) -> list[str]:
        """The tenants the picker offers ``session``: the configured ones it has a role
        for, then those its roles name."""
        shown = [t for t in self.settings.console.tenants if session.role(t)]
        return shown + [t for t in session.roles if t != "*" and t not in shown]


def env_of(request: Request) -> Env:
    """The console's shared state, from the app serving ``request``."""
    env: Env = request.app.state.env
    return env


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
