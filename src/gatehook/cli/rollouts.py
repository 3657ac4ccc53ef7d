"""``gatehook rollout status|promote|abort`` and ``gatehook actions disable|enable``: safe
change of live flows from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from gatehook.cli.actions import actions_app
from gatehook.cli.audit import _duration
from gatehook.cli.common import JsonOpt, TenantOpt, app, err, out, print_json, run, with_admin

__all__ = ["rollout_app"]

rollout_app = typer.Typer(no_args_is_help=True, help="Canary and shadow rollouts of a tenant.")
app.add_typer(rollout_app, name="rollout")

SlotArg = Annotated[
    str | None, typer.Argument(help="FLOW_TYPE.TRIGGER (default: every slot)", show_default=False)
]


def _slot(slot: str | None) -> dict[str, Any]:
    if slot is None:
        return {}
    flow_type, _, trigger = slot.partition(".")
    if not trigger:
        err.print("[red]error:[/red] the slot is FLOW_TYPE.TRIGGER")
        raise typer.Exit(2)
    return {"flow_type": flow_type, "trigger": trigger}


def _rate(role: dict[str, Any]) -> str:
    rate = role.get("failure_rate")
    return f"{role['runs']} runs, {rate:.1%} failed" if rate is not None else "0 runs"


@rollout_app.command("status")
def rollout_status(tenant: TenantOpt, slot: SlotArg = None, as_json: JsonOpt = False) -> None:
    """Each rollout: state, share, runs and failure rates of both versions, shadow runs and
    the share that differed, by kind of difference."""
    rows = run(with_admin(lambda c: c.call(tenant, "rollouts.status", **_slot(slot))))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no rollouts")
        return
    table = Table("slot", "action", "stable", "canary", "state", "stable runs", "canary runs")
    table.add_column("shadow")
    for r in rows:
        shadow = r["shadow_runs"]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(shadow["by_kind"].items()))
        shown = (
            f"{r['shadow']}: {shadow['runs']} runs, {shadow['differed_share'] or 0:.0%} differed"
            + (f" ({kinds})" if kinds else "")
            if r["shadow"]
            else ""
        )
        table.add_row(
            r["slot"],
            r["action"],
            r["stable"],
            f"{r['canary']} @ {r['percent']}%" if r["canary"] else "",
            r["state"],
            _rate(r["runs"]["stable"]),
            _rate(r["runs"]["canary"]) if r["canary"] else "",
            shown,
        )
    out.print(table)


def _end(tenant: str, slot: str, action: str, op: str) -> None:
    flow = run(with_admin(lambda c: c.call(tenant, op, action=action, **_slot(slot))))["flow"]
    out.print(f"{action}: {op.split('.')[1]}d; flow revision {flow['revision']}")


@rollout_app.command("promote")
def rollout_promote(
    tenant: TenantOpt,
    slot: Annotated[str, typer.Argument(help="FLOW_TYPE.TRIGGER")],
    action: Annotated[str, typer.Option(help="the slot entry's action")],
) -> None:
    """Make the canary the stable version (a new flow revision, audited)."""
    _end(tenant, slot, action, "rollouts.promote")


@rollout_app.command("abort")
def rollout_abort(
    tenant: TenantOpt,
    slot: Annotated[str, typer.Argument(help="FLOW_TYPE.TRIGGER")],
    action: Annotated[str, typer.Option(help="the slot entry's action")],
) -> None:
    """Stop the canary and the shadow: the stable version alone runs (audited)."""
    _end(tenant, slot, action, "rollouts.abort")


@actions_app.command("disable")
def actions_disable(
    tenant: TenantOpt,
    name: str,
    reason: Annotated[str, typer.Option(help="why (audited)")] = "",
    fallback: Annotated[str, typer.Option(help="what the slot says instead: continue or block")] = (
        "continue"
    ),
) -> None:
    """The kill switch: the action stops running on every worker within a second; where it
    is attached the fallback decides (outcome ``disabled``)."""
    run(
        with_admin(
            lambda c: c.call(tenant, "actions.disable", name=name, reason=reason, fallback=fallback)
        )
    )
    out.print(f"{name} disabled (fallback: {fallback})")


@actions_app.command("enable")
def actions_enable(
    tenant: TenantOpt,
    name: str,
    reason: Annotated[str, typer.Option(help="why (audited)")] = "",
) -> None:
    """Release the kill switch."""
    run(with_admin(lambda c: c.call(tenant, "actions.enable", name=name, reason=reason)))
    out.print(f"{name} enabled")


@app.command("record")
def record(
    tenant: TenantOpt,
    slot: Annotated[str, typer.Option(help="FLOW_TYPE.TRIGGER")],
    redact: Annotated[
        list[str] | None, typer.Option(help="a dotted path blanked before storing (repeatable)")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="stop recording the slot")] = False,
) -> None:
    """Record a slot's trigger inputs (with their decisions) for ``gatehook replay``."""
    where = _slot(slot)
    result = run(
        with_admin(
            lambda c: c.call(
                tenant, "recordings.set", enabled=not off, redact=redact or [], **where
            )
        )
    )
    if off:
        out.print(f"{slot}: not recorded")
    else:
        shown = ", ".join(result["redact"]) or "nothing"
        out.print(f"{slot}: recorded (redacted: {shown})")


@app.command("replay")
def replay(
    tenant: TenantOpt,
    slot: Annotated[str, typer.Option(help="FLOW_TYPE.TRIGGER")],
    with_: Annotated[str, typer.Option("--with", help="NAME@VERSION to replay against")],
    since: Annotated[str, typer.Option(help="how far back, e.g. 30m, 1h, 2d")] = "1h",
    limit: Annotated[int, typer.Option(help="at most this many records")] = 10_000,
    as_json: JsonOpt = False,
) -> None:
    """Decide the recorded requests again with NAME at VERSION (templates dry-run, no audit,
    no side effects) and print how many decisions would change, by kind, with examples."""
    seconds = _duration(since).total_seconds()
    report = run(
        with_admin(
            lambda c: c.call(
                tenant,
                "replay",
                since_s=seconds,
                limit=limit,
                **{"with": with_},
                **_slot(slot),
            ),
            timeout=600,
        )
    )
    if as_json:
        print_json(report)
        return
    out.print(
        f"{report['replayed']} recorded requests replayed against {report['with']}: "
        f"{report['changed']} would change"
        + (f", {report['errors']} unreadable" if report["errors"] else "")
    )
    for kind, n in sorted(report["by_kind"].items()):
        out.print(f"  {kind}: {n}")
    for change, n in sorted(report["transitions"].items()):
        out.print(f"  {change}: {n}")
    for ex in report["examples"]:
        out.print(f"  e.g. {ex['request_id']}: {ex['recorded']} -> {ex['replayed']}", markup=False)
