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
from gatehook.errors import Forbidden
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from gatehook.transport.lean import settle
from tests.support.workers import start_worker, stop_worker

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


def _as_worker(settings: Settings, server: Server) -> Settings:
    """The test's settings with the worker's NATS user of deploy/nats.conf."""
    return settings.model_copy(
        update={"nats_url": _url(server, "gatehook-worker", "worker-secret")}
    )


async def _client(server: Server, user: str, password: str, errors: list[str]) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    # each role reads its own reply subjects only (deploy/nats.conf)
    return await nats.connect(
        _url(server, user, password), error_cb=on_error, inbox_prefix=f"_INBOX.{user}"
    )


async def test_roles(
    secured: Server, settings: Settings, pool: SandboxPool, store: MongoStore
) -> None:
    settings = _as_worker(settings, secured)
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

        listed = await operator.request(
            "gatehook.v1.as.acme-operator.admin.acme.actions.list", b"{}", timeout=5
        )
        assert json.loads(listed.data) == {"ok": True, "result": []}
        before = len(errors)
        with pytest.raises(nats.errors.TimeoutError):
            await operator.request(
                "gatehook.v1.as.acme-operator.admin.other.actions.list", b"{}", timeout=0.5
            )
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
        applied = await AdminClient(operator, timeout=30, principal="acme-operator").call(
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
    settings = _as_worker(settings, secured)
    runtime, broker = await start_worker(settings, pool)
    errors: list[str] = []
    console = await _client(secured, "gatehook-console", "console-secret", errors)
    try:
        client = AdminClient(console, timeout=30, principal="gatehook-console")
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


async def test_no_role_reads_another_roles_replies(
    secured: Server, settings: Settings, pool: SandboxPool, store: MongoStore
) -> None:
    """acme's login service and operator try to read every reply subject there is: refused,
    and nothing reaches them while globex's triggers and the console's calls for globex
    (whose replies carry a script's source and a signing key shown once) go on."""
    settings = _as_worker(settings, secured)
    runtime, broker = await start_worker(settings, pool)
    errors: list[str] = []
    spies = [
        await _client(secured, "acme-login", "login-secret", errors),
        await _client(secured, "acme-operator", "operator-secret", errors),
    ]
    console = await _client(secured, "gatehook-console", "console-secret", errors)
    globex = await _client(secured, "globex-login", "globex-login-secret", errors)
    heard: list[str] = []

    async def overheard(msg: nats.aio.msg.Msg) -> None:
        heard.append(msg.subject)

    try:
        prefixes = [
            "_INBOX.>",
            "_INBOX.*.>",
            "_INBOX.globex-login.>",
            "_INBOX.globex-operator.>",
            "_INBOX.gatehook-console.>",
            "_INBOX.gatehook-worker.>",
            "_INBOX.acme-login.>",  # (the operator's neighbour; the login service's own)
        ]
        before = len(errors)
        for spy in spies:
            for subject in prefixes:
                if subject == f"{spy._inbox_prefix.decode()}.>":
                    continue  # its own prefix is its own
                await spy.subscribe(subject, cb=overheard)
            await settle(spy)
        await asyncio.sleep(0.1)
        refused = [e for e in errors[before:] if "permissions violation for subscription" in e]
        assert len(refused) == 2 * len(prefixes) - 1, errors[before:]

        admin = AdminClient(console, timeout=30, principal="gatehook-console")
        await admin.call("globex", "actions.create", name="secret-hook", kind="target")
        published = await admin.call(
            "globex",
            "actions.publish",
            name="secret-hook",
            target={"endpoint": "https://hooks.example.com/g"},
        )
        assert published["signing_key"]  # shown once, to the console alone
        await admin.call("globex", "apply", file=ALLOW_FILE)
        for i in range(5):
            body = json.dumps({"request_id": f"g{i}", "user": {"id": "u", "email": "a@acme.com"}})
            reply = await globex.request(
                "gatehook.v1.trigger.globex.external_authentication.post_authentication",
                body.encode(),
                timeout=5,
            )
            assert json.loads(reply.data)["decision"] == "continue"
        for spy in spies:
            await settle(spy)
        assert heard == []
    finally:
        for nc in (*spies, console, globex):
            await nc.close()
        await stop_worker(runtime, broker)


async def test_audit_actors_cannot_be_forged(
    secured: Server, settings: Settings, pool: SandboxPool, store: MongoStore, nc: NATS
) -> None:
    """acme's operator claims to be alice signed in to the console: its change is recorded
    under its own user (the claim beside it), console.audit is refused, and the console's
    subject is closed to it. The console's own calls name the operator they act for."""
    settings = _as_worker(settings, secured)
    runtime, broker = await start_worker(settings, pool)
    errors: list[str] = []
    operator = await _client(secured, "acme-operator", "operator-secret", errors)
    console = await _client(secured, "gatehook-console", "console-secret", errors)
    try:
        forger = AdminClient(operator, actor="console:alice", timeout=30, principal="acme-operator")
        await forger.call("acme", "actions.create", name="gate", template="domain-allowlist")
        await forger.call("acme", "actions.publish", name="gate", config={"domains": ["a.com"]})
        await forger.call("acme", "actions.disable", name="gate", reason="x", fallback="continue")
        with pytest.raises(Forbidden, match=r"console\.audit is the console's"):
            await forger.call("acme", "console.audit", event="signed_in", method="token")
        # posing as the console on its subject: refused by the server
        before = len(errors)
        with pytest.raises(nats.errors.TimeoutError):
            await operator.request(
                "gatehook.v1.as.gatehook-console.admin.acme.console.audit",
                json.dumps({"actor": "console:alice", "event": "signed_in"}).encode(),
                timeout=0.5,
            )
        await asyncio.sleep(0.1)
        assert any("permissions violation for publish" in e.lower() for e in errors[before:])
        # the console speaks for the operator signed in to it
        real = AdminClient(console, actor="console:bob", timeout=30, principal="gatehook-console")
        await real.call("acme", "actions.enable", name="gate")
        await real.call("acme", "console.audit", event="signed_in", method="token")

        events = await latest_events(
            console.jetstream(), tenant="acme", limit=50, stream=settings.audit.stream
        )
        by_type = {e.type: e for e in events}
        for kind in ("flow.action_published", "flow.action_disabled"):
            event = by_type[kind]
            assert (event.actor, event.principal) == ("acme-operator", "acme-operator")
            assert event.details["claimed_actor"] == "console:alice"
        refused = by_type["admin.refused"]
        assert (refused.actor, refused.principal) == ("acme-operator", "acme-operator")
        assert refused.details["code"] == "forbidden"
        assert all(e.actor != "console:alice" for e in events)
        for kind in ("flow.action_enabled", "console.signed_in"):
            event = by_type[kind]
            assert (event.actor, event.principal) == ("console:bob", "gatehook-console")
            assert "claimed_actor" not in event.details
    finally:
        await operator.close()
        await console.close()
        await stop_worker(runtime, broker)
