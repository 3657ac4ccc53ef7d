"""A real Ory Hydra v2.3.0 calls gatehook as its token hook, configured as
docs/integrations/hydra.md says (read from the guide), and driven as an OAuth2 client and a
login-and-consent app drive it: client credentials, and an authorization code grant whose
login and consent the test accepts through Hydra's admin API."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import nats
import pytest
import yaml
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.settings import GatewaySettings, Settings
from gatehook.transport.gateway import serve_gateway
from tests.support.ory import OryServer, start_hydra
from tests.support.tenants import audit_events
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "integrations" / "hydra.md"
KEY = "hydra-api-key-of-the-tests-0123"
REDIRECT = "http://127.0.0.1:9/callback"

ACCESS = """
export function execute(input) {
  if (input.request.application_id === input.context.hydra_denied) {
    return {kind: 'block', reason: 'client', message: 'this client may not have tokens'};
  }
  return {kind: 'continue', claims: {tier: 'gold'},
          access_token_claims: {client: input.request.application_id}};
}
"""
ID_TOKEN = """
export function execute(input) {
  return {kind: 'continue', claims: {dept: 'engineering', seen_sub: input.user.id || null}};
}
"""


def guide_oauth2(gateway: str, tenant: str, key: str) -> dict[str, Any]:
    """The guide's hook with this run's gateway, tenant and key."""
    block = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), re.S)[0]
    text = (
        block.replace("https://gatehook.example.com", gateway)
        .replace("/hydra/acme/", f"/hydra/{tenant}/")
        .replace("<api key>", key)
    )
    oauth2: dict[str, Any] = yaml.safe_load(text)["oauth2"]
    return oauth2


def tenant_file(denied: str) -> dict[str, Any]:
    access = ACCESS.replace("input.context.hydra_denied", json.dumps(denied))
    return {
        "actions": [{"name": "access", "source": access}, {"name": "id", "source": ID_TOKEN}],
        "flows": {
            "complement_token": {
                "pre_access_token_creation": ["access@latest"],
                "pre_userinfo_creation": ["id@latest"],
            }
        },
        "ingress": {"hydra": {"api_keys": [KEY]}},
    }


def jwt_claims(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


@dataclass
class Stack:
    hydra: OryServer
    session: aiohttp.ClientSession

    async def client(self, **fields: Any) -> dict[str, str]:
        """A new OAuth2 client (Hydra names it); its id and secret."""
        body = {
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types": ["code"],
            "scope": "openid offline",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_post",
            **fields,
        }
        async with self.session.post(self.hydra.admin + "/admin/clients", json=body) as r:
            assert r.status == 201, await r.text()
            made: dict[str, str] = await r.json()
            return made

    async def token(self, client: dict[str, str], **form: str) -> tuple[int, dict[str, Any]]:
        data = {"client_id": client["client_id"], "client_secret": client["client_secret"], **form}
        async with self.session.post(self.hydra.public + "/oauth2/token", data=data) as r:
            return r.status, await r.json()

    async def introspect(self, token: str) -> dict[str, Any]:
        async with self.session.post(
            self.hydra.admin + "/admin/oauth2/introspect", data={"token": token}
        ) as r:
            found: dict[str, Any] = await r.json()
            return found

    async def _follow(self, url: str) -> str:
        """GET ``url`` in the browser's place (cookies kept); where it redirects to."""
        async with self.session.get(url, allow_redirects=False) as r:
            assert r.status in (302, 303), (r.status, await r.text())
            return r.headers["Location"]

    async def authorization_code(self, client: dict[str, str], subject: str) -> str:
        """Through /oauth2/auth, the login and the consent (accepted as the app would, with
        the admin API) to the redirect; the code."""
        query = (
            f"client_id={client['client_id']}&response_type=code&scope=openid+offline"
            f"&redirect_uri={REDIRECT}&state=state-of-the-test-0123"
        )
        login = await self._follow(self.hydra.public + "/oauth2/auth?" + query)
        challenge = parse_qs(urlsplit(login).query)["login_challenge"][0]
        async with self.session.put(
            self.hydra.admin
            + f"/admin/oauth2/auth/requests/login/accept?login_challenge={challenge}",
            json={"subject": subject},
        ) as r:
            back = (await r.json())["redirect_to"]
        consent = await self._follow(back)
        challenge = parse_qs(urlsplit(consent).query)["consent_challenge"][0]
        async with self.session.put(
            self.hydra.admin
            + f"/admin/oauth2/auth/requests/consent/accept?consent_challenge={challenge}",
            json={
                "grant_scope": ["openid", "offline"],
                "session": {
                    "id_token": {"email": f"{subject}@acme.com"},
                    "access_token": {"org": "acme"},
                },
            },
        ) as r:
            back = (await r.json())["redirect_to"]
        done = await self._follow(back)
        assert done.startswith(REDIRECT), done
        return parse_qs(urlsplit(done).query)["code"][0]


@pytest.fixture
async def stack(worker: Worker, nc: NATS, settings: Settings, tenant: str) -> AsyncIterator[Stack]:
    await AdminClient(nc, actor="ops", timeout=60).call(
        tenant, "apply", file=tenant_file(denied="(none yet)")
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
    hydra = await asyncio.to_thread(start_hydra, guide_oauth2(where[0], tenant, KEY))
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        yield Stack(hydra, session)
    finally:
        await session.close()
        hydra.stop()
        stop.set()
        await task
        await gateway_nc.drain()


async def test_client_credentials_carry_gatehooks_claims(
    stack: Stack, nc: NATS, tenant: str
) -> None:
    client = await stack.client()
    status, body = await stack.token(client, grant_type="client_credentials")
    assert status == 200, body
    found = await stack.introspect(body["access_token"])
    assert found["active"], found
    assert found["ext"] == {"tier": "gold", "client": client["client_id"]}
    executed = await audit_events(nc, tenant, "flow.action_executed")
    assert [e["action"] for e in executed] == ["access"]  # no ID token: one slot ran


async def test_authorization_code_tokens_carry_gatehooks_claims(
    stack: Stack, nc: NATS, tenant: str
) -> None:
    client = await stack.client()
    code = await stack.authorization_code(client, "user-1")
    status, body = await stack.token(
        client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT
    )
    assert status == 200, body
    id_token = jwt_claims(body["id_token"])
    assert id_token["sub"] == "user-1"
    assert id_token["email"] == "user-1@acme.com"  # the consent's claim, kept
    assert id_token["dept"] == "engineering"  # gatehook's
    assert id_token["seen_sub"] == "user-1"
    access = await stack.introspect(body["access_token"])
    assert access["ext"] == {"org": "acme", "tier": "gold", "client": client["client_id"]}
    # the refresh grant runs the hook again, on the same sign-in
    status, refreshed = await stack.token(
        client, grant_type="refresh_token", refresh_token=body["refresh_token"]
    )
    assert status == 200, refreshed
    assert jwt_claims(refreshed["id_token"])["dept"] == "engineering"
    executed = await audit_events(nc, tenant, "flow.action_executed")
    assert len({e["signin_id"] for e in executed}) == 1


async def test_a_client_an_action_blocks_gets_access_denied(
    stack: Stack, nc: NATS, tenant: str
) -> None:
    denied = await stack.client()
    await AdminClient(nc, actor="ops", timeout=60).call(
        tenant, "apply", file=tenant_file(denied=denied["client_id"])
    )
    status, body = await stack.token(denied, grant_type="client_credentials")
    assert status == 403, body
    assert body["error"] == "access_denied"
    allowed = await stack.client()
    status, body = await stack.token(allowed, grant_type="client_credentials")
    assert status == 200, body


async def test_gatehook_down_refuses_the_grant_at_once(stack: Stack, worker: Worker) -> None:
    client = await stack.client()
    status, _ = await stack.token(client, grant_type="client_credentials")
    assert status == 200
    await worker.runtime.drain()
    await worker.broker.stop()
    started = time.monotonic()
    status, body = await stack.token(client, grant_type="client_credentials")
    seconds = time.monotonic() - started
    assert status == 500, body
    assert body["error"] == "server_error"
    # one deadline (2.5 s) at most, not Hydra's retries on top: a loaded machine's margin
    assert seconds < 2.5 + 2.0, seconds
