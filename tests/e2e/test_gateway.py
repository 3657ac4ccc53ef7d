"""``gatehook http``: identity providers' hook calls, played with their documented shapes
and signed as they sign, through the gateway to a real worker over NATS.

ZITADEL v2 executions (function, request/response, event), Ory Kratos web hooks (interrupt,
parse), Okta inline hooks (token patches, registration), and what every hostile call gets:
a 4xx, an ``ingress.refused`` event, and a gateway that keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from gatehook.admin.client import AdminClient
from gatehook.devservers import start_nats
from gatehook.settings import GatewaySettings, Settings
from gatehook.transport.gateway import serve_gateway
from tests.support.tenants import audit_events
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
KEY_OLD = "zitadel-signing-key-0000"
KEY = "zitadel-signing-key-1111"
OKTA_KEY = "okta-authorization-secret"
KRATOS_KEY = "kratos-api-key-secret-1"


def signed(body: bytes, key: str = KEY, at: int | None = None) -> dict[str, str]:
    """Headers as ZITADEL sends them (pkg/actions/signing.go)."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "ZITADEL-Signature": f"t={t},v1={mac}"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Gateway:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.url + path, data=raw, headers=headers or {}) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None

    async def zitadel(self, tenant: str, body: Any, **sign: Any) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        return await self.post(f"/zitadel/{tenant}", raw, signed(raw, **sign))


async def start_gateway(
    nats_url: str, settings: GatewaySettings
) -> tuple[Gateway, Callable[[], Any]]:
    nc = await nats.connect(nats_url)
    stop = asyncio.Event()
    where: list[str] = []
    task = asyncio.create_task(
        serve_gateway(settings, nc, host="127.0.0.1", port=0, stop=stop, started=where.append)
    )
    while not where:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    session = aiohttp.ClientSession()

    async def close() -> None:
        stop.set()
        await task
        await session.close()
        await nc.drain()

    return Gateway(where[0], session), close


@pytest.fixture
async def gateway(worker: Worker, settings: Settings) -> AsyncIterator[Gateway]:
    gw, close = await start_gateway(
        settings.nats_url, GatewaySettings(max_body_bytes=64 * 1024, keys_ttl_s=0.5)
    )
    yield gw
    await close()


V1_CLAIMS = """
function claims(ctx, api) {
  const user = ctx.v1.getUser();
  const md = ctx.v1.user.getMetadata().metadata;
  api.v1.claims.setClaim('email_seen', user.human.email);
  api.v1.claims.setClaim('given', user.human.firstName);
  api.v1.claims.setClaim('dept', md.filter(m => m.key === 'dept')[0].value);
  api.v1.claims.setClaim('roles', ctx.v1.user.grants.grants.map(
    g => g.projectId + ':' + g.roles.join('|')));
  api.v1.userinfo.setClaim('client', ctx.v1.application.getClientId());
  api.v1.claims.setClaim('org', ctx.v1.org.name);
  api.v1.claims.setClaim('sub_claim', ctx.v1.claims.sub);
  api.v1.claims.appendLogIntoClaims('claims ran');
  api.v1.user.setMetadata('seen', 'yes');
}
"""

MODULE_TOKEN = """
export function execute(input) {
  return {kind: 'continue', claims: {
    mail: input.user.email, name: input.user.first_name + ' ' + input.user.last_name}};
}
"""

MODULE_BLOCK = """
export function execute(input) {
  return {kind: 'block', reason: 'saml_off', message: 'SAML is off for ' + input.user.email};
}
"""

PRE_CREATION = """
export function execute(input) {
  if (input.user.email.endsWith('@blocked.example')) {
    return {kind: 'block', reason: 'domain', message: 'that domain may not sign up'};
  }
  return {kind: 'continue', user_updates: {first_name: input.user.first_name.toUpperCase()},
          metadata: [{key: 'source', value: 'signup'}]};
}
"""

TENANT_FILE: dict[str, Any] = {
    "actions": [
        {"name": "claims", "source": V1_CLAIMS},
        {"name": "token", "source": MODULE_TOKEN},
        {"name": "saml", "source": MODULE_BLOCK},
        {"name": "signup", "source": PRE_CREATION},
    ],
    "flows": {
        "complement_token": {
            "pre_userinfo_creation": ["claims@latest"],
            "pre_access_token_creation": ["token@latest"],
        },
        "customize_saml_response": {"pre_saml_response": ["saml@latest"]},
        "internal_authentication": {"pre_creation": ["signup@latest"]},
        "external_authentication": {"post_authentication": ["signup@latest"]},
    },
    "ingress": {
        "zitadel": {"signing_keys": [KEY_OLD, KEY]},
        "kratos": {"api_keys": [KRATOS_KEY]},
        "okta": {"api_keys": [OKTA_KEY]},
    },
}


async def apply(nc: NATS, tenant: str, file: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await AdminClient(nc, actor="ops", timeout=60).call(
        tenant, "apply", file=file
    )
    return result


# ZITADEL's ContextInfo for function/preuserinfo (internal/api/oidc/userinfo.go)
USERINFO_CALL: dict[str, Any] = {
    "function": "function/preuserinfo",
    "userinfo": {"sub": "312909075211944344", "email": "mini@mouse.com", "locale": "de"},
    "user": {
        "id": "312909075211944344",
        "creation_date": "2025-03-26T15:38:17.514753Z",
        "resource_owner": "312909075211878808",
        "state": 1,
        "type": 1,
        "username": "mini@mouse.com",
        "preferred_login_name": "mini@mouse.com",
        "human": {
            "first_name": "Minnie",
            "last_name": "Mouse",
            "display_name": "Minnie Mouse",
            "preferred_language": "de",
            "email": "mini@mouse.com",
            "is_email_verified": True,
        },
    },
    "user_metadata": [{"key": "dept", "value": b64("engineering")}],
    "org": {"id": "312909075211878808", "name": "Disney", "primary_domain": "disney.localhost"},
    "user_grants": [
        {"id": "g1", "project_id": "p1", "roles": ["admin", "viewer"], "grant_id": "pg1"}
    ],
    "application": {"client_id": "312909075212468632"},
}


async def test_zitadel_function_executions(
    gateway: Gateway, nc: NATS, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatehook.gateway")
    plan = await apply(nc, tenant, TENANT_FILE)
    assert any("set ingress" in c for c in plan["changes"]), plan
    # a ZITADEL v1 script finds ctx.v1 as under ZITADEL; signed with the second key
    status, body = await gateway.zitadel(tenant, USERINFO_CALL)
    assert status == 200, body
    claims = {c["key"]: c["value"] for c in body["append_claims"]}
    assert claims == {
        "email_seen": "mini@mouse.com",
        "given": "Minnie",
        "dept": "engineering",
        "roles": ["p1:admin|viewer"],
        "client": "312909075212468632",
        "org": "Disney",
        "sub_claim": "312909075211944344",
    }
    assert body["append_log_claims"] == ["claims ran"]
    # the worker's actions[] trace is in the gateway's log of the call
    assert any(
        f"{tenant} complement_token.pre_userinfo_creation" in r.getMessage()
        and "actions=[claims@1.0.0:continue]" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert body["set_user_metadata"] == [{"key": "seen", "value": b64("yes")}]
    # the rotated-out key still signs
    status, body = await gateway.zitadel(tenant, USERINFO_CALL, key=KEY_OLD)
    assert status == 200, body
    assert body["append_claims"], body
    # a module script answering in ZITADEL's format
    call = {**USERINFO_CALL, "function": "function/preaccesstoken"}
    status, body = await gateway.zitadel(tenant, call)
    assert status == 200, body
    assert body == {
        "append_claims": [
            {"key": "mail", "value": "mini@mouse.com"},
            {"key": "name", "value": "Minnie Mouse"},
        ]
    }
    # a block is forwarded to ZITADEL's caller as a 4xx
    call = {**USERINFO_CALL, "function": "function/presamlresponse"}
    status, body = await gateway.zitadel(tenant, call)
    assert status == 200
    assert body == {
        "forwardedStatusCode": 403,
        "forwardedErrorMessage": "SAML is off for mini@mouse.com",
    }
    # the secrets read back masked
    shown = await AdminClient(nc, actor="ops").call(tenant, "ingress.show")
    assert shown["ingress"]["zitadel"]["secrets"] == ["********", "********"]
    assert KEY not in json.dumps(shown)


async def test_the_guides_signed_call_runs_as_written(
    gateway: Gateway, nc: NATS, tenant: str
) -> None:
    """docs/integrations/zitadel.md's "Try a call": its shell block, run with bash, openssl
    and curl against a gateway, gets the slot's claims; with another key, 401."""
    await apply(nc, tenant, TENANT_FILE)
    guide = (ROOT / "docs" / "integrations" / "zitadel.md").read_text()
    start = guide.index("```bash\n", guide.index("## Try a call")) + 8
    block = guide[start : guide.index("```", start)]

    async def run(key: str) -> str:
        env = {**os.environ, "GATEWAY": gateway.url, "TENANT": tenant, "KEY": key}
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-e", "-c", block + "\necho; echo status $?"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    answer = json.loads((await run(KEY)).splitlines()[0])
    assert answer == {
        "append_claims": [
            {"key": "mail", "value": "ann@acme.com"},
            {"key": "name", "value": "Ann Lee"},
        ]
    }
    refused = json.loads((await run("not-the-key")).splitlines()[0])
    assert "append_claims" not in refused
    assert "signature" in json.dumps(refused).lower(), refused


async def test_zitadel_user_creation_and_events(gateway: Gateway, nc: NATS, tenant: str) -> None:
    await apply(nc, tenant, TENANT_FILE)
    method = "/zitadel.user.v2.UserService/AddHumanUser"
    message = {
        "username": "daisy",
        "organization": {"orgId": "o1"},
        "profile": {"givenName": "Daisy", "familyName": "Duck"},
        "email": {"email": "daisy@duck.example", "isVerified": False},
    }
    call = {"fullMethod": method, "instanceID": "i1", "orgID": "o1", "request": message}
    status, body = await gateway.zitadel(tenant, call)
    assert status == 200, body
    # the request message, changed by the action's user updates and metadata
    assert body["profile"] == {"givenName": "DAISY", "familyName": "Duck"}
    assert body["metadata"] == [{"key": "source", "value": b64("signup")}]
    assert body["email"] == message["email"]
    blocked = {**message, "email": {"email": "x@blocked.example"}}
    status, body = await gateway.zitadel(tenant, {**call, "request": blocked})
    assert (status, body["forwardedStatusCode"]) == (200, 403)
    assert body["forwardedErrorMessage"] == "that domain may not sign up"
    # the response execution: answered with the response unchanged
    response = {"userId": "u-daisy", "details": {"sequence": "7"}}
    status, body = await gateway.zitadel(tenant, {**call, "response": response})
    assert (status, body) == (200, response)
    # an event execution: answered at once, kept in the audit stream
    event = {
        "aggregateID": "u-daisy",
        "aggregateType": "user",
        "resourceOwner": "o1",
        "instanceID": "i1",
        "version": "v2",
        "sequence": 3,
        "event_type": "user.human.added",
        "created_at": "2026-12-02T10:00:00Z",
        "userID": "admin",
        "event_payload": {"userName": "daisy"},
    }
    status, body = await gateway.zitadel(tenant, event)
    assert (status, body) == (200, {})
    events = await audit_events(nc, tenant, "ingress.event_received")
    assert [e["details"]["event"]["event_type"] for e in events] == ["user.human.added"]


async def test_hostile_calls_are_refused_and_audited(
    gateway: Gateway, nc: NATS, tenant: str
) -> None:
    await apply(nc, tenant, TENANT_FILE)
    raw = json.dumps(USERINFO_CALL).encode()
    path = f"/zitadel/{tenant}"
    refused = [
        await gateway.post(path, raw, signed(raw, key="not-the-key-at-all")),
        await gateway.post(path, raw, signed(raw, at=int(time.time()) - 600)),  # old
        await gateway.post(path, raw, {"Content-Type": "application/json"}),  # unsigned
        await gateway.post(path, raw + b" ", signed(raw)),  # body changed after signing
        await gateway.post(f"/zitadel/{tenant}-nobody", raw, signed(raw)),  # unknown tenant
        await gateway.post(path, b"{not json", signed(b"{not json")),
        await gateway.post(path, b"[1, 2]", signed(b"[1, 2]")),
        await gateway.post(path, b"x" * 70_000, signed(b"x" * 70_000)),  # over the limit
        await gateway.zitadel(tenant, {"function": "function/nothing"}),
        await gateway.post("/zitadel/Not_A_Slug", raw, signed(raw)),
        await gateway.post(f"/okta/{tenant}/token", {"data": {}}, {"Authorization": "wrong"}),
        await gateway.post(f"/kratos/{tenant}/x/y", {}, {"Authorization": KRATOS_KEY}),
    ]
    statuses = [s for s, _ in refused]
    assert statuses == [401, 401, 401, 401, 401, 400, 400, 413, 400, 404, 401, 404], refused
    # each says why: {"error"}, or on the Kratos route Kratos's own messages
    assert all(isinstance(b, dict) and (b.get("error") or b.get("messages")) for _, b in refused)
    # an unauthenticated caller reads one reason for all, whatever the tenant has
    assert {b["error"] for s, b in refused if s == 401} == {
        "the call's signature or key is not accepted"
    }
    # still serving
    status, body = await gateway.zitadel(tenant, USERINFO_CALL)
    assert status == 200, body
    assert body["append_claims"], body
    # request metrics per route and outcome
    async with gateway.session.get(gateway.url + "/metrics") as r:
        lines = (await r.text()).splitlines()
    counts = {
        line.split("{", 1)[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("gatehook_gateway_requests_total{")
    }
    assert counts['outcome="refused",route="zitadel"'] == 10, counts
    assert counts['outcome="continue",route="zitadel"'] == 1, counts
    assert counts['outcome="refused",route="okta.token"'] == 1, counts
    assert counts['outcome="refused",route="kratos"'] == 1, counts

    async def audited() -> list[dict[str, Any]]:
        return await audit_events(nc, tenant, "ingress.refused")

    deadline = time.monotonic() + 10
    events = await audited()
    while len(events) < 9 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        events = await audited()
    reasons = [e["error"] for e in events]
    assert any("no signature matches" in r for r in reasons), reasons
    assert any("outside 300 s" in r for r in reasons), reasons
    assert any("no ZITADEL-Signature header" in r for r in reasons), reasons
    assert any("not JSON" in r for r in reasons), reasons
    assert any("too large" in r for r in reasons), reasons
    assert any("Authorization: not a configured key" in r for r in reasons), reasons
    assert all(e["actor"].startswith("gateway:") for e in events)


KRATOS_IDENTITY = {
    "id": "9f425a8d-7efc-4768-8f23-7647a74fdf13",
    "schema_id": "default",
    "state": "active",
    "traits": {"email": "ory@example.org", "name": {"first": "ory", "last": "kratos"}},
    "verifiable_addresses": [
        {"value": "ory@example.org", "verified": True, "via": "email", "status": "completed"}
    ],
    "metadata_public": {"plan": "free"},
}


def kratos_call(identity: dict[str, Any] | None) -> dict[str, Any]:
    """The body the Jsonnet template of docs/integrations/kratos.md renders."""
    return {
        "flow": {"id": "0b0a7ff8-1f5b-4b3f-86ee-f8d4bcb4b3a8", "type": "browser"},
        "identity": identity,
        "request_headers": {"User-Agent": ["Mozilla/5.0"], "X-Forwarded-For": ["203.0.113.9"]},
        "request_url": "https://auth.example.org/self-service/registration?flow=0b0a",
        "request_method": "POST",
    }


async def test_kratos_interrupt_and_parse(gateway: Gateway, nc: NATS, tenant: str) -> None:
    await apply(nc, tenant, TENANT_FILE)
    path = f"/kratos/{tenant}/internal_authentication/pre_creation"
    auth = {"Authorization": KRATOS_KEY}
    status, body = await gateway.post(path, kratos_call(KRATOS_IDENTITY), auth)
    assert status == 200, body  # response.parse: the identity with the action's changes
    assert body["identity"]["traits"] == {
        "email": "ory@example.org",
        "name": {"first": "ORY", "last": "kratos"},
    }
    assert body["identity"]["metadata_public"] == {"plan": "free", "source": "signup"}
    blocked = {**KRATOS_IDENTITY, "traits": {"email": "eve@blocked.example", "name": {}}}
    blocked["traits"]["name"] = {"first": "eve"}
    status, body = await gateway.post(path, kratos_call(blocked), auth)
    assert status == 403  # can_interrupt: Kratos's messages format
    message = body["messages"][0]["messages"][0]
    assert message["type"] == "error"
    assert message["text"] == "that domain may not sign up"
    assert body["messages"][0]["instance_ptr"] == "#/"
    # a before hook (no identity) that changes nothing answers 204
    status, body = await gateway.post(
        f"/kratos/{tenant}/complement_token/pre_access_token_creation",
        kratos_call(None),
        {"Authorization": f"Bearer {KRATOS_KEY}"},
    )
    assert (status, body) == (204, None)


OKTA_TOKEN_CALL: dict[str, Any] = {
    "source": "https://dev.okta.com/oauth2/default/v1/authorize",
    "eventId": "3OWo4oo-QQ-rBWfRyTmQYw",
    "eventTime": "2026-12-02T10:00:00.000Z",
    "eventTypeVersion": "1.0",
    "cloudEventVersion": "0.1",
    "contentType": "application/json",
    "eventType": "com.okta.oauth2.tokens.transform",
    "data": {
        "context": {
            "request": {"id": "reqv", "method": "GET", "ipAddress": "203.0.113.5"},
            "protocol": {
                "type": "OAUTH2.0",
                "request": {"scope": "openid profile", "client_id": "0oabc"},
                "client": {"id": "0oabc", "name": "web", "type": "PUBLIC"},
            },
            "session": {"id": "102Qoe7t5PcRnSxr8j3I8I6pA", "userId": "00uq8"},
            "user": {
                "id": "00uq8",
                "profile": {
                    "login": "john.doe@example.com",
                    "firstName": "John",
                    "lastName": "Doe",
                    "locale": "en_US",
                },
            },
        },
        "identity": {"claims": {"sub": "00uq8", "name": "John Doe"}, "token": {}},
        "access": {"claims": {"sub": "john.doe@example.com", "mail": "x"}, "token": {}},
    },
}


async def test_okta_token_and_registration(gateway: Gateway, nc: NATS, tenant: str) -> None:
    both = {
        "pre_userinfo_creation": ["token@latest"],
        "pre_access_token_creation": ["token@latest"],
    }
    await apply(
        nc, tenant, {**TENANT_FILE, "flows": {**TENANT_FILE["flows"], "complement_token": both}}
    )
    auth = {"Authorization": OKTA_KEY}
    status, body = await gateway.post(f"/okta/{tenant}/token", OKTA_TOKEN_CALL, auth)
    assert status == 200, body
    commands = {c["type"]: c["value"] for c in body["commands"]}
    # pre_userinfo_creation's claims patch the ID token, pre_access_token_creation's the
    # access token ("mail" exists there: replaced)
    assert commands["com.okta.access.patch"] == [
        {"op": "replace", "path": "/claims/mail", "value": "john.doe@example.com"},
        {"op": "add", "path": "/claims/name", "value": "John Doe"},
    ]
    assert commands["com.okta.identity.patch"] == [
        {"op": "add", "path": "/claims/mail", "value": "john.doe@example.com"},
        {"op": "replace", "path": "/claims/name", "value": "John Doe"},
    ]
    registration = {
        "eventType": "com.okta.user.pre-registration",
        "eventTypeVersion": "1.0",
        "data": {
            "context": {"request": {"ipAddress": "203.0.113.5"}},
            "userProfile": {
                "firstName": "Rosario",
                "lastName": "Jones",
                "login": "rosario.jones@example.com",
                "email": "rosario.jones@example.com",
            },
            "action": "ALLOW",
        },
    }
    status, body = await gateway.post(f"/okta/{tenant}/registration", registration, auth)
    assert status == 200, body
    assert body["commands"] == [
        {"type": "com.okta.action.update", "value": {"registration": "ALLOW"}},
        {
            "type": "com.okta.user.profile.update",
            "value": {"firstName": "ROSARIO", "source": "signup"},
        },
    ]
    registration["data"]["userProfile"]["email"] = "eve@blocked.example"
    status, body = await gateway.post(f"/okta/{tenant}/registration", registration, auth)
    assert status == 200
    assert body["commands"] == [
        {"type": "com.okta.action.update", "value": {"registration": "DENY"}}
    ]
    assert body["error"]["errorSummary"] == "that domain may not sign up"
    assert body["error"]["errorCauses"][0]["reason"] == "domain"


@pytest.fixture
async def own_nats() -> AsyncIterator[str]:
    server = start_nats()
    yield server.url
    server.stop()


async def test_a_slow_worker_is_answered_by_the_routes_deadline(own_nats: str) -> None:
    """A worker that takes the secrets request but never decides: every route answers in
    its provider's error shape by its deadline."""
    nc = await nats.connect(own_nats)
    secrets = {"zitadel": KEY, "okta": OKTA_KEY, "kratos": KRATOS_KEY}

    async def keys(msg: Msg) -> None:
        provider = json.loads(msg.data)["provider"]
        result = {"configured": True, "secrets": [secrets[provider]], "header": "Authorization"}
        await msg.respond(json.dumps({"ok": True, "result": result}).encode())

    async def hold(msg: Msg) -> None:
        await asyncio.sleep(5)  # a decision that comes too late

    await nc.subscribe("gatehook.v1.ingress.slow.keys", cb=keys)
    await nc.subscribe("gatehook.v1.trigger.slow.>", cb=hold)
    await nc.flush()
    gw, close = await start_gateway(
        own_nats,
        GatewaySettings(zitadel_deadline_ms=400, okta_deadline_ms=400, kratos_deadline_ms=400),
    )
    try:
        started = time.monotonic()
        status, body = await gw.zitadel("slow", USERINFO_CALL)
        assert (status, body) == (503, {"error": "no decision within the route's deadline"})
        status, body = await gw.post(
            "/okta/slow/token", OKTA_TOKEN_CALL, {"Authorization": OKTA_KEY}
        )
        assert status == 200, body
        assert "deadline" in body["error"]["errorSummary"], body
        status, body = await gw.post(
            "/kratos/slow/internal_authentication/pre_creation",
            kratos_call(KRATOS_IDENTITY),
            {"Authorization": KRATOS_KEY},
        )
        assert status == 424  # a 4xx Kratos does not retry (docs/integrations/kratos.md)
        assert "deadline" in body["messages"][0]["messages"][0]["text"]
        # three calls, each held to its 400 ms deadline, not to the worker's 5 s
        assert time.monotonic() - started < 4.5
    finally:
        await close()
        await nc.drain()
