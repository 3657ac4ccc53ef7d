"""``gatehook flows ...`` and ``gatehook apply``: flows and flows as code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from gatehook.admin.apply import load_file
from gatehook.admin.client import AdminClient
from gatehook.cli.common import (
    FlowOpt,
    TenantOpt,
    TriggerOpt,
    app,
    err,
    out,
    run,
    with_admin,
)
from gatehook.errors import GatehookError

flows_app = typer.Typer(no_args_is_help=True, help="Flows of a tenant.")
app.add_typer(flows_app, name="flows")


def _slot_table(flow: dict[str, Any] | None) -> None:
    if flow is None:
        out.print("no flow")
        return
    out.print(f"revision {flow['revision']} by {flow['actor']} at {flow['created_at']}")
    table = Table("trigger", "#", "action", "version")
    for trigger, atts in flow["slots"].items():
        for i, a in enumerate(atts):
            table.add_row(trigger, str(i), a["action"], a["version"])
    out.print(table)


@flows_app.command("show")
def flows_show(tenant: TenantOpt, flow: FlowOpt) -> None:
    """The current revision of a flow."""
    _slot_table(run(with_admin(lambda c: c.call(tenant, "flows.show", flow_type=flow))))


@flows_app.command("history")
def flows_history(tenant: TenantOpt, flow: FlowOpt, limit: int = 20) -> None:
    """Revisions of a flow, newest first."""
    revs = run(with_admin(lambda c: c.call(tenant, "flows.history", flow_type=flow, limit=limit)))
    table = Table("revision", "at", "actor", "note", "slots")
    for r in revs:
        slots = "; ".join(
            f"{t}: " + ", ".join(f"{a['action']}@{a['version']}" for a in atts)
            for t, atts in r["slots"].items()
        )
        table.add_row(
            str(r["revision"]), str(r["created_at"]), r["actor"], r.get("note") or "", slots
        )
    out.print(table)


@flows_app.command("attach")
def flows_attach(
    tenant: TenantOpt,
    flow: FlowOpt,
    trigger: TriggerOpt,
    action: str,
    version: str = "latest",
    position: int | None = None,
) -> None:
    """Attach an action (at a version, default the newest) to a trigger."""
    r = run(
        with_admin(
            lambda c: c.call(
                tenant,
                "flows.attach",
                flow_type=flow,
                trigger=trigger,
                action=action,
                version=version,
                position=position,
            )
        )
    )
    _slot_table(r["flow"])


@flows_app.command("detach")
def flows_detach(tenant: TenantOpt, flow: FlowOpt, trigger: TriggerOpt, action: str) -> None:
    """Detach an action from a trigger."""
    r = run(
        with_admin(
            lambda c: c.call(tenant, "flows.detach", flow_type=flow, trigger=trigger, action=action)
        )
    )
    _slot_table(r["flow"])


@flows_app.command("pin")
def flows_pin(
    tenant: TenantOpt, flow: FlowOpt, trigger: TriggerOpt, action: str, version: str
) -> None:
    """Pin an attached action to another version (a new flow revision)."""
    r = run(
        with_admin(
            lambda c: c.call(
                tenant,
                "flows.update",
                flow_type=flow,
                trigger=trigger,
                action=action,
                version=version,
            )
        )
    )
    _slot_table(r["flow"])


@flows_app.command("reorder")
def flows_reorder(
    tenant: TenantOpt,
    flow: FlowOpt,
    trigger: TriggerOpt,
    order: Annotated[list[str], typer.Argument()],
) -> None:
    """Put a slot's actions in a new order."""
    r = run(
        with_admin(
            lambda c: c.call(tenant, "flows.reorder", flow_type=flow, trigger=trigger, order=order)
        )
    )
    _slot_table(r["flow"])


@flows_app.command("rollback")
def flows_rollback(tenant: TenantOpt, flow: FlowOpt, revision: int) -> None:
    """Make an earlier revision current again (as a new revision)."""
    r = run(
        with_admin(lambda c: c.call(tenant, "flows.rollback", flow_type=flow, revision=revision))
    )
    _slot_table(r["flow"])


# -- apply -------------------------------------------------------------------------------------
@app.command()
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="tenant YAML (flows as code)")],
    tenant: Annotated[list[str] | None, typer.Option("--tenant", "-t", help="repeatable")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
) -> None:
    """Apply a tenant file idempotently; prints the plan of what changes."""
    try:
        doc, sources = load_file(file)
    except GatehookError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    targets = tenant or ([doc.tenant] if doc.tenant else [])
    if not targets:
        err.print("[red]error:[/red] no tenant: give `tenant:` in the file or --tenant")
        raise typer.Exit(2)

    async def go(client: AdminClient) -> list[Any]:
        return [
            await client.call(
                t, "apply", file=doc.model_dump(mode="json"), sources=sources, dry_run=dry_run
            )
            for t in targets
        ]

    for plan in run(with_admin(go)):
        head = "plan" if dry_run else "applied"
        if not plan["changes"]:
            out.print(f"[green]{plan['tenant']}[/green]: up to date")
            continue
        out.print(f"[bold]{plan['tenant']}[/bold] ({head}):")
        for line in plan["changes"]:
            out.print(f"  - {line}", markup=False)
