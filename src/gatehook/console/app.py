"""The web console: server-rendered pages over the management API.

Every change goes through ``AdminClient`` over NATS, so the console takes the same path as
the CLI and flows-as-code (validation, versioning, audit, change broadcast): it holds no data
of its own and needs no database. Pages are Jinja templates rendered by Starlette; forms
post back and redirect (no JavaScript needed), and an error from the API is shown next to
the field it names.

The pages live by area, each module with its routes: ``signin`` (the token form, OpenID
Connect), ``actions``, ``flows``, ``audit``; ``access`` guards every signed-in page, and
``pages.Env`` is the state they share, on the app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gatehook.console import actions, audit, flows, signin
from gatehook.console.access import page
from gatehook.console.auth import Sessions
from gatehook.console.pages import Env, env_of, render
from gatehook.console.security import SecurityHeaders
from gatehook.domain.catalogue import tenant_problem
from gatehook.errors import GatehookError
from gatehook.security.connections import connect_nats
from gatehook.settings import Settings

__all__ = ["build_app"]

log = logging.getLogger("gatehook.console")


def build_app(settings: Settings, token: str) -> Starlette:
    """The console's ASGI app; it connects to NATS when it starts and drains when it stops."""
    env = Env(settings, Sessions(token, settings.console.session_ttl_s))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        env.nc = await connect_nats(settings, name="gatehook-console")
        env.editor.announce()
        try:
            yield
        finally:
            await env.nc.drain()
            if env.oidc is not None:
                await env.oidc.aclose()

    app = Starlette(
        routes=[
            Route("/healthz", health),
            Route("/", page(home)),
            *signin.ROUTES,
            *actions.ROUTES,
            *flows.ROUTES,
            *audit.ROUTES,
            Mount("/static", StaticFiles(packages=[("gatehook.console", "static")]), name="static"),
            *env.editor.routes(),
        ],
        lifespan=lifespan,
        exception_handlers={GatehookError: api_error},
        middleware=[Middleware(SecurityHeaders)],
    )
    app.state.env = env
    return app


async def home(request: Request, operator: str) -> Response:
    """The tenant picker."""
    env = env_of(request)
    wanted = request.query_params.get("tenant", "").strip()
    tenants = env.offered(request.state.session)
    if wanted:
        if tenant_problem(wanted) is None:
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


async def health(request: Request) -> Response:
    return Response("ok", media_type="text/plain")


async def api_error(request: Request, exc: Exception) -> Response:
    """An API failure no page handled (the worker down, a thing gone): say so plainly."""
    assert isinstance(exc, GatehookError)
    status = 503 if exc.retryable else 404
    if exc.retryable:
        log.warning("console: %s %s: %s", request.method, request.url.path, exc.message)
    return render(env_of(request), request, "error.html", status, message=exc.message)
