"""A real Ory Kratos v1.3.1 calls gatehook, configured as docs/integrations/kratos.md says
(its body template and hooks, read from the guide), and driven through Kratos's public API
as an app drives it: registration and login flows of the password method."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import yaml
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.settings import GatewaySettings, Settings
from gatehook.transport.gateway import serve_gateway
from tests.support.ory import OryServer, start_kratos
from tests.support.tenants import audit_events
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "integrations" / "kratos.md"
KEY = "kratos-api-key-of-the-tests-0123"
NEW_KEY = "kratos-api-key-rotated-in-4567"


def _block(language: str, index: int = 0) -> str:
    """The guide's ``index``-th code block in ``language``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)
    return str(blocks[index])


def guide_selfservice(gateway: str, tenant: str, key: str, body: Path) -> dict[str, Any]:
    """The guide's hooks with this run's gateway, tenant, key and template file."""
    text = (
        _block("yaml")
        .replace("https://gatehook.example.com", gateway)
        .replace("/kratos/acme/", f"/kratos/{tenant}/")
        .replace("<api key>", key)
        .replace("file:///etc/config/kratos/gatehook.jsonnet", f"file://{body}")
    )
    selfservice: dict[str, Any] = yaml.safe_load(text)["selfservice"]
    # a deployment's own hook beside gatehook's: with the guide's placement both run (under
    # login.after.hooks, gatehook's would be skipped for a method with hooks of its own)
    selfservice["flows"]["login"]["after"]["password"]["hooks"].insert(
        0, {"hook": "revoke_active_sessions"}
    )
    return selfservice


SIGNUP = """
export function execute(input) {
  const email = input.user.email || '';
  if (email.endsWith('@blocked.example')) {
    return {kind: 'block', reason: 'domain', message: 'sign-ups from blocked.example are closed'};
  }
  if (input.request.ip === '203.0.113.9') {
    return {kind: 'block', reason: 'ip', message: 'not from 203.0.113.9'};
  }
  const first = input.user.first_name || 'x';
  return {kind: 'continue', user_updates: {first_name: first.toUpperCase()},
          metadata: [{key: 'source', value: 'gatehook'}, {key: 'seen_ip', value: input.request.ip || ''}]};
}
"""
LOGIN = """
export function execute(input) {
  if ((input.user.email || '').startsWith('banned')) {
    return {kind: 'block', reason: 'banned', message: 'this account may not sign in'};
  }
  return {kind: 'continue'};
}
"""


def tenant_file(keys: list[str]) -> dict[str, Any]:
    return {
        "actions": [
            {"name": "signup", "source": SIGNUP},
            {
                "name": "per-user",
                "template": "rate-limit-by-user",
                "config": {"limit": 1, "window_s": 600},
            },
            {"name": "login", "source": LOGIN},
        ],
        "flows": {
            "internal_authentication": {
                "pre_creation": ["per-user@latest", "signup@latest"],
                "post_authentication": ["login@latest"],
            }
        },
        "ingress": {"kratos": {"api_keys": keys}},
    }


@dataclass
class Stack:
    kratos: OryServer
    gateway: str
    tenant: str
    session: aiohttp.ClientSession
    body: Path

    async def register(
        self, email: str, first: str = "ann", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], float]:
        """A registration through Kratos's API flow: the status, the body, the seconds."""
        async with self.session.get(self.kratos.public + "/self-service/registration/api") as r:
            flow = await r.json()
        started = time.monotonic()
        async with self.session.post(
            self.kratos.public + f"/self-service/registration?flow={flow['id']}",
            json={
                "method": "password",
                "password": "a-very-long-password-1234!",
                "traits": {"email": email, "name": {"first": first, "last": "smith"}},
            },
            headers=headers or {},
        ) as r:
            return r.status, await r.json(), time.monotonic() - started

    async def login(self, email: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.kratos.public + "/self-service/login/api") as r:
            flow = await r.json()
        async with self.session.post(
            self.kratos.public + f"/self-service/login?flow={flow['id']}",
            json={
                "method": "password",
                "identifier": email,
                "password": "a-very-long-password-1234!",
            },
        ) as r:
            return r.status, await r.json()

    async def identities(self) -> list[dict[str, Any]]:
        async with self.session.get(self.kratos.admin + "/admin/identities") as r:
            found: list[dict[str, Any]] = await r.json()
            return found


def messages(body: dict[str, Any]) -> list[str]:
    """Every message text Kratos put in a flow's UI (its own and the hooks')."""
    ui = body.get("ui") or {}
    texts = [m.get("text", "") for m in ui.get("messages") or []]
    for node in ui.get("nodes") or []:
        texts += [m.get("text", "") for m in node.get("messages") or []]
    return texts


@pytest.fixture
async def stack(
    worker: Worker, nc: NATS, settings: Settings, tenant: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    await AdminClient(nc, actor="ops", timeout=60).call(
        tenant, "apply", file=tenant_file([KEY, NEW_KEY])
    )
    gateway_nc = await nats.connect(settings.nats_url)
    stop = asyncio.Event()
    where: list[str] = []
    task = asyncio.create_task(
        serve_gateway(
            GatewaySettings(keys_ttl_s=0.5),
            gateway_nc,
            host="127.0.0.1",
            port=0,
            stop=stop,
            started=where.append,
        )
    )
    deadline = time.monotonic() + 30
    while not where:
        assert time.monotonic() < deadline, "the gateway did not start"
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    body = tmp_path / "gatehook.jsonnet"
    body.write_text(_block("jsonnet"))
    kratos = await asyncio.to_thread(start_kratos, guide_selfservice(where[0], tenant, KEY, body))
    session = aiohttp.ClientSession()
    try:
        yield Stack(kratos, where[0], tenant, session, body)
    finally:
        await session.close()
        kratos.stop()
        stop.set()
        await task
        await gateway_nc.drain()


async def test_registration_allowed_changed_and_blocked(stack: Stack, nc: NATS) -> None:
    status, body, _ = await stack.register("ann@acme.com", first="ann")
    assert status == 200, body
    identity = body["identity"]
    assert identity["traits"]["name"]["first"] == "ANN"  # gatehook's user update
    assert identity["metadata_public"]["source"] == "gatehook"
    status, body, _ = await stack.register("bob@blocked.example")
    assert status == 400, body
    assert "sign-ups from blocked.example are closed" in messages(body)
    assert [i["traits"]["email"] for i in await stack.identities()] == ["ann@acme.com"]
    # every execution audited, the Kratos flow as the sign-in
    executed = await audit_events(nc, stack.tenant, "flow.action_executed")
    assert {e["action"] for e in executed} >= {"signup", "per-user"}
    assert all(e["signin_id"] for e in executed)


async def test_every_sign_up_is_a_different_user(stack: Stack) -> None:
    """Kratos sends the nil id before the identity is stored: no user id, so a per-user
    limit of 1 refuses no second person."""
    for n in range(3):
        status, body, _ = await stack.register(f"person{n}@acme.com")
        assert status == 200, (n, messages(body))
    assert len(await stack.identities()) == 3


async def test_login_allowed_and_blocked(stack: Stack) -> None:
    for email in ("carol@acme.com", "banned@acme.com"):
        status, body, _ = await stack.register(email)
        assert status == 200, messages(body)
    status, body = await stack.login("carol@acme.com")
    assert status == 200, body
    assert body["session"]["identity"]["traits"]["email"] == "carol@acme.com"
    status, body = await stack.login("banned@acme.com")
    assert status == 400, body
    assert "this account may not sign in" in messages(body)


async def test_the_client_address_comes_through_a_proxy(stack: Stack) -> None:
    """The proxy in front of Kratos sets True-Client-Ip (the guide); X-Forwarded-For does not
    reach a web hook."""
    status, body, _ = await stack.register(
        "dave@acme.com", headers={"True-Client-Ip": "198.51.100.4"}
    )
    assert status == 200, body
    assert body["identity"]["metadata_public"]["seen_ip"] == "198.51.100.4"
    status, body, _ = await stack.register(
        "erin@acme.com", headers={"True-Client-Ip": "203.0.113.9"}
    )
    assert status == 400
    assert "not from 203.0.113.9" in messages(body)
    status, body, _ = await stack.register(
        "fay@acme.com", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert status == 200  # X-Forwarded-For never reaches the hook
    assert body["identity"]["metadata_public"]["seen_ip"] == ""


async def test_a_wrong_key_and_rotated_keys(stack: Stack, nc: NATS) -> None:
    config = yaml.safe_load(stack.kratos.config.read_text())
    config["selfservice"] = {
        **config["selfservice"],
        **guide_selfservice(stack.gateway, stack.tenant, "not-the-key-at-all", stack.body),
    }
    await asyncio.to_thread(stack.kratos.restart, config)
    status, body, _ = await stack.register("gus@acme.com")
    assert status == 400
    assert "the call's signature or key is not accepted" in messages(body)
    # rotated: Kratos on the new key while the tenant has both; then the old one dropped
    config["selfservice"] = {
        **config["selfservice"],
        **guide_selfservice(stack.gateway, stack.tenant, NEW_KEY, stack.body),
    }
    await asyncio.to_thread(stack.kratos.restart, config)
    status, body, _ = await stack.register("hal@acme.com")
    assert status == 200, messages(body)
    api = AdminClient(nc, actor="ops", timeout=60)
    await api.call(stack.tenant, "apply", file=tenant_file([NEW_KEY]))
    await asyncio.sleep(0.6)  # (past the gateway's keys_ttl_s: it reads the keys again)
    status, body, _ = await stack.register("ivy@acme.com")
    assert status == 200, messages(body)


async def test_gatehook_down_refuses_at_once_with_the_reason(stack: Stack, worker: Worker) -> None:
    status, body, _ = await stack.register("jan@acme.com")
    assert status == 200, messages(body)
    await worker.runtime.drain()  # no worker answers any more
    await worker.broker.stop()
    status, body, seconds = await stack.register("kim@acme.com")
    assert status == 400, body
    texts = messages(body)
    assert any("no gatehook worker answered" in t or "deadline" in t for t in texts), texts
    # one deadline (2.5 s) at most, not three and Kratos's retries: a loaded machine's margin
    assert seconds < 2.5 + 2.0, (seconds, texts)
    assert "kim@acme.com" not in [i["traits"]["email"] for i in await stack.identities()]
