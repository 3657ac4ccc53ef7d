"""The ten platform templates through a worker over NATS, against real servers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.errors import ValidationFailed
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings, WebhookSettings
from gatehook.storage import MongoStore
from gatehook.templates import default_registry
from tests.support.tenants import request, trigger
from tests.support.workers import Worker, start_worker, stop_worker

PA = {"flow_type": "external_authentication", "trigger": "post_authentication"}
DAY = 86_400  # rate-limit windows of a day keep the tests clear of window boundaries


@pytest.fixture
def api(nc: NATS) -> AdminClient:
    return AdminClient(nc, actor="t", timeout=60)


async def use(
    api: AdminClient,
    tenant: str,
    name: str,
    template: str,
    config: dict[str, Any],
    flow_type: str = "external_authentication",
    trigger_name: str = "post_authentication",
    **options: Any,
) -> None:
    """Create, publish and attach one template action (alone in its slot)."""
    await api.call(tenant, "actions.create", name=name, template=template)
    await api.call(tenant, "actions.publish", name=name, config=config, **options)
    await api.call(tenant, "flows.attach", action=name, flow_type=flow_type, trigger=trigger_name)


def test_all_ten_are_registered() -> None:
    assert default_registry().names() == sorted(
        [
            "domain-allowlist",
            "domain-blocklist",
            "rate-limit-by-ip",
            "rate-limit-by-user",
            "decorate-token",
            "webhook-emit",
            "slack-notify",
            "block-by-risk-score",
            "demand-mfa-by-risk-score",
            "redirect-by-group",
        ]
    )
    for t in default_registry():
        schema = t.config_schema()
        assert schema["type"] == "object", t.name
        for secret in t.secret_fields:
            assert schema["properties"][secret]["writeOnly"] is True


INVALID = [
    ("domain-allowlist", {"domains": []}, "domains"),
    ("domain-blocklist", {"domains": ["a b"]}, "domain"),
    ("rate-limit-by-ip", {"limit": 0}, "limit"),
    ("rate-limit-by-user", {"limit": 5, "by": "email"}, "by"),
    ("decorate-token", {"claims": {"exp": {"value": 1}}}, "reserved"),
    ("decorate-token", {"claims": {"x": {"path": "__import__('os')"}}}, "path"),
    ("webhook-emit", {"url": "http://example.com/hook"}, "https"),
    ("webhook-emit", {"url": "not a url"}, "url"),
    ("slack-notify", {"webhook_url": "http://hooks.slack.com/x"}, "https"),
    ("block-by-risk-score", {"threshold": 2}, "threshold"),
    ("demand-mfa-by-risk-score", {"threshold": 0.5, "when_missing": "maybe"}, "when_missing"),
    ("redirect-by-group", {"rules": [{"group": "g", "url": "javascript:alert(1)"}]}, "https"),
]


@pytest.mark.parametrize(("template", "config", "fragment"), INVALID)
async def test_config_is_validated_when_published(
    worker: Worker,
    api: AdminClient,
    tenant: str,
    template: str,
    config: dict[str, Any],
    fragment: str,
) -> None:
    await api.call(tenant, "actions.create", name="x", template=template)
    with pytest.raises(ValidationFailed, match=fragment):
        await api.call(tenant, "actions.publish", name="x", config=config)
    assert (await api.call(tenant, "actions.show", name="x"))["versions"] == []


async def test_domain_lists(worker: Worker, nc: NATS, api: AdminClient, tenant: str) -> None:
    await use(
        api,
        tenant,
        "allow",
        "domain-allowlist",
        {"domains": ["Acme.com"], "include_subdomains": True, "block_without_email": False},
    )
    cases = {
        "a@acme.com": "continue",
        "a@EU.ACME.COM": "continue",
        "a@notacme.com": "block",
        "a@acme.com.evil.io": "block",
    }
    for email, decision in cases.items():
        reply = await trigger(nc, tenant, request(user={"id": "u", "email": email}))
        assert reply["decision"] == decision, email
    assert (await trigger(nc, tenant, request(user={"id": "u"})))["decision"] == "continue"

    other = tenant + "-b"
    await use(api, other, "deny", "domain-blocklist", {"domains": ["evil.io"], "message": "No."})
    blocked = await trigger(nc, other, request(user={"id": "u", "email": "x@evil.io"}))
    assert (blocked["decision"], blocked["reason"], blocked["message"]) == (
        "block",
        "domain_blocked",
        "No.",
    )
    assert (await trigger(nc, other, request(user={"id": "u", "email": "x@sub.evil.io"})))[
        "decision"
    ] == "continue"
    assert (await trigger(nc, other, request(user={"id": "u"})))["reason"] == "email_required"


async def test_risk_scores(worker: Worker, nc: NATS, api: AdminClient, tenant: str) -> None:
    await use(
        api, tenant, "mfa", "demand-mfa-by-risk-score", {"threshold": 0.5, "when_missing": "act"}
    )
    await use(api, tenant, "blk", "block-by-risk-score", {"threshold": 0.9})

    def req(score: float | None) -> dict[str, Any]:
        return request(request={"ip": "203.0.113.9", "risk_score": score})

    assert (await trigger(nc, tenant, req(0.1)))["decision"] == "continue"
    mfa = await trigger(nc, tenant, req(0.6))
    assert (mfa["decision"], mfa["reason"]) == ("demand_mfa", "risk_elevated")
    assert (await trigger(nc, tenant, req(0.95)))["reason"] == "risk_too_high"
    assert (await trigger(nc, tenant, req(None)))["decision"] == "demand_mfa"  # when_missing=act


async def test_redirect_by_group(worker: Worker, nc: NATS, api: AdminClient, tenant: str) -> None:
    await use(
        api,
        tenant,
        "r",
        "redirect-by-group",
        {
            "rules": [
                {"group": "contractors", "url": "https://acme.com/terms"},
                {"group": "staff", "url": "https://acme.com/welcome"},
            ]
        },
    )
    reply = await trigger(nc, tenant, request(user={"id": "u", "groups": ["staff", "contractors"]}))
    assert (reply["decision"], reply["redirect_url"]) == ("redirect", "https://acme.com/terms")
    reply = await trigger(nc, tenant, request(user={"id": "u", "groups": ["staff"]}))
    assert reply["redirect_url"] == "https://acme.com/welcome"
    assert (await trigger(nc, tenant, request(user={"id": "u", "groups": []})))[
        "decision"
    ] == "continue"
    with pytest.raises(ValidationFailed, match="not compatible"):
        await api.call(
            tenant,
            "flows.attach",
            action="r",
            flow_type="complement_token",
            trigger="pre_access_token_creation",
        )


async def test_decorate_token(worker: Worker, nc: NATS, api: AdminClient, tenant: str) -> None:
    await use(
        api,
        tenant,
        "deco",
        "decorate-token",
        {
            "claims": {
                "email": {"path": "user.email"},
                "tier": {"path": "user.metadata.tier", "default": "basic"},
                "idp": {"path": "context.providerInfo.name"},
                "plan": {"value": "gold"},
            }
        },
        flow_type="complement_token",
        trigger_name="pre_access_token_creation",
    )
    body = request(
        user={"id": "u", "email": "a@acme.com", "metadata": {}},
        context={"providerInfo": {"name": "okta"}},
    )
    reply = await trigger(nc, tenant, body, "complement_token", "pre_access_token_creation")
    assert reply["claims"] == {
        "email": "a@acme.com",
        "tier": "basic",
        "idp": "okta",
        "plan": "gold",
    }


async def test_rate_limit_by_ip_exactly_n_with_two_workers(
    settings: Settings,
    pool: SandboxPool,
    nc: NATS,
    store: MongoStore,
    api: AdminClient,
    tenant: str,
) -> None:
    workers = [await start_worker(settings, pool) for _ in range(2)]
    try:
        # 30 counts at once on one counter: FerretDB (SQLite) serialises them, and on a
        # loaded machine the last waits past the default 1 s; this test counts, not times
        limits = {"limit": 7, "window_s": DAY}
        await use(api, tenant, "rl", "rate-limit-by-ip", limits, timeout_ms=2500)
        bodies = [request(request={"ip": f"2001:db8:1:2::{i:x}"}) for i in range(30)]  # one /64
        replies = await asyncio.gather(*(trigger(nc, tenant, b) for b in bodies))
        passed = [r for r in replies if r["decision"] == "continue"]
        assert len(passed) == 7
        assert {r["reason"] for r in replies if r["decision"] == "block"} == {"rate_limited"}, [
            r["actions"][0]["error"] for r in replies if r["reason"] == "action_error"
        ][:2]
        assert all(w[0].triggers.handled > 0 for w in workers)
        # a retried request id is neither counted again nor answered differently
        again = await asyncio.gather(*(trigger(nc, tenant, b) for b in bodies))
        assert [r["decision"] for r in again] == [r["decision"] for r in replies]
        other_net = await trigger(nc, tenant, request(request={"ip": "2001:db8:1:3::1"}))
        assert other_net["decision"] == "continue"
        # the retry reached the template too (not only the reply store): still one count
        slots = await store.counters.count_documents({"rid": {"$exists": True}})
        assert slots == 7 + 1  # the other /64 took one
    finally:
        for runtime, broker in workers:
            await stop_worker(runtime, broker)


async def test_rate_limit_retries_do_not_use_up_slots(
    worker: Worker, settings: Settings, pool: SandboxPool, nc: NATS, api: AdminClient, tenant: str
) -> None:
    other_runtime, other_broker = await start_worker(settings, pool)
    try:
        await use(api, tenant, "rl", "rate-limit-by-ip", {"limit": 3, "window_s": DAY})
        first = request(request={"ip": "198.51.100.1"})
        assert (await trigger(nc, tenant, first))["decision"] == "continue"
        payload = json.dumps(first).encode()
        for _ in range(3):  # retries that land on another worker run the template again
            again = await other_runtime.triggers.handle(
                tenant, "external_authentication", "post_authentication", payload
            )
            assert json.loads(again)["decision"] == "continue"
        others = [
            await trigger(nc, tenant, request(request={"ip": "198.51.100.1"})) for _ in range(4)
        ]
        assert [r["decision"] for r in others] == ["continue", "continue", "block", "block"]
    finally:
        await stop_worker(other_runtime, other_broker)


async def test_rate_limit_by_user(worker: Worker, nc: NATS, api: AdminClient, tenant: str) -> None:
    await use(
        api, tenant, "rl", "rate-limit-by-user", {"limit": 2, "window_s": DAY, "by": "username"}
    )
    results = [
        await trigger(nc, tenant, request(user={"id": "x", "username": "ann"})) for _ in range(4)
    ]
    assert [r["decision"] for r in results] == ["continue", "continue", "block", "block"]
    assert (await trigger(nc, tenant, request(user={"id": "x", "username": "bob"})))[
        "decision"
    ] == "continue"
    assert (await trigger(nc, tenant, request(user={"id": "x"})))["decision"] == "continue"


# -- webhooks ----------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    hits: list[dict[str, Any]] = field(default_factory=list)
    hang_s: float = 0.0
    event: threading.Event = field(default_factory=threading.Event)


def _serve(https: Path | None = None, hang_s: float = 0.0) -> tuple[ThreadingHTTPServer, Receiver]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            if receiver.hang_s:
                time.sleep(receiver.hang_s)
            receiver.hits.append(
                {
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                    "path": self.path,
                }
            )
            self.send_response(204)
            self.end_headers()
            receiver.event.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if https is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(https / "cert.pem", https / "key.pem")
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    receiver.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    receiver.hang_s = hang_s
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server, r = _serve()
    yield r
    server.shutdown()
    server.server_close()


@pytest.fixture
def cert(tmp_path: Path) -> Path:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path


@pytest.fixture
async def hook_worker(
    settings: Settings, pool: SandboxPool, nc: NATS, store: MongoStore, cert: Path
) -> AsyncIterator[Worker]:
    """A worker allowed to deliver to this machine (the receivers are on 127.0.0.1)."""
    hooks = WebhookSettings(
        allow_private=True, backoff_s=0.05, timeout_ms=1000, ca_file=str(cert / "cert.pem")
    )
    runtime, broker = await start_worker(settings.model_copy(update={"webhooks": hooks}), pool)
    yield Worker(runtime, broker)
    await stop_worker(runtime, broker)


async def wait_for(event: threading.Event, seconds: float = 10) -> None:
    await until(event.is_set, seconds)


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Wait for ``condition`` (polled), failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true in time"
        await asyncio.sleep(0.02)


async def test_webhook_signed_delivery(
    hook_worker: Worker, nc: NATS, api: AdminClient, tenant: str, receiver: Receiver
) -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    await use(
        api,
        tenant,
        "hook",
        "webhook-emit",
        {"url": receiver.url + "/in", "secret": secret, "allow_http": True},
    )
    shown = await api.call(tenant, "actions.show", name="hook")
    assert shown["versions"][0]["config"]["secret"] == "********"  # never shown in clear
    body = request()
    reply = await trigger(nc, tenant, body)
    assert reply["decision"] == "continue"
    await wait_for(receiver.event)
    hit = receiver.hits[0]
    payload = json.loads(hit["body"])
    assert (payload["tenant"], payload["request_id"], payload["user_id"]) == (
        tenant,
        body["request_id"],
        "u1",
    )
    assert payload["trigger"] == "post_authentication"
    h = hit["headers"]
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + hit["body"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == f"v1,{expected}"
    await until(lambda: hook_worker.runtime.delivery.outcomes["delivered"] == 1)
    assert secret not in json.dumps(await api.call(tenant, "actions.show", name="hook"))

    # Publishing the masked value back (what the console's form sends) keeps the secret.
    form = {**shown["versions"][0]["config"], "timeout_ms": 1500}
    again = await api.call(tenant, "actions.publish", name="hook", config=form)
    assert again["version"]["version"] == "1.0.1"
    await api.call(tenant, "flows.update", action="hook", version="1.0.1", **PA)
    await trigger(nc, tenant, request(signin_id="after-edit"))
    await until(lambda: hook_worker.runtime.delivery.outcomes["delivered"] == 2)
    second = receiver.hits[1]
    h = second["headers"]
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + second["body"]
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == f"v1,{expected}"
    await api.call(tenant, "actions.create", name="hook2", template="webhook-emit")
    with pytest.raises(ValidationFailed, match="no stored secret"):
        await api.call(tenant, "actions.publish", name="hook2", config=form)


async def test_dead_endpoint_never_slows_the_signin(
    hook_worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    server, slow = _serve(hang_s=5.0)
    try:
        await use(api, tenant, "bg", "webhook-emit", {"url": slow.url, "allow_http": True})
        started = time.monotonic()
        reply = await trigger(nc, tenant, request())
        assert reply["decision"] == "continue"
        assert time.monotonic() - started < 2.5  # well under the receiver's 5 s hang

        other = tenant + "-blk"
        await use(
            api,
            other,
            "blk",
            "webhook-emit",
            {"url": slow.url, "allow_http": True, "mode": "blocking", "timeout_ms": 300},
        )
        started = time.monotonic()
        reply = await trigger(nc, other, request())
        assert reply["decision"] == "continue"  # a failed blocking delivery does not fail it
        assert time.monotonic() - started < 2.5
        assert hook_worker.runtime.delivery.outcomes["timeout"] == 1, (
            reply,
            hook_worker.runtime.delivery.outcomes,
        )
    finally:
        server.shutdown()
        server.server_close()


async def test_private_address_refused_unless_allowed(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str, receiver: Receiver
) -> None:
    await use(
        api,
        tenant,
        "hook",
        "webhook-emit",
        {"url": receiver.url, "allow_http": True, "mode": "blocking", "timeout_ms": 1000},
    )
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "continue"
    assert worker.runtime.delivery.outcomes["refused"] == 1
    assert receiver.hits == []


async def test_slack_notify(
    hook_worker: Worker, nc: NATS, api: AdminClient, tenant: str, cert: Path
) -> None:
    server, slack = _serve(https=cert)
    try:
        url = slack.url + "/services/T000/B000/XXXX"
        await use(
            api,
            tenant,
            "slack",
            "slack-notify",
            {"webhook_url": url, "channel": "#sec", "username": "gatehook"},
        )
        shown = await api.call(tenant, "actions.show", name="slack")
        assert shown["versions"][0]["config"]["webhook_url"] == "********"
        await trigger(nc, tenant, request())
        await wait_for(slack.event)
        payload = json.loads(slack.hits[0]["body"])
        assert payload["channel"] == "#sec"
        assert payload["username"] == "gatehook"
        assert tenant in payload["text"]
        assert "u1" in payload["text"]
        assert slack.hits[0]["path"] == "/services/T000/B000/XXXX"
    finally:
        server.shutdown()
        server.server_close()
