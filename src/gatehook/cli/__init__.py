"""``gatehook``: the command line. Arguments -> settings -> app; no logic of its own.

One module per command group: ``serve`` (worker, trigger, console, dev), ``actions``
(actions, templates, targets), ``flows`` (flows, apply), ``rollouts`` (rollout status,
promote, abort; the kill switch), ``audit``, ``secrets`` (the key sealing tenants' secrets),
``imports`` (``gatehook import auth0``).
"""

from __future__ import annotations

from gatehook.cli import actions, audit, flows, imports, rollouts, secrets, serve
from gatehook.cli.common import app

__all__ = ["app", "main"]

del (
    actions,
    audit,
    flows,
    imports,
    rollouts,
    secrets,
    serve,
)  # imported for the commands they register


def main() -> None:
    """Entry point of the ``gatehook`` command."""
    app()
