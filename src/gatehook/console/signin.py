"""Signing in to the console: the shared token's form, OpenID Connect, signing out.

A sign-in sets the session cookie (``console.auth``) and is audited ``console.signed_in``
for the tenants it concerns.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from gatehook.console.access import page
from gatehook.console.auth import EVERY_TENANT, OPERATOR_RE
from gatehook.console.oidc import SignInRefused
from gatehook.console.pages import COOKIE, Env, env_of, render
from gatehook.console.security import local_path

__all__ = ["ROUTES"]

log = logging.getLogger("gatehook.console")

STATE_COOKIE = "gatehook_oidc_state"


def signed_in(env: Env, session_cookie: str, target: str) -> Response:
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
        max_age=int(env.settings.console.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=env.settings.console.secure_cookie,
    )
    resp.delete_cookie(STATE_COOKIE)
    return resp


def login_page(request: Request, status: int = 200, **context: Any) -> Response:
    env = env_of(request)
    context.setdefault("next", request.query_params.get("next", "/"))
    context.setdefault("errors", {})
    context.setdefault("typed", "")
    return render(
        env,
        request,
        "login.html",
        status,
        oidc=env.oidc is not None,
        token_sign_in=env.token_sign_in,
        **context,
    )


async def login(request: Request) -> Response:
    env = env_of(request)
    nxt = request.query_params.get("next", "/")
    if request.method == "GET":
        return login_page(request)
    if not env.token_sign_in:
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
        max_age=int(env.settings.console.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=env.settings.console.secure_cookie,
    )
    await env.record(operator, env.audited_tenants(EVERY_TENANT), "signed_in", method="token")
    return resp


async def oidc_start(request: Request) -> Response:
    env = env_of(request)
    if env.oidc is None:
        return render(env, request, "error.html", 404, message="OpenID Connect is off")
    target = local_path(request.query_params.get("next", "/"))
    client = request.client.host if request.client else "unknown"
    try:
        url, state = await env.oidc.start(str(request.base_url), target, client=client)
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
        secure=env.settings.console.secure_cookie,
        path="/oidc",
    )
    return resp


async def oidc_callback(request: Request) -> Response:
    env = env_of(request)
    if env.oidc is None:
        return render(env, request, "error.html", 404, message="OpenID Connect is off")
    q = request.query_params
    if "error" in q:
        message = f"the provider says: {q.get('error_description') or q['error']}"[:300]
        return login_page(request, 401, errors={"oidc": message})
    try:
        identity, target = await env.oidc.finish(
            str(request.base_url),
            q.get("code", ""),
            q.get("state", ""),
            request.cookies.get(STATE_COOKIE),
        )
    except SignInRefused as exc:
        log.info("console sign-in refused: %s", exc.message)
        return login_page(request, 401, errors={"oidc": exc.message})
    cookie = env.sessions.issue(identity.operator, identity.roles, method="oidc")
    await env.record(
        identity.operator,
        env.audited_tenants(identity.roles),
        "signed_in",
        method="oidc",
    )
    return signed_in(env, cookie, target)


async def logout(request: Request, operator: str) -> Response:
    resp = RedirectResponse("/login", 303)
    resp.delete_cookie(COOKIE)
    return resp


ROUTES = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/oidc/start", oidc_start),
    Route("/oidc/callback", oidc_callback),
    Route("/logout", page(logout), methods=["POST"]),
]
