"""The console's script editor: Monaco (pinned in ``console/editor/package.json``, installed by
``scripts/bootstrap`` with ``npm ci``) served by the console itself, with the contract's
TypeScript declarations, so that nothing comes from a CDN and a wrong field is marked while
the tenant types.

The editor is an enhancement of the source text area: ``static/editor.js`` puts Monaco over
it and writes every change back, so the form posts as it does without JavaScript. Without
the assets (a console installed without npm) the text area is all there is, and the console
says so once when it starts. Pages with the editor carry ``EDITOR_CSP``: scripts from the
console only, the editor's workers from ``blob:`` URLs of its own making, and inline styles,
which Monaco writes at run time (it reads no CSP nonce).
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gatehook.domain.typescript import contract_declarations

__all__ = ["EDITOR_CSP", "ScriptEditor"]

log = logging.getLogger("gatehook.console")

# where scripts/bootstrap's npm ci puts Monaco's prebuilt files
BUNDLED = (
    Path(__file__).resolve().parent / "editor" / "node_modules" / "monaco-editor" / "min" / "vs"
)

EDITOR_CSP = (
    "default-src 'none'; script-src 'self'; worker-src blob:; style-src 'self' 'unsafe-inline';"
    " font-src 'self' data:; img-src 'self' data:; connect-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)


class ScriptEditor:
    """Where the editor's assets are, the routes that serve them, and what a page needs."""

    PREFIX = "/editor"

    def __init__(self, assets: Path | None) -> None:
        folder = assets or BUNDLED
        self.assets = folder if (folder / "loader.js").is_file() else None
        self._types = contract_declarations().encode()

    @property
    def enabled(self) -> bool:
        return self.assets is not None

    def announce(self) -> None:
        """Say once, at start, when source fields are plain text areas."""
        if self.assets is None:
            log.warning(
                "console: the script editor is not installed (npm ci in"
                " src/gatehook/console/editor, or GATEHOOK_CONSOLE__EDITOR_ASSETS):"
                " scripts are edited in plain text areas"
            )

    def page_context(self) -> dict[str, str]:
        """What the templates put on a source text area (empty: no editor)."""
        if self.assets is None:
            return {}
        return {"vs": f"{self.PREFIX}/vs", "types": f"{self.PREFIX}/gatehook.d.ts"}

    def routes(self) -> list[BaseRoute]:
        async def types(request: Request) -> Response:
            return Response(self._types, media_type="text/plain; charset=utf-8")

        routes: list[BaseRoute] = [Route(f"{self.PREFIX}/gatehook.d.ts", types)]
        if self.assets is not None:
            routes.append(Mount(f"{self.PREFIX}/vs", StaticFiles(directory=self.assets)))
        return routes
