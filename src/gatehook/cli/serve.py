"""``gatehook worker|trigger|console|http|dev``: running things."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from nats.aio.client import Client as NATS

from gatehook.cli.common import (
    app,
    err,
    load_settings,
    out,
    print_json,
    read_json,
    run,
    sample_request,
    with_nats,
)
from gatehook.domain import subjects
from gatehook.errors import ConfigError
from gatehook.security.connections import connect_nats


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
    settings = load_settings()
    if n > 1:
        supervisor = Supervisor(
            n,
            [*worker_command(log_level), "--event-loop", event_loop],
            env=os.environ,
            name=settings.worker_name,
            metrics_port=settings.metrics.port,
            drain_s=settings.drain_timeout_s + 5,  # the workers' own drain, then a margin
        )
        raise typer.Exit(asyncio.run(supervisor.run()))
    from gatehook.app import create_app

    try:
        run_worker(
            create_app(settings).run(),
            use_uvloop=event_loop == "uvloop",
            gc_tuning=settings.gc_tuning,
        )
    except ConfigError as exc:  # said in one line, not a traceback: the operator must act
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None


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
    """Send one trigger request as a login service would and print the reply; exit code 1
    when the reply is an error (bad_request, unavailable, internal)."""
    body = read_json(file, "request") if file else sample_request("ann@acme.com")
    subject = subjects.trigger(tenant, flow_type, trigger)

    async def go(nc: NATS) -> Any:
        msg = await nc.request(subject, json.dumps(body).encode(), 5)
        return json.loads(msg.data)

    reply = run(with_nats(go))
    print_json(reply)
    if isinstance(reply, dict) and reply.get("error") is not None:
        raise typer.Exit(1)


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

    settings = load_settings()
    try:
        say = functools.partial(out.print, soft_wrap=True)  # one line each, however long
        asyncio.run(serve_console(settings, host=host, port=port, say=say))
    except ConsoleRefused as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


# -- http --------------------------------------------------------------------------------------
@app.command("http")
def http_cmd(
    host: Annotated[
        str | None, typer.Option(help="address (default GATEHOOK_GATEWAY__HOST)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default GATEHOOK_GATEWAY__PORT)")] = None,
    log_level: Annotated[str, typer.Option(help="logging level")] = "INFO",
) -> None:
    """Serve the HTTP front identity providers call: ZITADEL, Ory Kratos, Okta."""
    import signal

    from gatehook.logs import configure as configure_logging
    from gatehook.transport.gateway import serve_gateway

    settings = load_settings()
    configure_logging(settings.log_format, log_level)

    async def go() -> None:
        nc = await connect_nats(settings, name="gatehook-http", max_reconnect_attempts=-1)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve_gateway(
                settings.gateway,
                nc,
                host=host,
                port=port,
                stop=stop,
                started=lambda where: out.print(f"gatehook http: serving on {where}"),
                admission=settings.admission,
            )
        finally:
            await nc.drain()

    _run_loop(go())


def _run_loop(main: Any) -> None:
    """``main`` on uvloop when installed (cheaper sockets), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


# -- dev ---------------------------------------------------------------------------------------
@app.command()
def dev(
    once: Annotated[bool, typer.Option("--once", help="show the decisions, then stop")] = False,
    file: Annotated[Path, typer.Option("--file", "-f")] = Path("examples/acme/tenant.yaml"),
) -> None:
    """Local run: servers, a worker, the sample tenant, and real decisions."""
    from gatehook.devrun import run_dev

    code = asyncio.run(run_dev(load_settings(), file, once=once, console=out))
    raise typer.Exit(code)
