"""``gatehook actions ...`` and ``gatehook templates ...``."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from gatehook.cli.common import (
    JsonOpt,
    TenantOpt,
    app,
    err,
    load_settings,
    out,
    print_json,
    read_json,
    run,
    sample_request,
    with_admin,
)
from gatehook.domain.contract import ActionOutput, TriggerRequest
from gatehook.domain.problems import problems, summary
from gatehook.errors import GatehookError

actions_app = typer.Typer(no_args_is_help=True, help="Actions of a tenant.")
templates_app = typer.Typer(no_args_is_help=True, help="Platform templates.")
app.add_typer(actions_app, name="actions")
app.add_typer(templates_app, name="templates")


# -- actions -----------------------------------------------------------------------------------
@actions_app.command("list")
def actions_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Actions with kind, compatible triggers, latest version and attached count."""
    rows = run(with_admin(lambda c: c.call(tenant, "actions.list")))
    if as_json:
        print_json(rows)
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
    print_json(run(with_admin(lambda c: c.call(tenant, "actions.show", name=name))))


@actions_app.command("create")
def actions_create(
    tenant: TenantOpt,
    name: str,
    template: Annotated[str | None, typer.Option(help="base it on a platform template")] = None,
    trigger: Annotated[
        list[str] | None,
        typer.Option(help="compatible trigger or slot (flow_type.trigger), repeatable"),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="custom (a script, the default) or target (an endpoint)")
    ] = None,
    display_name: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    config_schema: Annotated[
        Path | None, typer.Option(help="custom actions: their config form, a JSON Schema file")
    ] = None,
) -> None:
    """Create a custom action, a target action (--kind target), or one from a template."""
    body: dict[str, Any] = {
        "name": name,
        "template": template,
        "triggers": trigger,
        "display_name": display_name,
        "description": description,
    }
    if config_schema is not None:
        body["config_schema"] = read_json(config_schema, "config schema")
    if kind is not None:
        body["kind"] = kind
    print_json(run(with_admin(lambda c: c.call(tenant, "actions.create", **body))))


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
    endpoint: Annotated[str | None, typer.Option(help="target actions: the URL to call")] = None,
    target_type: Annotated[
        str, typer.Option("--type", help="target: call, webhook or async")
    ] = "call",
    payload: Annotated[str, typer.Option(help="target: zitadel or gatehook")] = "zitadel",
    signing_key: Annotated[
        str | None, typer.Option(help="target: HMAC key (default: keep, or generate once)")
    ] = None,
    header: Annotated[list[str] | None, typer.Option(help="target: NAME=VALUE")] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(help="custom actions: NAME=VALUE, repeatable ('********' keeps one)"),
    ] = None,
) -> None:
    """Publish a new version (patch bump by default; unchanged content publishes nothing).

    A target action's first version without --signing-key gets a generated key, printed once.
    """
    body: dict[str, Any] = {
        "name": name,
        "timeout_ms": timeout_ms,
        "allowed_to_fail": allowed_to_fail,
        "allowed_hosts": allowed_host or [],
        "bump": "major" if major else "minor" if minor else "patch",
        "version": version,
    }
    if secret:
        named = [s.split("=", 1) for s in secret]
        if any(len(p) != 2 for p in named):
            err.print("[red]error:[/red] --secret takes NAME=VALUE")
            raise typer.Exit(2)
        body["secrets"] = dict(named)
    if file is not None:
        body["source"] = file.read_text()
        body["language"] = "ts" if file.suffix in (".ts", ".mts") else "js"
    if config is not None:
        body["config"] = read_json(config, "config")
    if endpoint is not None:
        pairs = [h.split("=", 1) for h in header or []]
        if any(len(p) != 2 for p in pairs):
            err.print("[red]error:[/red] --header takes NAME=VALUE")
            raise typer.Exit(2)
        body["target"] = {
            "endpoint": endpoint,
            "type": target_type,
            "payload": payload,
            "signing_key": signing_key,
            "headers": dict(pairs),
        }
    result = run(with_admin(lambda c: c.call(tenant, "actions.publish", **body)))
    v = result["version"]
    verb = "published" if result["created"] else "unchanged, still"
    out.print(f"{name} {verb} {v['version']}")
    if result.get("signing_key"):
        out.print(f"signing key (shown once): {result['signing_key']}", markup=False)


@actions_app.command("test")
def actions_test(
    file: Annotated[
        Path | None, typer.Argument(help="a script (.js or .ts) to run locally")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="with --action: a stored version")
    ] = None,
    action_name: Annotated[
        str | None,
        typer.Option("--action", help="run this stored action through a worker (targets too)"),
    ] = None,
    action_version: Annotated[str, typer.Option("--version")] = "latest",
    input_file: Annotated[
        Path | None,
        typer.Option("--input", help="a trigger request (JSON; request_id may be left out)"),
    ] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="config JSON")] = None,
    style: Annotated[str, typer.Option(help="auto, module or zitadel")] = "auto",
    name: Annotated[str | None, typer.Option(help="action name (default: file stem)")] = None,
    timeout_ms: Annotated[int, typer.Option()] = 1000,
    allowed_host: Annotated[list[str] | None, typer.Option()] = None,
    flow_type: Annotated[str, typer.Option()] = "external_authentication",
    trigger: Annotated[str, typer.Option()] = "post_authentication",
) -> None:
    """Run a script locally through the sandbox pool, or (-t T --action NAME) a stored version
    through a worker, as its slot would (a target is called for real); print the decision,
    mutations, logs and timing. No audit event, no sign-in decided."""
    from gatehook.sandbox import SandboxPool, ScriptJob

    if action_name is not None or file is None:
        if action_name is None or tenant is None:
            err.print("[red]error:[/red] give a script FILE, or -t TENANT --action NAME")
            raise typer.Exit(2)
        raw = read_json(input_file, "input") if input_file else sample_request("ann@acme.com")
        result = run(
            with_admin(
                lambda c: c.call(
                    tenant,
                    "actions.test",
                    name=action_name,
                    version=action_version,
                    flow_type=flow_type,
                    trigger=trigger,
                    request=raw,
                )
            )
        )
        print_json(result)
        raise typer.Exit(0 if result.get("error") is None else 1)
    source = file.read_text()
    # A ZITADEL-style script is named after its function; find it when no name is given.
    found = re.search(r"^\s*function\s+([A-Za-z_$][\w$]*)\s*\(\s*ctx\b", source, re.MULTILINE)
    action = name or (found[1] if found else file.stem.replace(".", "_"))
    language = "ts" if file.suffix in (".ts", ".mts") else "js"
    try:
        raw = read_json(input_file, "input") if input_file else sample_request("ann@acme.com")
        if isinstance(raw, dict):  # a request of the reader's own: its id is no test's point
            raw.setdefault("request_id", "local-test")
        req = TriggerRequest.model_validate(raw)
    except ValidationError as exc:
        said = summary(problems(exc, TriggerRequest, raw))
        err.print(f"[red]error:[/red] {escape(f'{input_file} is not a trigger request: {said}')}")
        raise typer.Exit(2) from None
    except ValueError as exc:
        err.print(f"[red]error:[/red] {escape(f'{input_file}: {exc}')}")
        raise typer.Exit(2) from None
    config = read_json(config_file, "config") if config_file else {}
    inp = req.action_input("local", flow_type, trigger, config)
    settings = load_settings()

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
            print_json(
                output.model_dump(mode="json", exclude_defaults=True) | {"kind": output.kind}
            )

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
    print_json(t.config_schema())
