"""``gatehook import auth0 DIR``: another platform's actions as a flows file to apply."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gatehook.admin.auth0_import import import_auth0, read_export
from gatehook.cli.common import app, err, out
from gatehook.errors import GatehookError

import_app = typer.Typer(no_args_is_help=True, help="Import actions from another platform.")
app.add_typer(import_app, name="import")


@import_app.command("auth0")
def import_auth0_cmd(
    export: Annotated[Path, typer.Argument(help="an Auth0 Deploy CLI export (directory format)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the flows file (default: stdout)")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
) -> None:
    """Write a flows file of the export's actions, secrets (to fill in) and trigger bindings;
    what does not carry over is listed in its header comments."""
    try:
        actions, bindings = read_export(export)
        imported = import_auth0(actions, bindings, tenant)
    except GatehookError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    text = imported.yaml(str(export))
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text)
    out.print(f"wrote {output}: {len(imported.file['actions'])} actions", markup=False)
    for note in imported.notes:
        err.print(f"note: {note}", markup=False)
