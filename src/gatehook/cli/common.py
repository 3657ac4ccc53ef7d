"""What the command groups share: the root app, output, options, and the admin client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import nats.errors
import nats.js.errors
import typer
from nats.aio.client import Client as NATS
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from gatehook.admin.client import AdminClient
from gatehook.errors import GatehookError
from gatehook.security.connections import Refusals, connect_nats, redact_url
from gatehook.settings import Settings

__all__ = [
    "FlowOpt",
    "JsonOpt",
    "TenantOpt",
    "TriggerOpt",
    "app",
    "err",
    "load_settings",
    "out",
    "print_json",
    "read_json",
    "run",
    "sample_request",
    "with_admin",
    "with_nats",
]

T = TypeVar("T")

app = typer.Typer(
    no_args_is_help=True, help="gatehook: Actions at the trigger points of sign-in flows."
)
out = Console()
err = Console(stderr=True)

TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant slug")]
FlowOpt = Annotated[str, typer.Option("--flow", "-f", help="flow type")]
TriggerOpt = Annotated[str, typer.Option("--trigger", help="trigger")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def load_settings() -> Settings:
    """The settings from the environment; a bad value ends the command with its variable's
    name and what is wrong (exit code 2)."""
    try:
        return Settings()
    except ValidationError as exc:
        for problem in exc.errors():
            name = "GATEHOOK_" + "__".join(str(part).upper() for part in problem["loc"])
            given = problem.get("input")
            secret = any(word in name for word in ("PASSWORD", "TOKEN", "KEY", "SECRET"))
            shown = "" if secret or isinstance(given, dict) else f" (got {given!r})"
            err.print(f"[red]error:[/red] {name}: {problem['msg']}{shown}", highlight=False)
        raise typer.Exit(2) from None


def run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; what goes wrong ends it with one line on stderr (exit 2),
    never a traceback."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except GatehookError as exc:
        message = exc.message
    except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as exc:
        message = str(exc) or type(exc).__name__
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


async def with_nats(fn: Callable[[NATS], Awaitable[T]]) -> T:
    """``fn`` on a NATS connection made from the settings; a call the server refuses (a
    permissions violation) ends at once with a one-line ``Forbidden``."""
    s = load_settings()
    refusals = Refusals(s.nats_principal)
    try:
        nc = await connect_nats(
            s, connect_timeout=2, max_reconnect_attempts=0, error_cb=refusals.on_error
        )
    except Exception as exc:
        raise GatehookError(f"cannot connect to NATS at {_shown_url(s)}: {exc}") from None
    try:
        return await refusals.guard(fn(nc))
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()


async def with_admin(fn: Callable[[AdminClient], Awaitable[T]], timeout: float = 60.0) -> T:
    """``fn`` with a management API client (see ``with_nats``)."""
    s = load_settings()

    async def call(nc: NATS) -> T:
        client = AdminClient(
            nc, actor=os.environ.get("USER", "cli"), timeout=timeout, principal=s.nats_principal
        )
        return await fn(client)

    return await with_nats(call)


def _shown_url(settings: Settings) -> str:
    """The first server's URL without its password (an error line is not a place for it)."""
    return redact_url(settings.nats_servers[0]) if settings.nats_servers else "(none)"


def read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``; a file that cannot be read or is not JSON ends the command with
    one line that names it and where it breaks (exit code 2)."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        problem = f"cannot read {what} {path}: {exc.strerror or exc}"
    except UnicodeDecodeError:
        problem = f"{what} {path} is not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = f"{what} {path} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    err.print(f"[red]error:[/red] {escape(problem)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def sample_request(email: str, signin_id: str | None = None) -> dict[str, Any]:
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
