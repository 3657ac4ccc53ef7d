"""``gatehook``: the command line. Arguments -> settings -> app; no logic of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import nats
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from gatehook.admin.apply import load_file
from gatehook.admin.client import AdminClient
from gatehook.domain.contract import ActionOutput, TriggerRequest
from gatehook.errors import GatehookError
from gatehook.settings import Settings

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    no_args_is_help=True, help="gatehook: Actions at the trigger points of sign-in flows."
)
actions_app = typer.Typer(no_args_is_help=True, help="Actions of a tenant.")
templates_app = typer.Typer(no_args_is_help=True, help="Platform templates.")
flows_app = typer.Typer(no_args_is_help=True, help="Flows of a tenant.")
app.add_typer(actions_app, name="actions")
app.add_typer(templates_app, name="templates")
app.add_typer(flows_app, name="flows")
audit_app = typer.Typer(no_args_is_help=True, help="Read the audit stream.")
app.add_typer(audit_app, name="audit")

out = Console()
err = Console(stderr=True)

TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant slug")]
FlowOpt = Annotated[str, typer.Option("--flow", "-f", help="flow type")]
TriggerOpt = Annotated[str, typer.Option("--trigger", help="trigger")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def _settings() -> Settings:
    return Settings()


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except GatehookError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None


async def _with_admin(fn: Callable[[AdminClient], Awaitable[T]]) -> T:
    settings = _settings()
    try:
        nc = await nats.connect(settings.nats_url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as exc:
        raise GatehookError(f"cannot connect to NATS at {settings.nats_url}: {exc}") from None
    try:
        return await fn(AdminClient(nc, actor=os.environ.get("USER", "cli")))
    finally:
        await nc.drain()


def _print(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


# -- worker ------------------------------------------------------------------------------------
@app.command()
def worker(
    log_level: Annotated[str, typer.Option(help="logging level")] = "INFO",
    processes: Annotated[
        str,
        typer.Option(help="worker processes on this machine: a number, or 'auto' (one per CPU)"),
    ] = "1",
    event_loop: Annotated[
        str, typer.Option(help="uvloop (when installed) or asyncio's default loop")
    ] = "uvloop",
) -> None:
    """Run a worker: trigger requests, the management API, audit publishing."""
    from gatehook.process import Supervisor, resolve_processes, run_worker
    from gatehook.process.supervisor import worker_command

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        n = resolve_processes(processes)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if event_loop not in ("uvloop", "asyncio"):
        err.print("[red]error:[/red] --event-loop takes uvloop or asyncio")
        raise typer.Exit(2)
    settings = _settings()
    if n > 1:
        supervisor = Supervisor(
            n,
            [*worker_command(log_level), "--event-loop", event_loop],
            env=os.environ,
            name=settings.worker_name,
            metrics_port=settings.metrics.port,
        )
        raise typer.Exit(asyncio.run(supervisor.run()))
    from gatehook.app import create_app

    run_worker(
        create_app(settings).run(),
        use_uvloop=event_loop == "uvloop",
        gc_tuning=settings.gc_tuning,
    )


# -- trigger -----------------------------------------------------------------------------------
@app.command("trigger")
def trigger_cmd(
    tenant: Annotated[str, typer.Argument()],
    flow_type: Annotated[str, typer.Argument()],
    trigger: Annotated[str, typer.Argument()],
    file: Annotated[
        Path | None, typer.Option("--file", help="request JSON (default: a sample)")
    ] = None,
) -> None:
    """Send one trigger request as a login service would and print the reply."""
    body = json.loads(file.read_text()) if file else _sample_request("ann@acme.com")

    async def go() -> Any:
        nc = await nats.connect(_settings().nats_url, connect_timeout=2)
        try:
            msg = await nc.request(
                f"gatehook.v1.trigger.{tenant}.{flow_type}.{trigger}", json.dumps(body).encode(), 5
            )
            return json.loads(msg.data)
        finally:
            await nc.drain()

    _print(_run(go()))


def _sample_request(email: str, signin_id: str | None = None) -> dict[str, Any]:
    return {
        "request_id": uuid.uuid4().hex,
        "signin_id": signin_id,
        "user": {
            "id": "u-" + email.split("@")[0],
            "username": email.split("@")[0],
            "email": email,
            "email_verified": True,
            "groups": ["staff"],
        },
        "request": {"ip": "203.0.113.7", "user_agent": "gatehook-cli", "risk_score": 0.2},
        "context": {"providerInfo": {"name": "okta"}},
    }


# -- actions -----------------------------------------------------------------------------------
@actions_app.command("list")
def actions_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Actions with kind, compatible triggers, latest version and attached count."""
    rows = _run(_with_admin(lambda c: c.call(tenant, "actions.list")))
    if as_json:
        _print(rows)
        return
    table = Table("name", "kind", "template", "latest", "attached", "triggers")
    for r in rows:
        table.add_row(
            r["name"],
            r["kind"],
            r["template"] or "",
            r["latest_version"] or "",
            str(r["attached"]),
            ", ".join(r["triggers"]),
        )
    out.print(table)


@actions_app.command("show")
def actions_show(tenant: TenantOpt, name: str) -> None:
    """One action with its versions."""
    _print(_run(_with_admin(lambda c: c.call(tenant, "actions.show", name=name))))


@actions_app.command("create")
def actions_create(
    tenant: TenantOpt,
    name: str,
    template: Annotated[str | None, typer.Option(help="base it on a platform template")] = None,
    trigger: Annotated[list[str] | None, typer.Option(help="compatible triggers")] = None,
) -> None:
    """Create a custom action or one from a template."""
    _print(
        _run(
            _with_admin(
                lambda c: c.call(
                    tenant, "actions.create", name=name, template=template, triggers=trigger
                )
            )
        )
    )


@actions_app.command("publish")
def actions_publish(
    tenant: TenantOpt,
    name: str,
    file: Annotated[Path | None, typer.Option(help="script (custom actions)")] = None,
    config: Annotated[Path | None, typer.Option(help="config JSON (template actions)")] = None,
    timeout_ms: Annotated[int | None, typer.Option()] = None,
    allowed_to_fail: Annotated[bool, typer.Option()] = False,
    allowed_host: Annotated[
        list[str] | None, typer.Option(help="hosts zitadel/http may call")
    ] = None,
    minor: Annotated[bool, typer.Option("--minor")] = False,
    major: Annotated[bool, typer.Option("--major")] = False,
    version: Annotated[str | None, typer.Option(help="an explicit version")] = None,
) -> None:
    """Publish a new version (patch bump by default; unchanged content publishes nothing)."""
    body: dict[str, Any] = {
        "name": name,
        "timeout_ms": timeout_ms,
        "allowed_to_fail": allowed_to_fail,
        "allowed_hosts": allowed_host or [],
        "bump": "major" if major else "minor" if minor else "patch",
        "version": version,
    }
    if file is not None:
        body["source"] = file.read_text()
        body["language"] = "ts" if file.suffix in (".ts", ".mts") else "js"
    if config is not None:
        body["config"] = json.loads(config.read_text())
    result = _run(_with_admin(lambda c: c.call(tenant, "actions.publish", **body)))
    v = result["version"]
    verb = "published" if result["created"] else "unchanged, still"
    out.print(f"{name} {verb} {v['version']}")


@actions_app.command("test")
def actions_test(
    file: Annotated[Path, typer.Argument(help="the action's script (.js or .ts)")],
    input_file: Annotated[Path | None, typer.Option("--input", help="trigger request JSON")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="config JSON")] = None,
    style: Annotated[str, typer.Option(help="auto, module or zitadel")] = "auto",
    name: Annotated[str | None, typer.Option(help="action name (default: file stem)")] = None,
    timeout_ms: Annotated[int, typer.Option()] = 1000,
    allowed_host: Annotated[list[str] | None, typer.Option()] = None,
    flow_type: Annotated[str, typer.Option()] = "external_authentication",
    trigger: Annotated[str, typer.Option()] = "post_authentication",
) -> None:
    """Run one action locally through the sandbox pool; print decision, mutations, logs, timing."""
    from gatehook.sandbox import SandboxPool, ScriptJob

    source = file.read_text()
    # A ZITADEL-style script is named after its function; find it when no name is given.
    found = re.search(r"^\s*function\s+([A-Za-z_$][\w$]*)\s*\(\s*ctx\b", source, re.MULTILINE)
    action = name or (found[1] if found else file.stem.replace(".", "_"))
    language = "ts" if file.suffix in (".ts", ".mts") else "js"
    try:
        raw = json.loads(input_file.read_text()) if input_file else _sample_request("ann@acme.com")
        req = TriggerRequest.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        err.print(f"[red]error:[/red] the input is not a trigger request: {exc}")
        raise typer.Exit(2) from None
    config = json.loads(config_file.read_text()) if config_file else {}
    inp = req.action_input("local", flow_type, trigger, config)
    settings = _settings()

    async def go() -> None:
        async with SandboxPool(settings.sandbox, size=1) as pool:
            t0 = time.perf_counter()
            compiled = await pool.compile(
                file.read_text(), language=language, name=action, style=style
            )
            compile_ms = (time.perf_counter() - t0) * 1000
            job = ScriptJob(
                "local",
                action,
                "0.0.0",
                compiled.code,
                compiled.style.value,
                inp.model_dump_json().encode(),
                timeout_ms,
                tuple(allowed_host or ()),
            )
            t1 = time.perf_counter()
            try:
                run = await pool.run(job)
            except GatehookError as exc:
                for line in getattr(exc, "logs", []):
                    out.print(f"[dim]log[/dim] {line}")
                raise
            wall_ms = (time.perf_counter() - t1) * 1000
            output = ActionOutput.model_validate_json(run.output)
            out.print(
                f"style: {compiled.style.value}   compile: {compile_ms:.0f} ms   "
                f"run: {run.duration_ms:.2f} ms in the sandbox, {wall_ms:.2f} ms wall"
            )
            for line in run.logs:
                out.print(f"[dim]log[/dim] {line}")
            _print(output.model_dump(mode="json", exclude_defaults=True) | {"kind": output.kind})

    try:
        asyncio.run(go())
    except (GatehookError, ValidationError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


# -- templates ---------------------------------------------------------------------------------
@templates_app.command("list")
def templates_list() -> None:
    """The platform templates."""
    from gatehook.templates import default_registry

    table = Table("name", "triggers", "description")
    for t in default_registry():
        table.add_row(t.name, ", ".join(x.value for x in t.triggers), t.description)
    out.print(table)


@templates_app.command("show")
def templates_show(name: str) -> None:
    """A template's configuration form (JSON Schema); secret fields are marked writeOnly."""
    from gatehook.templates import default_registry

    t = default_registry().get(name)
    if t is None:
        err.print(f"[red]error:[/red] no template {name}")
        raise typer.Exit(2)
    out.print(f"[bold]{t.name}[/bold]: {t.description}")
    out.print(f"triggers: {', '.join(x.value for x in t.triggers)}")
    if t.secret_fields:
        out.print(f"secret fields: {', '.join(t.secret_fields)}")
    _print(t.config_schema())


# -- flows -------------------------------------------------------------------------------------
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
    _slot_table(_run(_with_admin(lambda c: c.call(tenant, "flows.show", flow_type=flow))))


@flows_app.command("history")
def flows_history(tenant: TenantOpt, flow: FlowOpt, limit: int = 20) -> None:
    """Revisions of a flow, newest first."""
    revs = _run(_with_admin(lambda c: c.call(tenant, "flows.history", flow_type=flow, limit=limit)))
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
    r = _run(
        _with_admin(
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
    r = _run(
        _with_admin(
            lambda c: c.call(tenant, "flows.detach", flow_type=flow, trigger=trigger, action=action)
        )
    )
    _slot_table(r["flow"])


@flows_app.command("pin")
def flows_pin(
    tenant: TenantOpt, flow: FlowOpt, trigger: TriggerOpt, action: str, version: str
) -> None:
    """Pin an attached action to another version (a new flow revision)."""
    r = _run(
        _with_admin(
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
    r = _run(
        _with_admin(
            lambda c: c.call(tenant, "flows.reorder", flow_type=flow, trigger=trigger, order=order)
        )
    )
    _slot_table(r["flow"])


@flows_app.command("rollback")
def flows_rollback(tenant: TenantOpt, flow: FlowOpt, revision: int) -> None:
    """Make an earlier revision current again (as a new revision)."""
    r = _run(
        _with_admin(lambda c: c.call(tenant, "flows.rollback", flow_type=flow, revision=revision))
    )
    _slot_table(r["flow"])


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

    async def go() -> None:
        nc = await nats.connect(_settings().nats_url, connect_timeout=2)
        try:
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
        finally:
            await nc.drain()

    _run(go())


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

    async def go() -> None:
        nc = await nats.connect(_settings().nats_url, connect_timeout=2)
        try:
            events = [
                e
                async for e in read_events(
                    nc.jetstream(), tenant=tenant, since=moment - span, until=moment + span
                )
            ]
        finally:
            await nc.drain()
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

    _run(go())


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
        err.print(f"[red]error:[/red] {exc.message}")
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

    for plan in _run(_with_admin(go)):
        head = "plan" if dry_run else "applied"
        if not plan["changes"]:
            out.print(f"[green]{plan['tenant']}[/green]: up to date")
            continue
        out.print(f"[bold]{plan['tenant']}[/bold] ({head}):")
        for line in plan["changes"]:
            out.print(f"  - {line}", markup=False)


# -- console -----------------------------------------------------------------------------------
@app.command()
def console(
    host: Annotated[
        str | None, typer.Option(help="address (default GATEHOOK_CONSOLE__HOST)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default GATEHOOK_CONSOLE__PORT)")] = None,
) -> None:
    """Serve the web console (actions, flows, audit) over the management API."""
    from gatehook.console.server import ConsoleRefused, serve_console

    settings = _settings()
    try:
        asyncio.run(serve_console(settings, host=host, port=port, say=out.print))
    except ConsoleRefused as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


# -- dev ---------------------------------------------------------------------------------------
@app.command()
def dev(
    once: Annotated[bool, typer.Option("--once", help="show the decisions, then stop")] = False,
    file: Annotated[Path, typer.Option("--file", "-f")] = Path("examples/acme/tenant.yaml"),
) -> None:
    """Local run: servers, a worker, the sample tenant, and real decisions."""
    from gatehook.devrun import run_dev

    code = asyncio.run(run_dev(_settings(), file, once=once, console=out))
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``gatehook`` command."""
    app()


if __name__ == "__main__":
    main()
