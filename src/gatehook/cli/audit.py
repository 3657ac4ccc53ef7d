"""``gatehook audit tail|why``: read the audit stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from nats.aio.client import Client as NATS
from rich.table import Table

from gatehook.cli.common import JsonOpt, TenantOpt, app, out, run, with_nats

audit_app = typer.Typer(no_args_is_help=True, help="Read the audit stream.")
app.add_typer(audit_app, name="audit")


# -- audit -------------------------------------------------------------------------------------
def _duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise typer.BadParameter(f"{text!r}: use a number and s, m, h or d (e.g. 30m)") from None


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@audit_app.command("tail")
def audit_tail(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="e.g. flow.action_executed")
    ] = None,
    since: Annotated[str, typer.Option(help="how far back, e.g. 2h")] = "1h",
    follow: Annotated[bool, typer.Option("--follow", "-F")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print audit events (a table, or JSON lines), oldest first; --follow for new ones."""
    from gatehook.audit.reader import read_events

    start = datetime.now(UTC) - _duration(since)

    async def go(nc: NATS) -> None:
        table = Table("at", "tenant", "type", "action", "version", "outcome", "request/actor")
        async for e in read_events(
            nc.jetstream(), tenant=tenant, event_type=event_type, since=start, follow=follow
        ):
            if as_json or follow:
                print(e.model_dump_json(), flush=True)  # one event a line, never wrapped
            else:
                who = e.request_id or e.actor
                table.add_row(
                    e.at.isoformat(timespec="milliseconds"),
                    e.tenant,
                    e.type,
                    e.action or "",
                    e.version or "",
                    e.outcome.value if e.outcome else "",
                    who,
                )
        if not (as_json or follow):
            out.print(table)

    run(with_nats(go))


@audit_app.command("why")
def audit_why(
    tenant: TenantOpt,
    at: Annotated[str, typer.Option(help="when it started, ISO 8601 (UTC if no zone)")],
    window: Annotated[str, typer.Option(help="look this far either side")] = "30m",
) -> None:
    """Failure and block rates per action version around a moment, the changes in the window,
    and the most likely culprit."""
    from gatehook.audit.forensics import why
    from gatehook.audit.reader import read_events

    moment, span = _instant(at), _duration(window)

    async def go(nc: NATS) -> None:
        events = [
            e
            async for e in read_events(
                nc.jetstream(), tenant=tenant, since=moment - span, until=moment + span
            )
        ]
        report = why(events, moment)
        table = Table("action", "version", "before: failed/runs", "after: failed/runs")
        for (action, version), (before, after) in sorted(report.rates.items()):
            table.add_row(
                action,
                version,
                f"{before.failures}/{before.runs} ({before.rate:.0%})",
                f"{after.failures}/{after.runs} ({after.rate:.0%})",
            )
        out.print(table)
        for c in report.changes:
            out.print(
                f"change: {c.at.isoformat()} {c.type} {c.action}@{c.version} by {c.actor}",
                markup=False,
            )
        if report.culprit is None:
            out.print("no change in the window explains a rise in failures")
        else:
            out.print(f"[bold]likely culprit:[/bold] {report.culprit.evidence()}")

    run(with_nats(go))
