"""Auth0 Actions run unchanged: ``exports.onExecutePostLogin(event, api)`` and the other
handlers, published and attached through the management API, triggered over NATS as a login
service does; Auth0's ``event`` built from the request, its ``api`` calls in the reply."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.errors import ValidationFailed
from gatehook.settings import Settings
from tests.support.processes import cli
from tests.support.tenants import request, trigger
from tests.support.workers import Worker

PA = {"flow_type": "external_authentication", "trigger": "post_authentication"}


@pytest.fixture
def api(nc: NATS) -> AdminClient:
    return AdminClient(nc, actor="alice", timeout=60)


async def _attach(
    api: AdminClient,
    tenant: str,
    name: str,
    source: str,
    flow_type: str = "external_authentication",
    trigger_name: str = "post_authentication",
    **options: Any,
) -> dict[str, Any]:
    await api.call(tenant, "actions.create", name=name)
    published = await api.call(tenant, "actions.publish", name=name, source=source, **options)
    await api.call(
        tenant,
        "flows.attach",
        flow_type=flow_type,
        trigger=trigger_name,
        action=name,
        version=published["version"]["version"],
    )
    version: dict[str, Any] = published["version"]
    return version


def post_login(body: str) -> str:
    return f"exports.onExecutePostLogin = async (event, api) => {{\n{body}\n}};"


async def test_event_is_the_request_as_auth0_shapes_it(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    """Every field of the request where Auth0 puts it: user (plus user_id), request, each key
    of context at the top of event, client_id from the application, the tenant, secrets."""
    version = await _attach(
        api,
        tenant,
        "echo",
        post_login("api.idToken.setCustomClaim('event', event);"),
        secrets={"API_KEY": "k-123", "REGION": "eu"},
    )
    assert version["style"] == "auth0"
    assert version["exports"] == ["onExecutePostLogin"]
    assert version["secrets"] == {"API_KEY": "********", "REGION": "********"}  # read back masked
    context = {
        "connection": {"id": "con_1", "name": "Username-Password", "strategy": "auth0"},
        "organization": {"id": "org_1", "name": "acme", "display_name": "Acme", "metadata": {}},
        "authentication": {"methods": [{"name": "pwd", "timestamp": "2026-12-02T10:00:00Z"}]},
        "authorization": {"roles": ["admin", "staff"]},
        "transaction": {"protocol": "oidc-basic-profile", "requested_scopes": ["openid"]},
        "stats": {"logins_count": 7},
        "session": {"id": "sess_1"},
    }
    body = request(
        user={
            "id": "auth0|u1",
            "email": "ann@acme.com",
            "email_verified": True,
            "name": "Ann",
            "app_metadata": {"plan": "gold"},
            "multifactor": ["guardian"],
        },
        request={
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0",
            "application_id": "client-abc",
            "geoip": {"countryCode": "DE", "cityName": "Berlin"},
            "hostname": "login.acme.com",
            "query": {"scope": "openid profile"},
            "language": "de",
        },
        context=context,
    )
    reply = await trigger(nc, tenant, body)
    assert reply["decision"] == "continue", reply
    event = reply["claims"]["event"]
    user = event["user"]
    assert user["user_id"] == user["id"] == "auth0|u1"
    assert (user["email"], user["email_verified"], user["name"]) == ("ann@acme.com", True, "Ann")
    assert user["app_metadata"] == {"plan": "gold"}
    assert user["user_metadata"] == {}  # absent: an empty object, as Auth0 gives
    assert user["multifactor"] == ["guardian"]
    req = event["request"]
    assert (req["ip"], req["user_agent"], req["hostname"], req["language"]) == (
        "203.0.113.7",
        "Mozilla/5.0",
        "login.acme.com",
        "de",
    )
    assert req["geoip"] == {"countryCode": "DE", "cityName": "Berlin"}
    assert req["query"] == {"scope": "openid profile"}
    for key, value in context.items():
        assert event[key] == value, key
    assert event["client"] == {"client_id": "client-abc"}
    assert event["tenant"] == {"id": tenant}
    assert event["secrets"] == {"API_KEY": "k-123", "REGION": "eu"}

    # a client the login service sends keeps its own client_id
    body = request(request={"application_id": "app"}, context={"client": {"client_id": "c2"}})
    assert (await trigger(nc, tenant, body))["claims"]["event"]["client"] == {"client_id": "c2"}


async def test_post_login_api_maps_to_the_reply(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    await _attach(
        api,
        tenant,
        "tokens",
        post_login(
            "api.idToken.setCustomClaim('https://acme.com/roles', event.authorization.roles);\n"
            "api.accessToken.setCustomClaim('https://acme.com/tier', 'gold');\n"
            "api.accessToken.addScope('read:reports');\n"
            "api.accessToken.addScope('write:reports');\n"
            "api.accessToken.removeScope('write:reports');\n"
            "api.accessToken.removeScope('admin');\n"
            "api.user.setAppMetadata('plan', 'gold');\n"
            "api.user.setUserMetadata('lang', 'de');\n"
            "api.user.setUserMetadata('stale', null);"
        ),
    )
    await _attach(
        api,
        tenant,
        "more",
        post_login(
            "const r = api.user.setAppMetadata('seen', 2);\n"
            "if (r !== api) throw new Error('the api is not returned for chaining');"
        ),
    )
    reply = await trigger(nc, tenant, request(context={"authorization": {"roles": ["admin"]}}))
    assert reply["decision"] == "continue", reply
    assert reply["claims"] == {"https://acme.com/roles": ["admin"]}
    assert reply["access_token_claims"] == {"https://acme.com/tier": "gold"}
    assert reply["access_token_scopes"] == {
        "add": ["read:reports"],
        "remove": ["write:reports", "admin"],
    }
    # merged per key over both actions; null deletes the key
    assert reply["user_updates"] == {
        "app_metadata": {"plan": "gold", "seen": 2},
        "user_metadata": {"lang": "de", "stale": None},
    }
    assert reply["mfa"] is None


async def test_deny_blocks_and_stops_later_actions_not_its_own_handler(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    await _attach(
        api,
        tenant,
        "gate",
        post_login(
            "if (event.request.geoip.countryCode === 'XX') api.access.deny('No sign-ins from here');\n"
            "await Promise.resolve();\n"
            "console.log('the handler ran on after deny');\n"
            "api.idToken.setCustomClaim('after', true);"
        ),
    )
    await _attach(api, tenant, "later", post_login("api.idToken.setCustomClaim('later', 1);"))
    blocked = await trigger(nc, tenant, request(request={"geoip": {"countryCode": "XX"}}))
    assert blocked["decision"] == "block", blocked
    assert (blocked["reason"], blocked["message"]) == ("access_denied", "No sign-ins from here")
    assert [a["outcome"] for a in blocked["actions"]] == ["block", "skipped"]
    assert blocked["claims"] == {}  # a block carries no mutations
    tried = await api.call(
        tenant,
        "actions.test",
        name="gate",
        version="1.0.0",
        request=request(request={"geoip": {"countryCode": "XX"}}),
        **PA,
    )
    assert "info: the handler ran on after deny" in tried["logs"]
    assert tried["output"]["claims"] == {"after": True}
    ok = await trigger(nc, tenant, request(request={"geoip": {"countryCode": "DE"}}))
    assert ok["decision"] == "continue"
    assert ok["claims"] == {"after": True, "later": 1}


async def test_mfa_and_redirect(worker: Worker, nc: NATS, api: AdminClient, tenant: str) -> None:
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "enable": (
            "api.multifactor.enable('duo', {allowRememberBrowser: true,"
            " providerOptions: {host: 'api-x.duosecurity.com'}});",
            {
                "mode": "enable",
                "provider": "duo",
                "allow_remember_browser": True,
                "provider_options": {"host": "api-x.duosecurity.com"},
                "factors": [],
                "any": False,
            },
        ),
        "challenge": (
            "api.authentication.challengeWith({type: 'otp'},"
            " {additionalFactors: [{type: 'phone', options: {preferredMethod: 'sms'}}]});",
            {
                "mode": "challenge",
                "factors": [
                    {"type": "otp"},
                    {"type": "phone", "options": {"preferredMethod": "sms"}},
                ],
                "any": False,
            },
        ),
        "challenge_any": (
            "api.authentication.challengeWithAny([{type: 'otp'}, {type: 'email'}]);",
            {"mode": "challenge", "factors": [{"type": "otp"}, {"type": "email"}], "any": True},
        ),
        "enroll": (
            "api.authentication.enrollWith({type: 'webauthn-roaming'});",
            {"mode": "enroll", "factors": [{"type": "webauthn-roaming"}], "any": False},
        ),
        "enroll_any": (
            "api.authentication.enrollWithAny([{type: 'otp'}, {type: 'push-notification'}]);",
            {
                "mode": "enroll",
                "factors": [{"type": "otp"}, {"type": "push-notification"}],
                "any": True,
            },
        ),
    }
    for name, (call, want) in cases.items():
        other = f"{tenant}-{name.replace('_', '-')}"
        await _attach(api, other, "mfa", post_login(call))
        reply = await trigger(nc, other, request())
        assert reply["decision"] == "demand_mfa", (name, reply)
        assert reply["reason"] == "mfa_required"
        for key, value in want.items():
            assert reply["mfa"][key] == value, (name, key, reply["mfa"])

    await _attach(
        api,
        tenant,
        "away",
        post_login(
            "api.redirect.sendUserTo('https://verify.acme.com/start?x=1',"
            " {query: {state: event.transaction.state, lang: 'de fr'}});"
        ),
    )
    reply = await trigger(nc, tenant, request(context={"transaction": {"state": "s/1"}}))
    assert reply["decision"] == "redirect", reply
    assert reply["redirect_url"] == "https://verify.acme.com/start?x=1&state=s%2F1&lang=de%20fr"


async def test_saml_attributes_at_the_saml_response(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    """The shape of Auth0's saml-attribute-mapping template: the user's id and email as
    claims of the assertion; a list stays a list, null removes."""
    await _attach(
        api,
        tenant,
        "saml",
        post_login(
            "api.samlResponse.setAttribute("
            "'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier',"
            " event.user.user_id);\n"
            "if (event.user.email) api.samlResponse.setAttribute("
            "'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress',"
            " event.user.email);\n"
            "api.samlResponse.setAttribute('groups', ['a', 'b']);\n"
            "api.samlResponse.setAttribute('gone', 'x');\n"
            "api.samlResponse.setAttribute('gone', null);"
        ),
        flow_type="customize_saml_response",
        trigger_name="pre_saml_response",
    )
    reply = await trigger(nc, tenant, request(), "customize_saml_response", "pre_saml_response")
    assert reply["saml_attributes"] == {
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier": ["u1"],
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": ["ann@acme.com"],
        "groups": ["a", "b"],
    }


async def test_pre_user_registration_and_credentials_exchange(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    """The shapes of Auth0's simple-domain-allowlist (pre-user-registration) and
    ip-address-allowlist (credentials exchange) templates, their lists in secrets."""
    await _attach(
        api,
        tenant,
        "domains",
        "exports.onExecutePreUserRegistration = async (event, api) => {\n"
        "  const domains = event.secrets.ALLOWED_DOMAINS.split(',').map((d) => d.trim());\n"
        "  if (!event.user.email) return api.access.deny('invalid_email', 'Email is invalid');\n"
        "  const domain = event.user.email.split('@')[1];\n"
        "  if (!domains.includes(domain))\n"
        "    return api.access.deny('invalid_domain', 'Email domain is prohibited');\n"
        "  if (event.user.username === 'root') return api.validation.error('bad_username', 'No.');\n"
        "  api.user.setUserMetadata('source', 'signup');\n"
        "};",
        trigger_name="pre_creation",
        secrets={"ALLOWED_DOMAINS": "acme.com, example.org"},
    )

    async def signup(**user: Any) -> dict[str, Any]:
        return await trigger(nc, tenant, request(user=user), trigger_name="pre_creation")

    denied = await signup(email="eve@evil.test")
    assert (denied["decision"], denied["reason"], denied["message"]) == (
        "block",
        "access_denied",
        "Email domain is prohibited",
    )
    invalid = await signup(email="root@acme.com", username="root")
    assert (invalid["decision"], invalid["reason"], invalid["message"]) == (
        "block",
        "bad_username",
        "No.",
    )
    ok = await signup(email="ann@example.org")
    assert ok["decision"] == "continue", ok
    assert ok["user_updates"] == {"user_metadata": {"source": "signup"}}

    ce = await _attach(
        api,
        tenant,
        "ips",
        "exports.onExecuteCredentialsExchange = async (event, api) => {\n"
        "  const ips = event.secrets.ALLOW_LIST?.split(',');\n"
        "  if (!ips) return api.access.deny('server_error', 'Invalid configuration');\n"
        "  if (!ips.includes(event.request.ip))\n"
        "    return api.access.deny('invalid_request', 'Access denied for this IP address');\n"
        "  api.accessToken.setCustomClaim('https://acme.com/m2m', true);\n"
        "};",
        flow_type="complement_token",
        trigger_name="pre_access_token_creation",
        secrets={"ALLOW_LIST": "198.51.100.1,198.51.100.2"},
    )
    assert ce["exports"] == ["onExecuteCredentialsExchange"]

    async def token(ip: str) -> dict[str, Any]:
        body = request(
            request={"ip": ip}, context={"transaction": {"protocol": "oauth2-client-credentials"}}
        )
        return await trigger(nc, tenant, body, "complement_token", "pre_access_token_creation")

    refused = await token("203.0.113.9")
    assert (refused["decision"], refused["reason"], refused["message"]) == (
        "block",
        "invalid_request",
        "Access denied for this IP address",
    )
    allowed = await token("198.51.100.2")
    assert allowed["decision"] == "continue", allowed
    assert allowed["access_token_claims"] == {"https://acme.com/m2m": True}


async def test_the_exports_decide_where_it_attaches_and_gaps_are_named(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    await api.call(tenant, "actions.create", name="login")
    await api.call(
        tenant, "actions.publish", name="login", source=post_login("api.prompt.render('consent');")
    )
    with pytest.raises(ValidationFailed) as info:
        await api.call(
            tenant,
            "flows.attach",
            flow_type="external_authentication",
            trigger="pre_creation",
            action="login",
            version="1.0.0",
        )
    assert "cannot run at pre_creation" in str(info.value)
    assert "compatible: post_authentication, pre_userinfo_creation" in str(info.value)

    # an api member gatehook lacks is an action error that names it
    await api.call(tenant, "flows.attach", action="login", version="1.0.0", **PA)
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "block"
    assert reply["reason"] == "action_error"
    assert "api.prompt is not supported by gatehook" in reply["message"]

    # an npm package is refused at publish, by name
    await api.call(tenant, "actions.create", name="npm")
    with pytest.raises(ValidationFailed) as info:
        await api.call(
            tenant,
            "actions.publish",
            name="npm",
            source="const axios = require('axios');\n" + post_login(""),
        )
    assert "requires 'axios' (line 1, column 15): npm packages are not supported" in str(info.value)

    # changing a secret publishes a new version; the mask keeps the stored value
    await api.call(tenant, "actions.create", name="keyed")
    src = post_login("api.idToken.setCustomClaim('k', event.secrets.K);")
    first = await api.call(tenant, "actions.publish", name="keyed", source=src, secrets={"K": "1"})
    same = await api.call(
        tenant, "actions.publish", name="keyed", source=src, secrets={"K": "********"}
    )
    assert same["created"] is False
    changed = await api.call(
        tenant, "actions.publish", name="keyed", source=src, secrets={"K": "2"}
    )
    assert (first["version"]["version"], changed["version"]["version"]) == ("1.0.0", "1.0.1")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], secret: str) -> str:
    """An HS256 token as the redirect's target makes one (Python's own HMAC)."""
    head = _b64url(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + _b64url(sig)


async def test_redirect_round_trip_through_on_continue_post_login(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    """encodeToken's token checks out with Python's HMAC at the redirect's target; the target
    sends its own token back with the continue request, validateToken reads it in
    onContinuePostLogin; a tampered or expired token fails the action, closed."""
    secret = "shared-secret-of-acme-ü"
    await _attach(
        api,
        tenant,
        "verify",
        "exports.onExecutePostLogin = async (event, api) => {\n"
        "  const token = api.redirect.encodeToken({secret: event.secrets.SECRET,\n"
        "    expiresInSeconds: 120, payload: {email: event.user.email}});\n"
        "  api.redirect.sendUserTo('https://verify.acme.com/start', {query: {session_token: token}});\n"
        "};\n"
        "exports.onContinuePostLogin = async (event, api) => {\n"
        "  const payload = api.redirect.validateToken({secret: event.secrets.SECRET});\n"
        "  api.idToken.setCustomClaim('verified', payload.verified);\n"
        "  api.user.setAppMetadata('verified_at', payload.iat);\n"
        "};",
        secrets={"SECRET": secret},
    )
    first = await trigger(nc, tenant, request())
    assert first["decision"] == "redirect", first
    url = urlsplit(first["redirect_url"])
    assert (url.scheme, url.netloc, url.path) == ("https", "verify.acme.com", "/start")
    token = parse_qs(url.query)["session_token"][0]
    head, body, sig = token.split(".")
    want = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert _b64url(want) == sig  # the sandbox's HMAC-SHA-256 is the standard one
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims["email"] == "ann@acme.com"
    assert (claims["sub"], claims["iss"]) == ("u1", tenant)
    assert claims["exp"] - claims["iat"] == 120

    now = int(time.time())
    # the login service's transaction: the state it sent the browser away with, and got back
    state = "txn-ann-1"

    async def come_back(
        token: str, where: str = "query", user: str = "u1", back_with: str | None = state
    ) -> dict[str, Any]:
        returned: dict[str, Any] = {"session_token": token}
        if back_with is not None:
            returned["state"] = back_with
        body = request(context={"continue": True}, request={where: returned})
        body["user"]["id"] = user
        return await trigger(nc, tenant, body)

    def issued(**claims: Any) -> str:
        """A token as the redirect's target issues it: for the user and the state."""
        return _jwt({"sub": "u1", "state": state, "iat": now, "exp": now + 60, **claims}, secret)

    back = await come_back(issued(verified=True))
    assert back["decision"] == "continue", back
    assert back["claims"] == {"verified": True}
    assert back["user_updates"] == {"app_metadata": {"verified_at": now}}
    posted = await come_back(issued(verified="form"), "body")
    assert posted["claims"] == {"verified": "form"}

    good = issued(verified=True)
    tampered = good.rsplit(".", 1)[0][:-2] + "xx." + good.rsplit(".", 1)[1]
    head, body_part, signature = good.split(".")
    # the last character of a 43-character signature holds 4 bits and 2 unused: changed,
    # the bytes stay the same; a strict decoder refuses the other spelling
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(signature[-1])
    twin = (
        signature[:-1]
        + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 1]
    )
    for bad, why, kwargs in (
        (tampered, "signature is invalid", {}),
        (f"{head}.{body_part}.{twin}", "not base64url", {}),
        (_jwt({"sub": "u1", "state": state, "exp": now + 60}, "another"), "signature is", {}),
        (issued(exp=now - 5), "has expired", {}),
        (issued(nbf=now + 600), "not valid yet", {}),
        (issued(iat=now + 600), "issued in the future", {}),
        ("not-a-token", "not a JWT", {}),
        # a token issued for the attacker's own sign-in does not resume the victim's
        (issued(sub="attacker"), "sub is not this sign-in's user", {}),
        (issued(state="txn-of-the-attacker"), "state is not this sign-in's state", {}),
        (issued(), "sub is not this sign-in's user", {"user": "victim"}),
        (issued(), "carries no state", {"back_with": None}),
        # encodeToken's own token names no state: it is the first leg's, not a way back
        (token, "state is not", {}),
    ):
        reply = await come_back(bad, **kwargs)
        assert reply["decision"] == "block", (why, reply)
        assert reply["reason"] == "action_error"
        assert why in reply["message"], reply["message"]


async def test_cache_is_shared_across_runs_within_auth0s_bounds(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    version = await _attach(
        api,
        tenant,
        "counter",
        post_login(
            "const r = api.cache.get('n');\n"
            "const n = r ? Number(r.value) + 1 : 1;\n"
            "const res = api.cache.set('n', String(n), {ttl: 60000});\n"
            "api.idToken.setCustomClaim('n', n);\n"
            "api.idToken.setCustomClaim('set', res.type);\n"
            "api.idToken.setCustomClaim('read_back', api.cache.get('n').value);\n"
            "api.idToken.setCustomClaim('big', api.cache.set('big', 'x'.repeat(5000)).code);\n"
            "api.idToken.setCustomClaim('past',"
            " api.cache.set('p', 'v', {expires_at: Date.now() - 1}).code);\n"
            "const codes = [];\n"
            "for (let i = 0; i < 20; i++) codes.push(api.cache.set('k' + i, 'v').type);\n"
            "api.idToken.setCustomClaim('codes', codes);\n"
            "if (n === 2) api.cache.delete('n');"
        ),
    )
    assert version["uses_cache"] is True

    async def run_until(n: int) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:  # the writes are stored after the reply: wait for the first to land
            claims: dict[str, Any] = (await trigger(nc, tenant, request()))["claims"]
            if claims["n"] == n or time.monotonic() > deadline:
                return claims
            await asyncio.sleep(0.05)

    first = await trigger(nc, tenant, request())
    claims = first["claims"]
    assert (claims["n"], claims["set"], claims["read_back"]) == (1, "success", "1")
    assert (claims["big"], claims["past"]) == ("CacheValueSizeExceeded", "ItemAlreadyExpired")
    # 'n' and 19 more fit; the twentieth other key is past Auth0's 20 entries
    assert claims["codes"] == ["success"] * 19 + ["error"]
    second = await run_until(2)
    assert second["n"] == 2
    third = await run_until(1)  # the second run deleted it
    assert third["n"] == 1


async def test_a_deploy_cli_export_imports_into_a_file_apply_takes(
    worker: Worker, nc: NATS, settings: Settings, tenant: str, tmp_path: Path
) -> None:
    """An Auth0 Deploy CLI export written by hand (directory format: actions/*.json with
    their code.js, triggers/triggers.json) -> `gatehook import auth0` -> `gatehook apply`."""
    export = tmp_path / "auth0-export"
    (export / "actions" / "Add Roles").mkdir(parents=True)
    (export / "actions" / "Domain allowlist").mkdir(parents=True)
    (export / "actions" / "Phone Hook").mkdir(parents=True)
    (export / "triggers").mkdir()
    (export / "actions" / "Add Roles" / "code.js").write_text(
        post_login(
            "const ns = 'https://acme.com';\n"
            "if (event.authorization) api.idToken.setCustomClaim(`${ns}/roles`,"
            " event.authorization.roles);"
        )
    )
    (export / "actions" / "Domain allowlist" / "code.js").write_text(
        "exports.onExecutePreUserRegistration = async (event, api) => {\n"
        "  const ok = event.secrets.ALLOWED_DOMAINS.split(',');\n"
        "  if (!ok.includes(event.user.email.split('@')[1]))\n"
        "    api.access.deny('invalid_domain', 'Email domain is prohibited');\n"
        "};"
    )
    (export / "actions" / "Phone Hook" / "code.js").write_text(
        "exports.onExecuteSendPhoneMessage = async (event, api) => {};"
    )

    def meta(name: str, trigger_id: str, **extra: Any) -> None:
        body = {
            "name": name,
            "code": f"./actions/{name}/code.js",
            "runtime": "node18",
            "status": "built",
            "dependencies": [],
            "secrets": [],
            "supported_triggers": [{"id": trigger_id, "version": "v3"}],
            "deployed": True,
            **extra,
        }
        (export / "actions" / f"{name}.json").write_text(json.dumps(body, indent=2))

    meta("Add Roles", "post-login")
    meta(
        "Domain allowlist",
        "pre-user-registration",
        secrets=[{"name": "ALLOWED_DOMAINS"}],
        dependencies=[{"name": "lodash", "version": "4.17.21"}],
    )
    meta("Phone Hook", "send-phone-message")
    bound = {
        "post-login": [{"action_name": "Add Roles", "display_name": "Add Roles"}],
        "pre-user-registration": [{"action_name": "Domain allowlist", "display_name": "D"}],
        "send-phone-message": [{"action_name": "Phone Hook", "display_name": "Phone Hook"}],
        "post-change-password": [],
    }
    (export / "triggers" / "triggers.json").write_text(json.dumps(bound))

    out = tmp_path / "tenant.yaml"
    done = await cli(settings, "import", "auth0", str(export), "-o", str(out), "-t", tenant)
    assert "wrote" in done.stdout
    text = out.read_text()
    assert "domain-allowlist: npm dependencies are not supported" in text  # the header says
    assert "lodash@4.17.21" in text
    assert "phone-hook: not imported, no gatehook trigger for send-phone-message" in text
    assert "trigger send-phone-message has no gatehook slot; not bound: Phone Hook" in text
    doc = yaml.safe_load(text)
    assert [a["name"] for a in doc["actions"]] == ["add-roles", "domain-allowlist"]
    assert doc["actions"][1]["secrets"] == {"ALLOWED_DOMAINS": "FILL-ME"}
    assert doc["flows"]["external_authentication"]["post_authentication"] == ["add-roles@latest"]
    assert doc["flows"]["internal_authentication"]["pre_creation"] == ["domain-allowlist@latest"]

    out.write_text(text.replace("FILL-ME", "acme.com"))
    applied = await cli(settings, "apply", "-f", str(out))
    assert "publish add-roles 1.0.0" in applied.stdout, applied.stdout
    body = request(context={"authorization": {"roles": ["admin"]}})
    reply = await trigger(nc, tenant, body)
    assert reply["claims"] == {"https://acme.com/roles": ["admin"]}, reply
    for flow_type in ("external_authentication", "internal_authentication"):
        eve = request(user={"id": "u2", "email": "eve@evil.test"})
        denied = await trigger(nc, tenant, eve, flow_type, "pre_creation")
        assert (denied["decision"], denied["message"]) == ("block", "Email domain is prohibited")
        ann = request(user={"id": "u3", "email": "ann@acme.com"})
        assert (await trigger(nc, tenant, ann, flow_type, "pre_creation"))["decision"] == "continue"

    broken = tmp_path / "not-an-export"
    broken.mkdir()
    refused = await cli(settings, "import", "auth0", str(broken), check=False)
    assert refused.returncode == 2
    assert "no actions/ folder" in refused.stderr


async def test_public_template_shapes_behave_as_auth0_documents(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    """Written after three of Auth0's public templates (opensource-marketplace):
    require-mfa-once-per-session, add-country (namespace from a secret) and email-verified."""
    mfa, country, verified = f"{tenant}-mfa", f"{tenant}-geo", f"{tenant}-ver"
    await _attach(
        api,
        mfa,
        "mfa-once",
        post_login(
            "const methods = event.authentication && event.authentication.methods;\n"
            "if (!Array.isArray(methods) || !methods.find((m) => m.name === 'mfa'))\n"
            "  api.multifactor.enable('any');"
        ),
    )
    fresh = await trigger(
        nc, mfa, request(context={"authentication": {"methods": [{"name": "pwd"}]}})
    )
    assert (fresh["decision"], fresh["mfa"]["provider"]) == ("demand_mfa", "any")
    done = {"authentication": {"methods": [{"name": "pwd"}, {"name": "mfa"}]}}
    assert (await trigger(nc, mfa, request(context=done)))["decision"] == "continue"

    await _attach(
        api,
        country,
        "add-country",
        post_login(
            "let ns = event.secrets.ID_TOKEN_NAMESPACE || '';\n"
            "if (ns && !ns.endsWith('/')) ns += '/';\n"
            "if (event.request.geoip) {\n"
            "  api.idToken.setCustomClaim(ns + 'country', event.request.geoip.countryName);\n"
            "  api.idToken.setCustomClaim(ns + 'timezone', event.request.geoip.timeZone);\n"
            "}"
        ),
        secrets={"ID_TOKEN_NAMESPACE": "https://acme.com"},
    )
    geo = {"geoip": {"countryName": "Germany", "timeZone": "Europe/Berlin"}}
    reply = await trigger(nc, country, request(request=geo))
    assert reply["claims"] == {
        "https://acme.com/country": "Germany",
        "https://acme.com/timezone": "Europe/Berlin",
    }
    assert (await trigger(nc, country, request()))["claims"] == {}  # no geoip: nothing

    await _attach(
        api,
        verified,
        "email-verified",
        post_login(
            "if (!event.user.email_verified)\n"
            "  api.access.deny('Please verify your email before logging in.');"
        ),
    )
    unverified = await trigger(nc, verified, request(user={"id": "u", "email_verified": False}))
    assert (unverified["decision"], unverified["message"]) == (
        "block",
        "Please verify your email before logging in.",
    )
    ok = await trigger(nc, verified, request(user={"id": "u", "email_verified": True}))
    assert ok["decision"] == "continue"
