"""Tenants' secrets sealed at rest (AES-256-GCM): nothing in clear in MongoDB's documents,
a worker that refuses to start without the key, rotation by `gatehook secrets rotate`, and
sealed values bound to where they are stored. The target tests (test_targets.py) run with
sealed signing keys too: their endpoint checks every signature."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from bson import json_util
from nats.aio.client import Client as NATS
from pymongo import MongoClient

from gatehook.admin.service import AdminService, Draft
from gatehook.audit.stream import AuditPublisher
from gatehook.errors import ConfigError
from gatehook.runtime import build_broker
from gatehook.security.sealing import SealingError, key_id, new_key, parse_key, sealer_from
from gatehook.settings import SecretsSettings, Settings
from gatehook.storage import MongoStore
from gatehook.templates import default_registry
from tests.support.workers import TEST_SECRETS_KEY

WEBHOOK_SECRET = "whsec_c2VjcmV0LW9mLXRoZS10ZW5hbnQ="
SLACK_URL = "https://hooks.slack.com/services/T000/B000/secret-slack-path"
SIGNING_KEY = "target-signing-key-of-the-tenant"
SCRIPT_SECRET = "sk_live_custom-action-secret"
SECRETS = (WEBHOOK_SECRET, SLACK_URL, "secret-slack-path", SIGNING_KEY, SCRIPT_SECRET)


async def _publish_secrets(admin: AdminService, tenant: str) -> None:
    await admin.create_action(tenant, "hook", template="webhook-emit")
    await admin.publish(
        tenant,
        "hook",
        Draft(config={"url": "https://example.com/in", "secret": WEBHOOK_SECRET}),
        actor="test",
    )
    await admin.create_action(tenant, "slack", template="slack-notify")
    await admin.publish(tenant, "slack", Draft(config={"webhook_url": SLACK_URL}), actor="test")
    await admin.create_action(tenant, "target", kind="target")
    await admin.publish(
        tenant,
        "target",
        Draft(target={"endpoint": "https://example.com/t", "signing_key": SIGNING_KEY}),
        actor="test",
    )
    await admin.create_action(tenant, "script")
    source = "exports.onExecutePostLogin = async (event, api) => {};"
    draft = Draft(source=source, language="js", secrets={"API_KEY": SCRIPT_SECRET})
    await admin.publish(tenant, "script", draft, actor="test")


def _raw(settings: Settings) -> str:
    """Every document of the test's database, as MongoDB holds it."""
    with MongoClient(settings.mongodb_url) as client:
        db = client[settings.mongodb_database]
        docs = {name: list(db[name].find()) for name in db.list_collection_names()}
    return json_util.dumps(docs)


def _store(settings: Settings, secrets: SecretsSettings | None) -> MongoStore:
    return MongoStore.connect(
        settings.mongodb_url,
        settings.mongodb_database,
        timeout_ms=5000,
        sealer=sealer_from(secrets) if secrets else None,
        secret_fields=default_registry().secret_fields(),
    )


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    clean.update(
        GATEHOOK_MONGODB_URL=settings.mongodb_url,
        GATEHOOK_MONGODB_DATABASE=settings.mongodb_database,
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "gatehook", *args],
        capture_output=True,
        text=True,
        env=clean,
        check=False,
        timeout=120,
    )


async def test_no_secret_is_stored_in_clear(
    admin: AdminService, store: MongoStore, settings: Settings, tenant: str
) -> None:
    await _publish_secrets(admin, tenant)
    raw = _raw(settings)
    for secret in SECRETS:
        assert secret not in raw
    assert raw.count('"sealed": "aes-256-gcm"') == 4
    assert key_id(parse_key(TEST_SECRETS_KEY)) in raw
    hook = await store.get_version(tenant, "hook", "1.0.0")
    target = await store.get_version(tenant, "target", "1.0.0")
    assert hook is not None
    assert hook.config["secret"] == WEBHOOK_SECRET
    assert target is not None
    assert target.target is not None
    assert target.target.signing_key == SIGNING_KEY
    script = await store.get_version(tenant, "script", "1.0.0")
    assert script is not None
    assert script.secrets == {"API_KEY": SCRIPT_SECRET}


async def test_a_worker_refuses_to_start_without_the_key(
    admin: AdminService, settings: Settings, tenant: str
) -> None:
    await _publish_secrets(admin, tenant)
    for secrets, says in (
        (SecretsSettings(), "no key is given: set GATEHOOK_SECRETS__KEY"),
        (SecretsSettings(key=new_key()), "GATEHOOK_SECRETS__OLD_KEYS"),
    ):
        broker, runtime = build_broker(settings.model_copy(update={"secrets": secrets}))
        try:
            with pytest.raises(ConfigError, match=says):
                await runtime.start()
        finally:
            await runtime.aclose()
            await broker.stop()
    # the command line says so and exits
    done = _cli(settings, "worker", GATEHOOK_NATS_URL=settings.nats_url)
    assert done.returncode != 0
    said = " ".join(done.stderr.split())  # one error line (the terminal may wrap it)
    assert "error: tenants' secrets are sealed" in said
    assert "no key is given: set GATEHOOK_SECRETS__KEY" in said
    assert "Traceback" not in said


async def test_rotation_seals_again_under_the_new_key(
    admin: AdminService, settings: Settings, tenant: str
) -> None:
    await _publish_secrets(admin, tenant)
    new = new_key()
    refused = _cli(settings, "secrets", "rotate", GATEHOOK_SECRETS__KEY=new)
    assert refused.returncode == 2  # the old key is needed to open what is there
    assert "GATEHOOK_SECRETS__OLD_KEYS" in " ".join(refused.stderr.split())
    done = _cli(
        settings,
        "secrets",
        "rotate",
        GATEHOOK_SECRETS__KEY=new,
        GATEHOOK_SECRETS__OLD_KEYS=json.dumps([TEST_SECRETS_KEY]),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"kid": key_id(parse_key(new)), "resealed": 4, "sealed_from_clear": 0}
    raw = _raw(settings)
    assert key_id(parse_key(TEST_SECRETS_KEY)) not in raw
    for secret in SECRETS:
        assert secret not in raw
    only_new = _store(settings, SecretsSettings(key=new))
    try:
        assert await only_new.check_sealed() == [key_id(parse_key(new))]
        hook = await only_new.get_version(tenant, "hook", "1.0.0")
        assert hook is not None
        assert hook.config["secret"] == WEBHOOK_SECRET
    finally:
        await only_new.aclose()
    again = _cli(settings, "secrets", "rotate", GATEHOOK_SECRETS__KEY=new)
    assert json.loads(again.stdout)["resealed"] == 0  # idempotent


async def test_secrets_stored_in_clear_are_sealed_by_rotate(
    nc: NATS, pool: Any, settings: Settings, tenant: str, store: MongoStore
) -> None:
    clear = _store(settings, None)  # as a deployment without a key wrote them
    audit = AuditPublisher(nc.jetstream(), settings.audit)
    await audit.ensure_stream()

    async def notify(tenant: str) -> None:
        del tenant  # no worker here to tell

    try:
        plain = AdminService(
            store=clear, compiler=pool, templates=default_registry(), audit=audit, notify=notify
        )
        await _publish_secrets(plain, tenant)
    finally:
        await clear.aclose()
    assert WEBHOOK_SECRET in _raw(settings)
    done = _cli(settings, "secrets", "rotate", GATEHOOK_SECRETS__KEY=TEST_SECRETS_KEY)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sealed_from_clear"] == 4
    raw = _raw(settings)
    for secret in SECRETS:
        assert secret not in raw
    target = await store.get_version(tenant, "target", "1.0.0")
    assert target is not None
    assert target.target is not None
    assert target.target.signing_key == SIGNING_KEY


async def test_a_sealed_value_moved_elsewhere_does_not_open(
    admin: AdminService, settings: Settings, store: MongoStore, tenant: str
) -> None:
    await _publish_secrets(admin, tenant)
    with MongoClient(settings.mongodb_url) as client:
        versions = client[settings.mongodb_database][store.bucket("versions", tenant).name]
        hook = versions.find_one({"tenant": tenant, "action": "hook"})
        assert hook is not None
        versions.update_one(
            {"tenant": tenant, "action": "slack"},
            {"$set": {"config.webhook_url": hook["config"]["secret"]}},
        )
    with pytest.raises(SealingError, match="altered or moved"):
        await store.get_version(tenant, "slack", "1.0.0")
