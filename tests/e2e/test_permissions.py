"""deploy/nats.conf: subject permissions keep a login service to its triggers and an operator
to its tenant's management API, with a real worker behind them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.audit.reader import latest_events
from gatehook.devservers import Server, start_nats
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from gatehook.transport.lean import settle
from tests.conftest import start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[2]
ALLOW_FILE = {  # a flows-as-code file: one template action in post_authentication
    "actions": [
        {"name": "allow", "template": "domain-allowlist", "config": {"domains": ["acme.com"]}}
    ],
    "flows": {"external_authentication": {"post_authentication": ["allow@latest"]}},
}


@pytest.fixture
async def secured() -> AsyncIterator[Server]:
    server = start_nats(config=str(ROOT / "deploy" / "nats.conf"))
    yield server
    server.stop()


def _url(server: Server, user: str, password: str) -> str:
    return f"nats://{user}:{password}@127.0.0.1:{server.port}"


async def _client(server: Server, user: str, password: str, errors: list[str]) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(_url(server, user, password), error_cb=on_error)


async def test_roles(
    secured: Server, settings: Settings, pool: SandboxPool, store: MongoStore
) -> None:
    settings = settings.model_copy(
        update={"nats_url": _url(secured, "gatehook-worker", "worker-secret")}
    )
    runtime, broker = await start_worker(settings, pool)
    errors: list[str] = []
    login = await _client(secured, "acme-login", "login-secret", errors)
    operator = await _client(secured, "acme-operator", "operator-secret", errors)
    try:
        body = json.dumps({"request_id": "r1"}).encode()
        ok = await login.request(
            "gatehook.v1.trigger.acme.external_authentication.post_authentication", body, timeout=5
        )
        assert json.loads(ok.data)["decision"] == "continue"

        for subject in (
            "gatehook.v1.trigger.other.external_authentication.post_authentication",
            "gatehook.v1.admin.acme.actions.list",
        ):
            with pytest.raises(nats.errors.TimeoutError):
                await login.request(subject, body, timeout=0.5)
        await asyncio.sleep(0)
        assert sum("permissions violation" in e.lower() for e in errors) >= 2, errors
        # ...and it can read neither audit events nor management traffic, nor the stream
        before = len(errors)
        for subject in ("gatehook.v1.audit.acme.>", "gatehook.v1.admin.acme.>", ">"):
            await login.subscribe(subject)
        with pytest.raises(nats.errors.TimeoutError):
            await login.request("$JS.API.STREAM.INFO.GATEHOOK_AUDIT", b"", timeout=0.5)
        await settle(login)
        await asyncio.sleep(0.1)
        said = [e.lower() for e in errors[before:]]
        assert sum("permissions violation for subscription" in e for e in said) == 3, said
        assert sum("permissions violation for publish" in e for e in said) == 1, said

        listed = await operator.request("gatehook.v1.admin.acme.actions.list", b"{}", timeout=5)
        assert json.loads(listed.data) == {"ok": True, "result": []}
        before = len(errors)
        with pytest.raises(nats.errors.TimeoutError):
            await operator.request("gatehook.v1.admin.other.actions.list", b"{}", timeout=0.5)
        with pytest.raises(nats.errors.TimeoutError):
            await operator.request(
                "gatehook.v1.trigger.acme.external_authentication.post_authentication",
                body,
                timeout=0.5,
            )
        assert len(errors) >= before + 2

        # the worker's own credentials cannot be used to call the management API or to send
        # trigger requests (deploy/nats.conf separates the roles)
        stolen = await _client(secured, "gatehook-worker", "worker-secret", errors)
        try:
            before = len(errors)
            for subject in (
                "gatehook.v1.admin.acme.actions.list",
                "gatehook.v1.trigger.acme.external_authentication.post_authentication",
            ):
                with pytest.raises(nats.errors.TimeoutError):
                    await stolen.request(subject, body, timeout=0.5)
            await asyncio.sleep(0.1)
            assert sum("permissions violation" in e.lower() for e in errors[before:]) >= 2
        finally:
            await stolen.close()
        # while the worker, held to its role, still does all its work: a change (audit events,
        # the change broadcast), then a decision (an execution event, the reply record)
        applied = await AdminClient(operator, timeout=30).call(
            "acme",
            "apply",
            file=ALLOW_FILE,
        )
        assert applied["applied"]
        await asyncio.sleep(0.2)  # the change broadcast reaches the worker
        request = json.dumps({"request_id": "r2", "user": {"id": "u", "email": "a@acme.com"}})
        decided = await login.request(
            "gatehook.v1.trigger.acme.external_authentication.post_authentication",
            request.encode(),
            timeout=5,
        )
        reply = json.loads(decided.data)
        assert reply["decision"] == "continue", reply
        assert [a["outcome"] for a in reply["actions"]] == ["continue"]
    finally:
        await login.close()
        await operator.close()
        await stop_worker(runtime, broker)


async def test_console_role(
    secured: Server, settings: Settings, pool: SandboxPool, store: MongoStore
) -> None:
    """The console's user (compose.yaml, the chart's consoleUrl) calls every tenant's
    management API and reads the audit stream; it cannot send trigger requests, write audit
    events or change the streams."""
    settings = settings.model_copy(
        update={"nats_url": _url(secured, "gatehook-worker", "worker-secret")}
    )
    runtime, broker = await start_worker(settings, pool)
    errors: list[str] = []
    console = await _client(secured, "gatehook-console", "console-secret", errors)
    try:
        client = AdminClient(console, timeout=30)
        for tenant in ("acme", "globex"):
            applied = await client.call(
                tenant,
                "apply",
                file=ALLOW_FILE,
            )
            assert applied["applied"], applied
        events = await latest_events(
            console.jetstream(), tenant="globex", limit=50, stream=settings.audit.stream
        )
        assert events
        assert all(e.tenant == "globex" for e in events)

        body = json.dumps({"request_id": "r1"}).encode()
        with pytest.raises(nats.errors.TimeoutError):
            await console.request(
                "gatehook.v1.trigger.acme.external_authentication.post_authentication",
                body,
                timeout=0.5,
            )
        await console.publish("gatehook.v1.audit.acme.flow.action_executed", b"{}")
        with pytest.raises(nats.errors.TimeoutError):
            await console.request(f"$JS.API.STREAM.DELETE.{settings.audit.stream}", timeout=0.5)
        await settle(console)
        await asyncio.sleep(0.1)
        assert sum("permissions violation" in e.lower() for e in errors) >= 3, errors
        assert (await console.jetstream().stream_info(settings.audit.stream)).config.name
    finally:
        await console.close()
        await stop_worker(runtime, broker)
