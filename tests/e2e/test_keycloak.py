"""A real Keycloak 26.7.3 with gatehook's extension (clients/keycloak) as a login service of
the contract: its realm is the tenant, its authentication session the sign-in. Set up as
docs/integrations/keycloak.md says, through Keycloak's admin REST API, and driven as its
users drive it: its own login and registration pages in Chromium, its token endpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import yaml
from aiohttp import web
from nats.aio.client import Client as NATS
from playwright.async_api import Page, expect

from gatehook.admin.client import AdminClient
from gatehook.devservers import free_port, start_nats
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from tests.support.keycloak import (
    CLIENT_SECRET,
    Keycloak,
    KeycloakAdmin,
    configure_realm,
    start_keycloak,
)
from tests.support.tenants import audit_events
from tests.support.workers import Servers, Worker, start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-long-password-of-the-tests-1"
OTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # base32, as the credential says

SIGN_IN = """
export function execute(input) {
  const name = input.user.username;
  if (name === 'blocked') {
    return {kind: 'block', reason: 'banned', message: 'This account may not sign in here.'};
  }
  if (name === 'otp-user' || name === 'no-otp') return {kind: 'demand_mfa', reason: 'risk'};
  if (name === 'forger') return {kind: 'redirect', redirect_url: 'VERIFY_URL?forge=1'};
  if (name === 'redirected') {
    if (input.context.continue) {  // back from the verification page, with its answer
      return {kind: 'continue', claims: {verified: input.request.query.verified}};
    }
    return {kind: 'redirect', redirect_url: 'VERIFY_URL'};
  }
  return {kind: 'continue', claims: {tier: 'gold'},
          metadata: [{key: 'last_gatehook_ip', value: input.request.ip || ''}]};
}
"""
SIGN_UP = """
export function execute(input) {
  if ((input.user.email || '').endsWith('@blocked.example')) {
    return {kind: 'block', reason: 'domain', message: 'Sign-ups from blocked.example are closed.'};
  }
  return {kind: 'continue', metadata: [{key: 'source', value: 'gatehook'}]};
}
"""
TOKEN = """
export function execute(input) {
  return {kind: 'continue', claims: {dept: 'engineering', version: 'V1'}};
}
"""


def tenant_file(verify_url: str, token_source: str = TOKEN) -> dict[str, Any]:
    return {
        "actions": [
            {"name": "sign-in", "source": SIGN_IN.replace("VERIFY_URL", verify_url)},
            {"name": "sign-up", "source": SIGN_UP},
            {"name": "token", "source": token_source},
        ],
        "flows": {
            "internal_authentication": {
                "post_authentication": ["sign-in@latest"],
                "pre_creation": ["sign-up@latest"],
            },
            "complement_token": {
                "pre_userinfo_creation": ["token@latest"],
                "pre_access_token_creation": ["token@latest"],
            },
        },
    }


def totp(secret: str, at: float | None = None) -> str:
    """RFC 6238, as an authenticator app computes it (SHA-1, 6 digits, 30 s)."""
    key = base64.b32decode(secret)
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


@pytest.fixture(scope="module")
def keycloak(servers: Servers) -> Iterator[Keycloak]:
    server = start_keycloak({"nats-url": servers.nats.url, "deadline-ms": "2000"})
    yield server
    server.stop()


@dataclass
class Realm:
    """A realm set up as the guide says, its app client, and the app's callback."""

    name: str
    keycloak: Keycloak
    admin: KeycloakAdmin
    callback: str
    client_secret: str
    session: aiohttp.ClientSession
    verify_url: str

    async def user(self, username: str, *, otp: bool = False) -> str:
        body: dict[str, Any] = {
            "username": username,
            "email": f"{username}@acme.com",
            "firstName": username,
            "lastName": "smith",
            "enabled": True,
            "emailVerified": True,
            "credentials": [{"type": "password", "value": PASSWORD, "temporary": False}],
        }
        if otp:
            body["credentials"].append(
                {
                    "type": "otp",
                    "userLabel": "phone",
                    "secretData": json.dumps({"value": OTP_SECRET}),
                    "credentialData": json.dumps(
                        {
                            "subType": "totp",
                            "digits": 6,
                            "period": 30,
                            "algorithm": "HmacSHA1",
                            "counter": 0,
                            "secretEncoding": "BASE32",
                        }
                    ),
                }
            )
        user_id: str = await self.admin.call("POST", f"/{self.name}/users", body)
        return user_id

    async def direct_grant(self, username: str) -> tuple[int, dict[str, Any], float]:
        started = time.monotonic()
        async with self.session.post(
            f"{self.keycloak.url}/realms/{self.name}/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "app",
                "client_secret": self.client_secret,
                "username": username,
                "password": PASSWORD,
                "scope": "openid",
            },
        ) as r:
            return r.status, await r.json(), time.monotonic() - started

    async def exchange(self, code: str) -> dict[str, Any]:
        async with self.session.post(
            f"{self.keycloak.url}/realms/{self.name}/protocol/openid-connect/token",
            data={
                "grant_type": "authorization_code",
                "client_id": "app",
                "client_secret": self.client_secret,
                "code": code,
                "redirect_uri": self.callback,
            },
        ) as r:
            body: dict[str, Any] = await r.json()
            assert r.status == 200, body
            return body

    def login_url(self) -> str:
        query = urllib.parse.urlencode(
            {
                "client_id": "app",
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": self.callback,
            }
        )
        return f"{self.keycloak.url}/realms/{self.name}/protocol/openid-connect/auth?{query}"


def claims(jwt: str) -> dict[str, Any]:
    body = jwt.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


@pytest.fixture
async def realm(keycloak: Keycloak, worker: Worker, nc: NATS, tenant: str) -> AsyncIterator[Realm]:
    """The tenant's flows in gatehook, and a realm of the same name in Keycloak set up as the
    guide says: the authenticator in the browser and direct grant flows, the form action in
    registration, the claims mapper on the client."""

    async def callback(request: web.Request) -> web.Response:
        return web.Response(text="signed in", content_type="text/html")

    async def verify(request: web.Request) -> web.Response:
        """A verification page a redirect sends the browser to: it sends it back to where
        the step said, with the state it got and its answer."""
        back = request.query["continue"]
        # (?forge=1: a page that sends the browser back with another state than it got)
        state = "forged" if request.query.get("forge") else request.query["state"]
        back += "&" + urllib.parse.urlencode({"state": state, "verified": "yes"})
        raise web.HTTPFound(back)

    app = web.Application()
    app.router.add_get("/callback", callback)
    app.router.add_get("/verify", verify)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    verify_url = f"http://127.0.0.1:{port}/verify"
    await AdminClient(nc, actor="ops", timeout=60).call(
        tenant, "apply", file=tenant_file(verify_url)
    )
    session = aiohttp.ClientSession()
    admin = KeycloakAdmin(keycloak.url, session)
    try:
        await configure_realm(admin, tenant, f"http://127.0.0.1:{port}/callback")
        yield Realm(
            tenant,
            keycloak,
            admin,
            f"http://127.0.0.1:{port}/callback",
            CLIENT_SECRET,
            session,
            verify_url,
        )
    finally:
        await session.close()
        await runner.cleanup()


async def sign_in(page: Page, realm: Realm, username: str) -> None:
    await page.goto(realm.login_url())
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#kc-login")


def code_of(page: Page) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["code"][0]


# -- the browser flow -----------------------------------------------------------------------
async def test_an_allowed_user_signs_in_with_gatehooks_claims(
    realm: Realm, page: Page, nc: NATS
) -> None:
    user_id = await realm.user("ann")
    await sign_in(page, realm, "ann")
    await page.wait_for_url(realm.callback + "*")
    tokens = await realm.exchange(code_of(page))
    id_token = claims(tokens["id_token"])
    assert id_token["tier"] == "gold"  # the sign-in step's claim
    assert id_token["dept"] == "engineering"  # the token trigger's
    assert claims(tokens["access_token"])["dept"] == "engineering"
    user = await realm.admin.call("GET", f"/{realm.name}/users/{user_id}")
    assert user["attributes"]["last_gatehook_ip"] == ["127.0.0.1"]
    executed = await audit_events(nc, realm.name, "flow.action_executed")
    signins = {e["signin_id"] for e in executed}
    assert len(signins) == 1  # the authentication session: one sign-in, steps and tokens
    assert {e["action"] for e in executed} == {"sign-in", "token"}
    assert all(e["tenant"] == realm.name for e in executed)


async def test_a_blocked_user_reads_the_actions_message(realm: Realm, page: Page) -> None:
    await realm.user("blocked")
    await sign_in(page, realm, "blocked")
    await expect(page.locator("body")).to_contain_text("This account may not sign in here.")
    assert realm.callback not in page.url


async def test_demand_mfa_asks_for_the_otp(realm: Realm, page: Page) -> None:
    await realm.user("otp-user", otp=True)
    await sign_in(page, realm, "otp-user")
    await page.fill("#otp", totp(OTP_SECRET))
    await page.click("#kc-login")
    await page.wait_for_url(realm.callback + "*")
    # a user without OTP is asked to set it up
    await realm.user("no-otp")
    await page.context.clear_cookies()
    await sign_in(page, realm, "no-otp")
    await expect(page.locator("body")).to_contain_text("Mobile Authenticator Setup")


async def test_registration_refused_with_the_message_and_accepted_with_the_attribute(
    realm: Realm, page: Page
) -> None:
    async def register(email: str) -> None:
        await page.goto(realm.login_url())
        await page.click("text=Register")
        await page.fill("#username", email.split("@")[0])
        await page.fill("#email", email)
        await page.fill("#firstName", "Eve")
        await page.fill("#lastName", "Smith")
        await page.fill("#password", PASSWORD)
        await page.fill("#password-confirm", PASSWORD)
        await page.click("input[type=submit]")

    await register("eve@blocked.example")
    await expect(page.locator("body")).to_contain_text("Sign-ups from blocked.example are closed.")
    assert await realm.admin.call("GET", f"/{realm.name}/users?username=eve") == []
    await page.context.clear_cookies()
    await register("fred@acme.com")
    await page.wait_for_url(realm.callback + "*")
    (user,) = await realm.admin.call("GET", f"/{realm.name}/users?username=fred")
    full = await realm.admin.call("GET", f"/{realm.name}/users/{user['id']}")
    assert full["attributes"]["source"] == ["gatehook"]


async def test_a_redirect_leaves_and_the_sign_in_resumes(realm: Realm, page: Page) -> None:
    """The step sends the browser to the action's page with the state and the way back; the
    page sends it back with the state and its answer, and the same action decides again
    (``context.continue``), as an Auth0 redirect action resumes."""
    await realm.user("redirected")
    await sign_in(page, realm, "redirected")
    await page.wait_for_url(realm.callback + "*")
    tokens = await realm.exchange(code_of(page))
    assert claims(tokens["id_token"])["verified"] == "yes"


async def test_a_forged_state_does_not_resume(realm: Realm, page: Page) -> None:
    await realm.user("forger")
    await sign_in(page, realm, "forger")
    await expect(page.locator("body")).to_contain_text("The sign-in could not be resumed.")
    assert realm.callback not in page.url


# -- the direct grant flow -----------------------------------------------------------------
async def test_direct_grant_claims_and_access_denied(realm: Realm) -> None:
    await realm.user("gina")
    await realm.user("blocked")
    status, body, _ = await realm.direct_grant("gina")
    assert status == 200, body
    assert claims(body["id_token"])["tier"] == "gold"
    assert claims(body["access_token"])["dept"] == "engineering"
    status, body, _ = await realm.direct_grant("blocked")
    assert status == 400, body
    assert body == {
        "error": "access_denied",
        "error_description": "This account may not sign in here.",
    }


async def test_a_version_published_mid_sign_in_does_not_change_it(
    realm: Realm, page: Page, nc: NATS
) -> None:
    """The sign-in is pinned at its first trigger (the authenticator's); its tokens, made
    after a new version is published, run on the version it started with."""
    await realm.user("hank")
    await sign_in(page, realm, "hank")
    await page.wait_for_url(realm.callback + "*")
    code = code_of(page)
    await AdminClient(nc, actor="ops", timeout=60).call(
        realm.name, "apply", file=tenant_file(realm.verify_url, TOKEN.replace("V1", "V2"))
    )
    tokens = await realm.exchange(code)
    assert claims(tokens["id_token"])["version"] == "V1"
    status, body, _ = await realm.direct_grant("hank")  # a new sign-in: the new version
    assert status == 200, body
    assert claims(body["id_token"])["version"] == "V2"


async def test_gatehook_stopped_fails_closed_within_the_deadline(
    realm: Realm, worker: Worker
) -> None:
    await realm.user("ivan")
    status, _, _ = await realm.direct_grant("ivan")
    assert status == 200
    await worker.runtime.drain()
    await worker.broker.stop()
    status, body, seconds = await realm.direct_grant("ivan")
    assert status == 400, body
    assert body["error_description"] == "Sign-in is not available right now; please try again."
    assert seconds < 2.0 + 3.0, seconds  # the step's deadline (2 s), a loaded machine's margin


# -- compose.keycloak.yaml, as it runs ------------------------------------------------------
def compose_keycloak() -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load((ROOT / "compose.keycloak.yaml").read_text())[
        "services"
    ]["keycloak"]
    return service


async def test_the_compose_health_check_reads_keycloaks_readiness(keycloak: Keycloak) -> None:
    """The health check compose.keycloak.yaml runs inside Keycloak's image (bash, no curl)."""
    test = compose_keycloak()["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    for port, healthy in ((keycloak.management, True), (free_port(), False)):
        script = test[3].replace("/9000", f"/{port}")
        proc = await asyncio.create_subprocess_exec("bash", "-c", script)
        assert (await asyncio.wait_for(proc.wait(), 30) == 0) is healthy, port


async def test_keycloak_as_the_compose_files_nats_role(
    settings: Settings, pool: SandboxPool, store: MongoStore
) -> None:
    """Keycloak with compose.keycloak.yaml's SPI options against NATS under deploy/nats.conf:
    as keycloak-login it gets realm acme's decisions (its replies on _INBOX.keycloak-login,
    the one inbox the role may read); a realm of a tenant the role does not serve fails
    closed with the message, within the deadline."""
    server = start_nats(config=str(ROOT / "deploy" / "nats.conf"))
    spi = {}
    for arg in compose_keycloak()["command"]:
        if arg.startswith("--spi-authenticator--gatehook--"):
            key, _, value = arg.removeprefix("--spi-authenticator--gatehook--").partition("=")
            spi[key] = value
    assert spi.pop("nats-url") == "nats://nats:4222"
    spi["nats-url"] = f"nats://127.0.0.1:{server.port}"
    worker_settings = settings.model_copy(
        update={"nats_url": f"nats://gatehook-worker:worker-secret@127.0.0.1:{server.port}"}
    )
    keycloak: Keycloak | None = None
    runtime, broker = await start_worker(worker_settings, pool)
    try:
        operator = await nats.connect(
            f"nats://acme-operator:operator-secret@127.0.0.1:{server.port}",
            inbox_prefix="_INBOX.acme-operator",
        )
        try:
            await AdminClient(operator, principal="acme-operator", timeout=60).call(
                "acme", "apply", file=tenant_file("http://127.0.0.1:1/verify")
            )
        finally:
            await operator.close()
        keycloak = await asyncio.to_thread(start_keycloak, spi)
        async with aiohttp.ClientSession() as session:
            admin = KeycloakAdmin(keycloak.url, session)
            for name in ("acme", "initech"):
                await configure_realm(admin, name, "http://127.0.0.1:1/callback")
                users = Realm(name, keycloak, admin, "", CLIENT_SECRET, session, "")
                await users.user("ann")
            status, body, _ = await Realm(
                "acme", keycloak, admin, "", CLIENT_SECRET, session, ""
            ).direct_grant("ann")
            assert status == 200, body
            assert claims(body["id_token"])["tier"] == "gold"
            assert claims(body["access_token"])["dept"] == "engineering"
            status, body, seconds = await Realm(
                "initech", keycloak, admin, "", CLIENT_SECRET, session, ""
            ).direct_grant("ann")
            assert status == 400, body
            assert body["error"] == "access_denied"
            assert body["error_description"] == (
                "Sign-in is not available right now; please try again."
            )
            assert seconds < int(spi["deadline-ms"]) / 1000 + 3.0, seconds
    finally:
        if keycloak is not None:
            keycloak.stop()
        await stop_worker(runtime, broker)
        server.stop()
