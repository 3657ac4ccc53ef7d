"""Who may see and change what in the console: every page but the sign-in's is wrapped by
``page``, which signs the operator in from the session cookie, checks the CSRF token of
a POST, refuses a tenant the session has no role for (or a change by a viewer), audits
refusals and a session's first page of a tenant it was not audited for at sign-in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehook.console.auth import Session
from gatehook.console.pages import COOKIE, Env, env_of, render
from gatehook.domain.catalogue import tenant_problem

__all__ = ["Handler", "page"]

#: A signed-in page: the request and the operator's name.
Handler = Callable[[Request, str], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Signed-in pages only; POSTs must carry the session's CSRF token."""

    async def endpoint(request: Request) -> Response:
        env = env_of(request)
        cookie = request.cookies.get(COOKIE, "")
        session = env.sessions.session(cookie)
        if session is None:
            return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
        operator = session.operator
        tenant = request.path_params.get("tenant")
        if tenant is not None and tenant_problem(tenant) is not None:
            return render(env, request, "error.html", 404, message="no such tenant")
        if request.method == "POST":
            form = await request.form()
            if not env.sessions.csrf_ok(cookie, str(form.get("csrf", ""))):
                return render(env, request, "error.html", 403, message="stale form: reload")
        if tenant is not None:
            refusal = refused(session, tenant, request.method)
            if refusal is not None:
                await env.record(
                    operator,
                    [tenant],
                    "refused",
                    role=session.role(tenant),
                    path=f"{request.method} {request.url.path}"[:500],
                    reason=refusal,
                )
                return render(env, request, "error.html", 403, message=refusal)
            await first_visit(env, cookie, session, tenant, f"{request.method} {request.url.path}")
        request.state.session = session
        return await handler(request, operator)

    return endpoint


async def first_visit(env: Env, cookie: str, session: Session, tenant: str, path: str) -> None:
    """A session that may open every tenant was audited at sign-in only for the picker's
    tenants (``GATEHOOK_CONSOLE__TENANTS``): its first page of any other tenant is
    recorded for that tenant as ``console.signed_in`` (with the page), so every tenant's
    audit names each operator who opened it. Remembered per console process for the
    last ``FIRST_VISITS_KEPT`` pairs (a console restart records a session again)."""
    if not session.every_tenant or tenant in env.audited_tenants(session.roles):
        return
    if env.visited.peek((cookie, tenant)) is not None:
        return
    env.visited.put((cookie, tenant), True)
    await env.record(
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
