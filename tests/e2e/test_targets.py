"""Target actions end to end: a worker calls real HTTP endpoints on loopback, written the way
ZITADEL's public Actions v2 examples are (a Cloudflare-Workers-style module that checks the
ZITADEL-Signature itself with crypto.subtle), served by Node 20 (tests/targets/serve.mjs)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.admin.service import AdminService, Draft
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings, TargetSettings
from tests.support.tenants import attach, audit_events, request, trigger
from tests.support.workers import Worker, start_worker, stop_worker

HERE = Path(__file__).resolve().parents[1] / "targets"
KEY = "s3cr3t-signing-key-for-tests"


class Endpoint:
    """A Node process serving tests/targets/worker.mjs."""

    def __init__(self, key: str) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("the target tests need Node 20 on PATH (apt-get install nodejs)")
        self.proc = subprocess.Popen(
            [node, str(HERE / "serve.mjs"), str(HERE / "worker.mjs")],
            stdout=subprocess.PIPE,
            text=True,
            env={"SIGNING_KEY": key, "PATH": "/usr/bin:/bin"},
        )
        assert self.proc.stdout is not None
        self.port = json.loads(self.proc.stdout.readline())["port"]
        self.base = f"http://127.0.0.1:{self.port}"

    def control(self, **params: str) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        with urllib.request.urlopen(f"{self.base}/control?{query}", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint(KEY)
    yield ep
    ep.stop()


async def target(
    admin: AdminService,
    tenant: str,
    name: str,
    spec: dict[str, Any],
    *,
    timeout_ms: int = 2000,
    allowed_to_fail: bool = False,
) -> str:
    if await admin.store.get_action(tenant, name) is None:
        await admin.create_action(tenant, name, kind="target")
    spec = {"signing_key": KEY, **spec}
    draft = Draft(target=spec, timeout_ms=timeout_ms, allowed_to_fail=allowed_to_fail)
    version, _ = await admin.publish(tenant, name, draft, actor="test")
    return version.version


async def one_target(
    admin: AdminService,
    tenant: str,
    endpoint: Endpoint,
    path: str,
    flow: tuple[str, str] = ("external_authentication", "post_authentication"),
    **options: Any,
) -> None:
    spec = {"endpoint": endpoint.base + path, **options.pop("spec", {})}
    v = await target(admin, tenant, "hook", spec, **options)
    await attach(admin, tenant, [("hook", v)], *flow)


USERINFO = ("complement_token", "pre_userinfo_creation")
ACCESS = ("complement_token", "pre_access_token_creation")
SAML = ("customize_saml_response", "pre_saml_response")


async def test_append_claims(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/claims", ACCESS)
    reply = await trigger(nc, tenant, request(), *ACCESS)
    assert reply["decision"] == "continue", reply
    # ZITADEL's own claim namespace cannot be written by a target
    assert reply["claims"] == {"group": "ADMIN", "tier": {"level": 2}}
    assert reply["actions"][0]["outcome"] == "continue"


async def test_set_user_metadata_is_decoded(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/metadata", USERINFO)
    reply = await trigger(nc, tenant, request(), *USERINFO)
    assert reply["metadata"] == [{"key": "dept", "value": "Engineering"}]


async def test_append_log_claims(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/log", USERINFO)
    reply = await trigger(nc, tenant, request(), *USERINFO)
    assert reply["claims"] == {
        "urn:zitadel:iam:action:function/preuserinfo:log": ["checked by the target", "all good"]
    }


async def test_append_attribute(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/saml", SAML)
    reply = await trigger(nc, tenant, request(), *SAML)
    assert reply["saml_attributes"] == {"department": ["Engineering"]}


async def test_forwarded_status_blocks_with_its_message(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/forbid", ACCESS)
    reply = await trigger(nc, tenant, request(), *ACCESS)
    assert reply["decision"] == "block"
    assert reply["message"] == "not from this network"
    assert reply["claims"] == {}


async def test_echo_of_the_request_changes_nothing(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/echo", ACCESS)
    reply = await trigger(nc, tenant, request(), *ACCESS)
    assert (reply["decision"], reply["claims"], reply["metadata"]) == ("continue", {}, [])


async def test_zitadel_payload_as_the_target_sees_it(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/inspect", SAML)
    body = request(
        context={"org": {"id": "o1", "name": "Acme"}, "userinfo": {"sub": "u1"}},
    )
    body["user"]["metadata"] = {"dept": "Sales", "level": 3}
    body["user"]["grants"] = [{"projectId": "p1", "roles": ["admin"]}]
    seen = (await trigger(nc, tenant, body, *SAML))["claims"]["seen"]
    assert seen["function"] == "function/presamlresponse"
    assert seen["org"] == {"id": "o1", "name": "Acme"}
    assert seen["userinfo"] == {"sub": "u1"}
    assert seen["user"]["id"] == "u1"
    meta = {m["key"]: base64.b64decode(m["value"]).decode() for m in seen["user_metadata"]}
    assert meta == {"dept": "Sales", "level": "3"}
    assert seen["user_grants"] == [{"project_id": "p1", "roles": ["admin"]}]
    other = "tother-" + tenant[1:8]
    await one_target(admin, other, endpoint, "/inspect")  # no ZITADEL function here
    seen = (await trigger(nc, other, request()))["claims"]["seen"]
    assert seen["function"] == "external_authentication.post_authentication"


async def test_gatehook_payload_gets_an_action_output(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/gatehook", spec={"payload": "gatehook"})
    ok = await trigger(nc, tenant, request())
    assert ok["claims"] == {"via": "target", "trigger": "post_authentication"}
    body = request()
    body["user"]["email"] = "eve@evil.example"
    blocked = await trigger(nc, tenant, body)
    assert (blocked["decision"], blocked["reason"]) == ("block", "domain")


async def test_wrong_key_fails_and_allowed_to_fail_decides(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    spec = {"endpoint": endpoint.base + "/claims", "signing_key": "not-the-key"}
    v = await target(admin, tenant, "hook", spec)
    await attach(admin, tenant, [("hook", v)])
    closed = await trigger(nc, tenant, request())
    assert (closed["decision"], closed["reason"]) == ("block", "action_error")
    assert "HTTP 400" in closed["actions"][0]["error"]
    v2 = await target(admin, tenant, "hook", spec, allowed_to_fail=True)
    await attach(admin, tenant, [("hook", v2)])
    opened = await trigger(nc, tenant, request())
    assert opened["decision"] == "continue"
    assert opened["actions"][0]["outcome"] == "error"


async def test_slow_target_is_bounded_by_its_timeout(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/slow", timeout_ms=300, allowed_to_fail=True)
    started = time.monotonic()
    reply = await trigger(nc, tenant, request())
    assert time.monotonic() - started < 2.0  # the target takes 3 s
    assert reply["decision"] == "continue"
    assert "no answer within 300 ms" in reply["actions"][0]["error"]


async def test_redirects_are_not_followed(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/redirect", ACCESS)
    reply = await trigger(nc, tenant, request(), *ACCESS)
    assert (reply["decision"], reply["reason"]) == ("block", "action_error")
    assert "answered HTTP 302" in reply["actions"][0]["error"]
    assert reply["claims"] == {}  # /claims was not fetched


async def test_oversized_body_is_refused(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/big")
    reply = await trigger(nc, tenant, request())
    assert (reply["decision"], reply["reason"]) == ("block", "action_error")
    assert "larger than 262144 bytes" in reply["actions"][0]["error"]
    assert "pad" not in json.dumps(reply["claims"])


async def test_private_address_is_refused_unless_allowed(
    settings: Settings,
    pool: SandboxPool,
    nc: NATS,
    admin: AdminService,
    tenant: str,
    endpoint: Endpoint,
) -> None:
    strict = settings.model_copy(update={"targets": TargetSettings(allow_private=False)})
    runtime, broker = await start_worker(strict, pool)
    try:
        for host in ("127.0.0.1", "localhost"):  # a literal, and a name resolving to loopback
            url = f"http://{host}:{endpoint.port}/claims"
            v = await target(admin, tenant, "hook", {"endpoint": url})
            await attach(admin, tenant, [("hook", v)])
            reply = await trigger(nc, tenant, request())
            assert reply["decision"] == "block", reply
            assert "refused address" in reply["actions"][0]["error"]
    finally:
        await stop_worker(runtime, broker)


async def test_breaker_opens_then_closes_with_events(
    settings: Settings,
    pool: SandboxPool,
    nc: NATS,
    admin: AdminService,
    tenant: str,
    endpoint: Endpoint,
) -> None:
    quick = settings.model_copy(
        update={
            "targets": TargetSettings(allow_private=True, breaker_failures=3, breaker_cooldown_s=1)
        }
    )
    runtime, broker = await start_worker(quick, pool)
    try:
        endpoint.control(healthy="0")
        await one_target(admin, tenant, endpoint, "/flaky", allowed_to_fail=True)
        before = endpoint.control()["calls"]
        for _ in range(3):
            reply = await trigger(nc, tenant, request())
            assert "HTTP 503" in reply["actions"][0]["error"]
        # open: calls are skipped (answered as the failure would be), the endpoint sees none
        skipped = await trigger(nc, tenant, request())
        assert "circuit open" in skipped["actions"][0]["error"]
        assert skipped["decision"] == "continue"  # allowed to fail
        assert endpoint.control()["calls"] == before + 3
        endpoint.control(healthy="1")
        await asyncio.sleep(1.1)  # the cool-down: then one probe goes through and closes it
        probe = await trigger(nc, tenant, request())
        assert probe["claims"] == {"ok": True}, probe
        assert (await trigger(nc, tenant, request()))["claims"] == {"ok": True}
        deadline = time.monotonic() + 5
        while True:
            opened = await audit_events(nc, tenant, "flow.target_circuit_opened")
            closed = await audit_events(nc, tenant, "flow.target_circuit_closed")
            if (opened and closed) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert len(opened) == 1
        assert len(closed) == 1
        assert opened[0]["details"]["endpoint"] == endpoint.base + "/flaky"
        assert opened[0]["details"]["failures"] == 3
        assert (opened[0]["action"], closed[0]["action"]) == ("hook", "hook")
    finally:
        endpoint.control(healthy="0")
        await stop_worker(runtime, broker)


async def test_key_generated_once_and_never_readable(
    worker: Worker, nc: NATS, tenant: str, endpoint: Endpoint
) -> None:
    client = AdminClient(nc, actor="ops")
    await client.call(tenant, "actions.create", name="gen", kind="target")
    first = await client.call(
        tenant, "actions.publish", name="gen", target={"endpoint": endpoint.base + "/claims"}
    )
    key = first["signing_key"]
    assert len(key) >= 32
    assert first["version"]["target"]["signing_key"] == "********"
    shown = await client.call(tenant, "actions.show", name="gen")
    assert key not in json.dumps(shown)
    # a new version without a key (or with the mask) keeps it, and does not show it again
    second = await client.call(
        tenant,
        "actions.publish",
        name="gen",
        target={"endpoint": endpoint.base + "/claims", "signing_key": "********"},
        timeout_ms=1500,
    )
    assert "signing_key" not in second
    assert key not in json.dumps(second)
    stored = await worker.runtime.store.get_version(tenant, "gen", second["version"]["version"])
    assert stored is not None
    assert stored.target is not None
    assert stored.target.signing_key == key


async def test_flows_as_code_with_a_target(
    worker: Worker, nc: NATS, tenant: str, endpoint: Endpoint
) -> None:
    client = AdminClient(nc, actor="ops")
    file = {
        "actions": [
            {
                "name": "groups",
                "target": {
                    "endpoint": endpoint.base + "/claims",
                    "type": "call",
                    "payload": "zitadel",
                    "signing_key": KEY,
                    "headers": {"X-Env": "test"},
                },
                "timeout_ms": 2000,
                "allowed_to_fail": True,
            }
        ],
        "flows": {"complement_token": {"pre_access_token_creation": ["groups@latest"]}},
    }
    plan = await client.call(tenant, "apply", file=file)
    assert any("create action groups (target)" in c for c in plan["changes"])
    again = await client.call(tenant, "apply", file=file)
    assert again["changes"] == []  # idempotent
    reply = await trigger(nc, tenant, request(), *ACCESS)
    assert reply["claims"]["group"] == "ADMIN"
    bad = {**file, "actions": [{**file["actions"][0], "target": {"endpoint": "ftp://x"}}]}
    with pytest.raises(Exception, match="endpoint must be an absolute http"):
        await client.call(tenant, "apply", file=bad)


async def test_webhook_and_async_types(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/forbid", spec={"type": "webhook"})
    hook = await trigger(nc, tenant, request())
    assert hook["decision"] == "continue"  # only the 2xx status counts
    before = endpoint.control()["calls"]
    await one_target(admin, tenant, endpoint, "/slow", spec={"type": "async"}, timeout_ms=5000)
    started = time.monotonic()
    fire = await trigger(nc, tenant, request())
    assert time.monotonic() - started < 1.5  # the 3 s target does not hold the reply
    assert fire["decision"] == "continue"
    deadline = time.monotonic() + 5
    # the endpoint is another process: poll its counter, bounded by the deadline
    while endpoint.control()["calls"] <= before and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert endpoint.control()["calls"] >= before + 1  # it was sent


async def test_actions_test_calls_the_target(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str, endpoint: Endpoint
) -> None:
    await one_target(admin, tenant, endpoint, "/claims", ACCESS)
    client = AdminClient(nc, actor="ops")
    result = await client.call(
        tenant,
        "actions.test",
        name="hook",
        flow_type=ACCESS[0],
        trigger=ACCESS[1],
        request=request(),
    )
    assert result["output"]["claims"]["group"] == "ADMIN", result


async def test_cli_creates_publishes_and_tests_a_target(
    worker: Worker, settings: Settings, tenant: str, endpoint: Endpoint
) -> None:
    from tests.support.processes import cli

    await cli(settings, "actions", "create", "-t", tenant, "groups", "--kind", "target")
    published = await cli(
        settings, "actions", "publish", "-t", tenant, "groups",
        "--endpoint", endpoint.base + "/claims", "--signing-key", KEY, "--header", "X-Env=test",
    )  # fmt: skip
    assert "groups published 1.0.0" in published.stdout
    assert "signing key" not in published.stdout  # given, not generated
    tested = await cli(
        settings, "actions", "test", "-t", tenant, "--action", "groups",
        "--flow-type", "complement_token", "--trigger", "pre_access_token_creation",
    )  # fmt: skip
    assert json.loads(tested.stdout)["output"]["claims"]["group"] == "ADMIN"

    await cli(settings, "actions", "create", "-t", tenant, "fresh", "--kind", "target")
    fresh = await cli(
        settings,
        "actions",
        "publish",
        "-t",
        tenant,
        "fresh",
        "--endpoint",
        endpoint.base + "/claims",
    )
    line = next(x for x in fresh.stdout.splitlines() if x.startswith("signing key (shown once): "))
    key = line.split(": ", 1)[1]
    shown = await cli(settings, "actions", "show", "-t", tenant, "fresh")
    assert key not in shown.stdout
    assert "********" in shown.stdout
    # the generated key is not the endpoint's: the endpoint refuses, the CLI says so
    failed = await cli(settings, "actions", "test", "-t", tenant, "--action", "fresh", check=False)
    assert failed.returncode == 1
    assert "HTTP 400" in failed.stdout
