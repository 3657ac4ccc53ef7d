"""A hostile tenant with its own credentials, and an outsider at the network edge, against
the surfaces docs/security.md lists: each test replays one attack on real servers and shows
it refused (the threat model names the test)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.admin.files import load_yaml
from gatehook.errors import ValidationFailed
from gatehook.settings import GatewaySettings, Settings
from gatehook.storage import MongoStore
from gatehook.transport.gateway import serve_gateway
from tests.support.tenants import audit_events, request, trigger
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
GATEHOOK = str(Path(sys.executable).with_name("gatehook"))
ZITADEL_KEY = "zitadel-signing-key-of-the-threat-tests"
KRATOS_KEY = "kratos-key-of-the-threat-tests"
PA = {"flow_type": "external_authentication", "trigger": "post_authentication"}
CONTINUE = "export function execute() { return {kind: 'continue'}; }"


def _signed(body: bytes, key: str = ZITADEL_KEY) -> dict[str, str]:
    t = int(time.time())
    mac = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "ZITADEL-Signature": f"t={t},v1={mac}"}


class Edge:
    """``gatehook http`` on loopback, and an HTTP client for it."""

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


@pytest.fixture
async def edge(worker: Worker, nc: NATS, settings: Settings, tenant: str) -> AsyncIterator[Edge]:
    """The tenant with a ZITADEL and a Kratos ingress and one action, and the gateway."""
    file = {
        "actions": [{"name": "a", "source": CONTINUE}],
        "flows": {"external_authentication": {"post_authentication": ["a@latest"]}},
        "ingress": {
            "zitadel": {"signing_keys": [ZITADEL_KEY]},
            "kratos": {"api_keys": [KRATOS_KEY]},
        },
    }
    await AdminClient(nc, timeout=60).call(tenant, "apply", file=file)
    gateway_nc = await nats.connect(settings.nats_url)
    stop = asyncio.Event()
    where: list[str] = []
    gw = GatewaySettings(keys_ttl_s=0.5, idle_timeout_s=1.0, kratos_deadline_ms=3000)
    task = asyncio.create_task(
        serve_gateway(gw, gateway_nc, host="127.0.0.1", port=0, stop=stop, started=where.append)
    )
    deadline = time.monotonic() + 30
    while not where:
        assert time.monotonic() < deadline, "the gateway did not start"
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    session = aiohttp.ClientSession()
    try:
        yield Edge(where[0], session)
    finally:
        await session.close()
        stop.set()
        await task
        await gateway_nc.drain()


def _kratos(email: str = "ann@acme.com", **identity: Any) -> dict[str, Any]:
    return {
        "flow": {"id": "f1", "type": "browser"},
        "identity": {"id": "u1", "traits": {"email": email}, **identity},
        "request_headers": {},
    }


ZITADEL_CALL = {
    "function": "function/preuserinfo",
    "userinfo": {"sub": "u1", "email": "ann@acme.com"},
    "user": {"id": "u1", "human": {"email": "ann@acme.com"}},
}


# -- the network edge (gatehook http) -----------------------------------------------------------
async def test_a_signed_zitadel_call_is_answered_again_within_its_tolerance(
    edge: Edge, tenant: str
) -> None:
    """The decision docs/security.md records: ZITADEL's signature has no nonce, and two
    identical calls in one second are legitimate (an app's parallel userinfo calls), so an
    identical signed call within the tolerance is answered again; one outside it is not."""
    raw = json.dumps(ZITADEL_CALL).encode()
    headers = _signed(raw)
    first, _ = await edge.post(f"/zitadel/{tenant}", raw, headers)
    again, _ = await edge.post(f"/zitadel/{tenant}", raw, headers)
    assert (first, again) == (200, 200)
    old = int(time.time()) - 301
    mac = hmac.new(ZITADEL_KEY.encode(), f"{old}.".encode() + raw, hashlib.sha256).hexdigest()
    stale = {"Content-Type": "application/json", "ZITADEL-Signature": f"t={old},v1={mac}"}
    status, body = await edge.post(f"/zitadel/{tenant}", raw, stale)
    assert (status, body) == (401, {"error": "the call's signature or key is not accepted"})


async def test_an_outsider_learns_nothing_of_a_tenants_providers(
    edge: Edge, nc: NATS, tenant: str
) -> None:
    """A made-up tenant, a tenant without the provider, and a wrong key read the same; the
    made-up tenants' flood writes no audit event and leaves the real tenant's budget."""
    for path, key in (
        ("/kratos/no-such-tenant/external_authentication/post_authentication", KRATOS_KEY),
        (f"/kratos/{tenant}/external_authentication/post_authentication", "wrong-key-xxxxxxx"),
    ):
        status, body = await edge.post(path, _kratos(), {"Authorization": key})
        assert status == 401
        # (in Kratos's messages, which Kratos shows: docs/integrations/kratos.md)
        texts = [m["text"] for entry in body["messages"] for m in entry["messages"]]
        assert texts == ["the call's signature or key is not accepted"]
    status, body = await edge.post(f"/okta/{tenant}/token", {}, {"Authorization": "x" * 10})
    assert (status, body) == (401, {"error": "the call's signature or key is not accepted"})
    for i in range(60):  # far past one second's budget (20): made-up tenants cost nothing
        await edge.post(
            f"/kratos/made-up-{i % 3}/external_authentication/post_authentication",
            _kratos(),
            {"Authorization": KRATOS_KEY},
        )
    for _ in range(3):
        await edge.post(
            f"/kratos/{tenant}/external_authentication/post_authentication",
            _kratos(),
            {"Authorization": "another-wrong-key"},
        )
    for made_up in ("no-such-tenant", "made-up-0", "made-up-1"):
        assert await audit_events(nc, made_up) == []

    async def refused() -> list[dict[str, Any]]:
        return await audit_events(nc, tenant, "ingress.refused")

    deadline = time.monotonic() + 30
    while True:  # the gateway audits in the background
        events = await refused()
        if len(events) >= 4 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    # the wrong key and the three after the flood (the okta call: no okta ingress, no event)
    assert len(events) == 4
    assert all("suppressed_before" not in e["details"] for e in events)


async def test_unreadable_input_gets_a_4xx_never_an_internal_error(
    edge: Edge, nc: NATS, tenant: str
) -> None:
    kratos = f"/kratos/{tenant}/external_authentication/post_authentication"
    for header in ("Bearer kéy-é", "ünïcødé"):
        status, _ = await edge.post(kratos, _kratos(), {"Authorization": header})
        assert status == 401
    raw = json.dumps(ZITADEL_CALL).encode()
    status, _ = await edge.post(
        f"/zitadel/{tenant}", raw, {"ZITADEL-Signature": "t=1,v1=é", "Content-Type": "x"}
    )
    assert status == 401
    deep = "[" * 1000 + '"x"' + "]" * 1000  # (as text: Python's own encoder stops at ~1000)
    kratos_body = json.dumps(_kratos(metadata_public={"deep": "DEEP"})).replace('"DEEP"', deep)
    status, body = await edge.post(kratos, kratos_body.encode(), {"Authorization": KRATOS_KEY})
    assert status == 400
    assert "nested deeper" in json.dumps(body)
    # the worker, sent the same by a login service: a bad_request reply, not internal
    trigger_body = json.dumps(request(context={"deep": "DEEP"})).replace('"DEEP"', deep)
    reply = await trigger(nc, tenant, trigger_body.encode())
    assert reply["error"]["code"] == "bad_request"
    fine: Any = "x"
    for _ in range(100):
        fine = {"k": fine}
    assert (await trigger(nc, tenant, request(context={"fine": fine})))["decision"] == "continue"


async def test_idle_and_slow_connections_are_closed(edge: Edge, tenant: str) -> None:
    host, port = edge.url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()

    async def closed_by_server(first: bytes, trickle: bytes = b"") -> float:
        started = loop.time()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(first)
        await writer.drain()
        try:
            while loop.time() - started < 30:
                if trickle:
                    writer.write(trickle)
                    await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout=0.3)
                except TimeoutError:
                    continue
                if not data:
                    return loop.time() - started  # closed by the server
                if trickle:
                    return -1.0  # answered: a trickled body gets its 408
        except ConnectionError:
            return loop.time() - started
        finally:
            writer.close()
        raise AssertionError("the gateway kept the connection open")

    # nothing sent; headers that never end
    assert await closed_by_server(b"") >= 0
    assert await closed_by_server(b"POST /kratos/", b"x") >= 0
    # a body trickled past the route's deadline: refused with 408 by the deadline
    path = f"/kratos/{tenant}/external_authentication/post_authentication"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {KRATOS_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    ).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    answer = b""
    started = loop.time()
    while b"\r\n\r\n" not in answer and loop.time() - started < 30:
        writer.write(b" ")
        await writer.drain()
        try:
            answer += await asyncio.wait_for(reader.read(4096), timeout=0.2)
        except TimeoutError:
            continue
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


async def test_end_users_never_read_a_scripts_internals(
    edge: Edge, nc: NATS, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    failing = "export function execute() { throw new Error('db password is hunter2\\nFAKE LINE'); }"
    api = AdminClient(nc, timeout=60)
    await api.call(tenant, "actions.publish", name="a", source=failing)
    await api.call(tenant, "flows.update", action="a", version="latest", **PA)
    with caplog.at_level(logging.INFO, logger="gatehook.gateway"):
        status, body = await edge.post(
            f"/kratos/{tenant}/external_authentication/post_authentication",
            _kratos(),
            {"Authorization": KRATOS_KEY},
        )
    assert status == 403
    text = json.dumps(body)
    assert "hunter2" not in text
    assert "a sign-in check could not be completed" in text
    # the gateway's log keeps the error on one line: no forged line
    from gatehook.logs import TextFormatter

    formatter = TextFormatter("%(message)s")
    lines = [formatter.format(r) for r in caplog.records if "hunter2" in r.getMessage()]
    assert lines
    assert all("\n" not in line for line in lines)
    assert all("\\nFAKE LINE" in line for line in lines)


# -- a hostile tenant -----------------------------------------------------------------------------
async def test_the_cache_bounds_hold_against_a_script_that_rewrites_them(
    worker: Worker, nc: NATS, store: MongoStore, tenant: str
) -> None:
    """The script hooks Array.prototype.push, so the runtime's own checks let 50 writes of
    never-expiring 4 KB values through: the worker stores Auth0's bounds, no more."""
    source = (
        "exports.onExecutePostLogin = async (event, api) => {\n"
        "  const push = Array.prototype.push;\n"
        "  Array.prototype.push = function (w) {\n"
        "    if (w && w.op === 'set') {\n"
        "      for (let i = 0; i < 50; i++) push.call(this, {op: 'set', key: 'k' + i,\n"
        "        value: 'v'.repeat(4000), expires_at: 9e15});\n"
        "      return this.length;\n"
        "    }\n"
        "    return push.apply(this, arguments);\n"
        "  };\n"
        "  api.cache.set('seed', 'x');\n"
        "};"
    )
    api = AdminClient(nc, timeout=60)
    await api.call(tenant, "actions.create", name="hog")
    await api.call(tenant, "actions.publish", name="hog", source=source)
    await api.call(tenant, "flows.attach", action="hog", **PA)
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "continue", reply
    deadline = time.monotonic() + 30
    entries: dict[str, Any] = {}
    while not entries and time.monotonic() < deadline:
        entries = await store.action_cache(tenant, "hog")  # written after the reply
        await asyncio.sleep(0.05)
    assert 0 < len(entries) <= 20
    latest = (time.time() + 24 * 3600 + 60) * 1000
    assert all(e["expires_at"] <= latest for e in entries.values())


async def test_a_draft_never_reads_stored_secrets(worker: Worker, nc: NATS, tenant: str) -> None:
    api = AdminClient(nc, timeout=60)
    shows = (
        "export function execute(input) {\n"
        "  console.log('secret=' + input.secrets.TOKEN);\n"
        "  return {kind: 'continue', claims: {seen: input.secrets.TOKEN}};\n"
        "}"
    )
    await api.call(tenant, "actions.create", name="s")
    await api.call(tenant, "actions.publish", name="s", source=shows, secrets={"TOKEN": "real-1"})
    seen = len(await audit_events(nc, tenant))
    ran = await api.call(
        tenant,
        "actions.test",
        name="s",
        draft={"source": shows, "secrets": {"TOKEN": "********"}},
        request=request(),
        **PA,
    )
    assert ran["ok"], ran
    assert ran["output"]["claims"] == {"seen": "********"}
    assert all("real-1" not in line for line in ran["logs"])
    # a stored version's test runs with its secrets: that is the operator's own version
    stored = await api.call(tenant, "actions.test", name="s", request=request(), **PA)
    assert stored["output"]["claims"] == {"seen": "real-1"}
    assert len(await audit_events(nc, tenant)) == seen  # tests write no events


async def test_a_config_schema_with_mistyped_limits_is_refused_at_create(
    worker: Worker, nc: NATS, tenant: str
) -> None:
    api = AdminClient(nc, timeout=60)
    for prop, where in (
        ({"type": "integer", "minimum": "zzz"}, "minimum must be a number"),
        ({"type": "string", "maxLength": 1.5}, "maxLength must be a whole number"),
        ({"type": "string", "minimum": 3}, "minimum belongs to integer"),
        ({"type": "integer", "enum": ["a"]}, "enum value 'a' does not fit"),
    ):
        schema = {"type": "object", "properties": {"n": prop}}
        with pytest.raises(ValidationFailed, match=where):
            await api.call(tenant, "actions.create", name="c", config_schema=schema)
    assert await api.call(tenant, "actions.list") == []


def test_a_yaml_alias_bomb_is_refused_at_once() -> None:
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghi":
        bomb += f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    assert len(bomb) < 700
    started = time.monotonic()
    with pytest.raises(ValidationFailed, match="aliases expanded"):
        load_yaml(bomb)
    assert time.monotonic() - started < 5  # (generous: it is linear in the text)
    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


async def _run(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        GATEHOOK,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_imports_and_flows_files_read_only_their_own_folder(
    tmp_path: Path, settings: Settings
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("OPERATOR_PASSWORD=hunter2")
    export = tmp_path / "export"
    (export / "actions" / "steal").mkdir(parents=True)
    (export / "actions" / "steal" / "link.js").symlink_to(outside)
    env = {**os.environ, "GATEHOOK_NATS_URL": settings.nats_url}
    for code in ("/proc/self/environ", "../../secret.txt", "./actions/steal/link.js"):
        (export / "actions" / "steal.json").write_text(
            json.dumps({"name": "steal", "code": code, "supported_triggers": []})
        )
        out_file = tmp_path / "out.yaml"
        rc, out, err = await _run(
            "import", "auth0", str(export), "-t", "acme", "-o", str(out_file), cwd=tmp_path, env=env
        )
        assert rc != 0 or "hunter2" not in out_file.read_text(), (code, out, err)
        if out_file.exists():
            assert "hunter2" not in out_file.read_text()
            assert "PASSWORD" not in out_file.read_text()
            out_file.unlink()
    flows = tmp_path / "flows"
    flows.mkdir()
    for script in ("../secret.txt", "/proc/self/environ"):
        (flows / "tenant.yaml").write_text(
            json.dumps({"tenant": "acme", "actions": [{"name": "x", "file": script}]})
        )
        rc, out, err = await _run(
            "apply", "-f", str(flows / "tenant.yaml"), "--dry-run", cwd=tmp_path, env=env
        )
        assert rc == 2, (out, err)
        assert "outside" in err
        assert "Traceback" not in err


def test_no_credential_in_the_consoles_first_line(settings: Settings, tmp_path: Path) -> None:
    """`gatehook console` says where it serves and which NATS it uses, without the password
    of the user that reaches every tenant's management API."""
    import subprocess

    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    env = {
        **os.environ,
        "GATEHOOK_NATS_URL": "nats://gatehook-console:console-secret@127.0.0.1:1",
        "GATEHOOK_CONSOLE__TOKEN": "a-console-token-of-the-tests-123",
    }
    proc = subprocess.Popen(  # (its first line is written before it connects to NATS)
        [GATEHOOK, "console", "--port", str(free)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
    finally:
        proc.kill()  # (the first line is all this test reads)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert "gatehook console on" in first, first
    assert "console-secret" not in first
    assert "gatehook-console:***@127.0.0.1:1" in first
