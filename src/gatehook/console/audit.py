"""The console's audit page: a tenant's newest events, and a request's, sign-in's or user's
decisions with their reasons and every action run."""

from __future__ import annotations

import asyncio
from typing import get_args

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatehook.audit.reader import latest_events, latest_records
from gatehook.console.access import page
from gatehook.console.pages import env_of, render
from gatehook.domain.contract import AuditEvent, AuditEventType, DecisionRecord

__all__ = ["ROUTES"]

EVENT_TYPES: list[str] = list(get_args(AuditEventType))  # every type the stream carries
AUDIT_ROWS = 200  # newest events on the audit page
AUDIT_DECISIONS = 20  # a request's or sign-in's newest decisions shown above them
AUDIT_MAX_SCAN = 200_000  # stream sequence numbers looked at, at most, for one page


async def audit(request: Request, operator: str) -> Response:
    env = env_of(request)
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
            stream=env.settings.audit.stream,
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
                stream=env.settings.audit.stream,
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


ROUTES = [Route("/t/{tenant}/audit", page(audit))]
