"""``gatehook secrets new-key|rotate|status``: the key that seals tenants' secrets at rest.

These talk to MongoDB directly (GATEHOOK_MONGODB_*), as a maintenance job of the operator
who holds the keys; workers need no restart to read values sealed again under a key they
already have.
"""

from __future__ import annotations

from typing import Any

import typer

from gatehook.cli.common import app, load_settings, print_json, run
from gatehook.security.connections import mongo_options
from gatehook.security.sealing import new_key, sealer_from
from gatehook.storage import MongoStore
from gatehook.templates import default_registry

secrets_app = typer.Typer(no_args_is_help=True, help="Seal tenants' secrets at rest.")
app.add_typer(secrets_app, name="secrets")


def _store() -> MongoStore:
    settings = load_settings()
    return MongoStore.connect(
        settings.mongodb_url,
        settings.mongodb_database,
        timeout_ms=settings.mongodb_timeout_ms,
        sealer=sealer_from(settings.secrets),
        secret_fields=default_registry().secret_fields(),
        client_options=mongo_options(settings),
    )


@secrets_app.command("new-key")
def new_key_cmd() -> None:
    """Print a fresh random key for GATEHOOK_SECRETS__KEY (32 bytes, base64)."""
    typer.echo(new_key())


@secrets_app.command("rotate")
def rotate() -> None:
    """Seal every stored secret again under GATEHOOK_SECRETS__KEY.

    Give the earlier key in GATEHOOK_SECRETS__OLD_KEYS (to workers too) while this runs;
    secrets stored in clear before a key was set are sealed as well. Idempotent.
    """

    async def go() -> dict[str, Any]:
        store = _store()
        try:
            await store.check_sealed()
            return await store.reseal()
        finally:
            await store.aclose()

    print_json(run(go()))


@secrets_app.command("status")
def status() -> None:
    """The key ids the stored secrets are sealed with, and whether the keys given open them."""

    async def go() -> dict[str, Any]:
        store = _store()
        try:
            return {"sealed_with": await store.check_sealed(), "ok": True}
        finally:
            await store.aclose()

    print_json(run(go()))
