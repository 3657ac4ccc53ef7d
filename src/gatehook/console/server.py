"""Serving the console: the sign-in token rule, then uvicorn on the configured address."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import Callable
from typing import Any

import uvicorn

from gatehook.console.app import build_app
from gatehook.console.auth import is_loopback
from gatehook.security.connections import redact_url
from gatehook.settings import Settings

__all__ = ["ConsoleRefused", "console_server", "console_token", "serve_console"]


class ConsoleRefused(RuntimeError):
    """The console will not start as configured (an open console on a public address)."""


def console_token(settings: Settings, host: str) -> tuple[str, bool]:
    """The operator token, and whether it was made up for this run.

    Without ``GATEHOOK_CONSOLE__TOKEN`` the console starts only on a loopback address, with a
    random token printed at start (like a notebook server); never open on a public address.
    """
    configured = settings.console.token
    if configured is not None and configured.get_secret_value():
        token = configured.get_secret_value()
        if len(token) < 16:
            raise ConsoleRefused("GATEHOOK_CONSOLE__TOKEN must be at least 16 characters")
        return token, False
    if not is_loopback(host):
        raise ConsoleRefused(
            f"refusing to serve the console on {host} without GATEHOOK_CONSOLE__TOKEN "
            "(set a long random token, and put TLS in front of it)"
        )
    return secrets.token_urlsafe(24), True


def console_server(settings: Settings, token: str, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for the console that leaves signal handling to its caller."""
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(settings, token),
            host=host,
            port=port,
            log_level="warning",
            proxy_headers=False,
        )
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server


async def serve_console(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    say: Callable[..., Any] = print,
) -> None:
    """Run the console until interrupted."""
    host = host or settings.console.host
    port = settings.console.port if port is None else port
    token, generated = console_token(settings, host)
    server = console_server(settings, token, host, port)
    servers = ", ".join(redact_url(u) for u in settings.nats_servers)
    say(f"gatehook console on http://{host}:{port}/ (NATS {servers})")
    if generated:
        say(f"operator token for this run: {token}")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve()
