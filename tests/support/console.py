"""The console app served for a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from playwright.async_api import Dialog

from gatehook.console.app import build_app
from gatehook.devservers import free_port
from gatehook.settings import Settings

__all__ = ["TOKEN", "accept_dialogs", "running_console"]

TOKEN = "operator-token-for-tests-0123456789"


@contextlib.asynccontextmanager
async def running_console(settings: Settings, port: int | None = None) -> AsyncIterator[str]:
    """The console app served by uvicorn on ``port`` (default: a free loopback port)."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(settings, TOKEN), host="127.0.0.1", port=port, log_level="warning")
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "the console did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def accept_dialogs(dialog: Dialog) -> None:
    """Answer a page's confirm() with OK, as a user who means what they clicked (Playwright
    dismisses dialogs no listener answers); a test of the dialog removes this listener."""
    await dialog.accept()
