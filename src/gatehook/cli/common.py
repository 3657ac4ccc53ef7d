"""What the command groups share: the root app, output, options, and the admin client."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from gatehook.admin.client import AdminClient
from gatehook.errors import GatehookError
from gatehook.security.connections import connect_nats
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
    "run",
    "sample_request",
    "with_admin",
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
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except GatehookError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None


async def with_admin(fn: Callable[[AdminClient], Awaitable[T]], timeout: float = 60.0) -> T:
    s = load_settings()
    try:
        nc = await connect_nats(s, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as exc:
        raise GatehookError(f"cannot connect to NATS at {s.nats_url}: {exc}") from None
    try:
        client = AdminClient(
            nc, actor=os.environ.get("USER", "cli"), timeout=timeout, principal=s.nats_principal
        )
        return await fn(client)
    finally:
        await nc.drain()


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
