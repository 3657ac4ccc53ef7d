"""The trigger contract end to end: a login service's requests over NATS to a real worker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, StreamConfig

from gatehook.admin.service import AdminService
from gatehook.devservers import start_mongo
from gatehook.domain.model import Attachment
from gatehook.runtime import Runtime
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from tests.support.tenants import attach, audit_events, custom, request, template, trigger
from tests.support.workers import Worker, start_worker, stop_worker


@pytest.fixture(params=["process", "worker"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Every trigger test under both isolation levels (``GATEHOOK_SANDBOX__ISOLATION``)."""
    sandbox = settings.sandbox.model_copy(update={"isolation": request.param})
    return settings.model_copy(update={"sandbox": sandbox})


def returns(body: str) -> str:
    return f"export async function execute(input) {{ return {body}; }}"


CONTINUE = returns("{kind: 'continue'}")


async def test_each_decision_kind(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    cases = {
        "continue": returns("{kind: 'continue', claims: {a: 1}}"),
        "block": returns("{kind: 'block', reason: 'nope', message: 'No.'}"),
        "demand_mfa": returns("{kind: 'demand_mfa', reason: 'risk'}"),
        "redirect": returns("{kind: 'redirect', redirect_url: 'https://acme.com/x'}"),
    }
    for kind, src in cases.items():
        v = await custom(admin, tenant, f"a-{kind}", src)
        await attach(admin, tenant, [(f"a-{kind}", v)])
        reply = await trigger(nc, tenant, request())
        assert reply["decision"] == kind, reply
        assert reply["actions"][0]["outcome"] == kind
    assert reply["redirect_url"] == "https://acme.com/x"


async def test_precedence_and_merge(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    mfa = await custom(
        admin,
        tenant,
        "mfa",
        returns(
            "{kind: 'demand_mfa', reason: 'risk', claims: {a: 1, b: 1}, metadata: [{key: 'm', value: 1}]}"
        ),
    )
    redirect = await custom(
        admin,
        tenant,
        "redir",
        returns("{kind: 'redirect', redirect_url: 'https://acme.com/terms', claims: {b: 2}}"),
    )
    after = await custom(admin, tenant, "after", CONTINUE)
    await attach(admin, tenant, [("mfa", mfa), ("redir", redirect), ("after", after)])
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "demand_mfa"
    assert reply["reason"] == "risk"
    assert reply["redirect_url"] == "https://acme.com/terms"  # kept for after MFA
    assert reply["claims"] == {"a": 1, "b": 2}  # merged in order, later wins
    assert reply["metadata"] == [{"key": "m", "value": 1}]
    assert [a["outcome"] for a in reply["actions"]] == ["demand_mfa", "redirect", "skipped"]


async def test_block_ends_slot_and_carries_no_mutations(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    claims = await custom(admin, tenant, "claims", returns("{kind: 'continue', claims: {a: 1}}"))
    block = await custom(admin, tenant, "block", returns("{kind: 'block'}"))
    never = await custom(admin, tenant, "never", returns("{kind: 'continue', claims: {z: 1}}"))
    await attach(admin, tenant, [("claims", claims), ("block", block), ("never", never)])
    # twice: the second time "claims" and "block" are cached and start together ("never"
    # was not reached, so not cached: it stays out); the decision and events are the same
    for body in (request(), request()):
        reply = await trigger(nc, tenant, body)
        assert reply["decision"] == "block"
        assert reply["reason"] == "blocked"
        assert reply["claims"] == {}
        assert [a["outcome"] for a in reply["actions"]] == ["continue", "block", "skipped"]
        events = await audit_events(nc, tenant, "flow.action_executed")
        mine = [e["action"] for e in events if e["request_id"] == body["request_id"]]
        assert sorted(mine) == ["block", "claims"]  # skipped: no event


async def test_empty_slot_and_no_flow(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    reply = await trigger(nc, tenant, request())
    assert (reply["decision"], reply["flow_revision"], reply["actions"]) == ("continue", None, [])
    v = await custom(admin, tenant, "x", CONTINUE)
    rev = await attach(admin, tenant, [("x", v)], trigger_name="pre_creation")
    reply = await trigger(nc, tenant, request())  # post_authentication: empty slot
    assert (reply["decision"], reply["flow_revision"], reply["actions"]) == ("continue", rev, [])


async def test_allowed_to_fail_versus_fail_closed(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    boom = "export function execute() { throw new Error('boom'); }"
    soft = await custom(admin, tenant, "soft", boom, allowed_to_fail=True)
    ok = await custom(admin, tenant, "ok", returns("{kind: 'continue', claims: {ok: true}}"))
    await attach(admin, tenant, [("soft", soft), ("ok", ok)])
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "continue"
    assert reply["claims"] == {"ok": True}
    assert reply["actions"][0]["outcome"] == "error"
    assert "boom" in reply["actions"][0]["error"]

    hard = await custom(admin, tenant, "hard", boom)
    await attach(admin, tenant, [("hard", hard), ("ok", ok)])
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "block"
    assert reply["reason"] == "action_error"
    assert "hard@1.0.0" in reply["message"]
    assert reply["claims"] == {}
    assert [a["outcome"] for a in reply["actions"]] == ["error", "skipped"]


async def test_invalid_result_is_an_action_error(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    bad = await custom(
        admin, tenant, "bad", returns("{kind: 'redirect', redirect_url: 'javascript:x'}")
    )
    await attach(admin, tenant, [("bad", bad)])
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "block"
    assert reply["reason"] == "action_error"
    assert "redirect_url" in reply["actions"][0]["error"]


async def test_timeout(worker: Worker, nc: NATS, admin: AdminService, tenant: str) -> None:
    spin = await custom(
        admin, tenant, "spin", "export function execute() { while (true) {} }", timeout_ms=150
    )
    await attach(admin, tenant, [("spin", spin)])
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "block"
    assert reply["actions"][0]["outcome"] == "error"
    assert reply["actions"][0]["error"].startswith("timeout")


async def test_request_deadline_bounds_the_reply(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    spin = await custom(
        admin, tenant, "spin", "export function execute() { while (true) {} }", timeout_ms=10_000
    )
    await attach(admin, tenant, [("spin", spin)])
    started = time.monotonic()
    # 1.5 s leaves the pin and flow look-ups (slow on a loaded machine) time before the action
    reply = await trigger(nc, tenant, request(deadline_ms=1500), timeout=5)
    assert time.monotonic() - started < 5  # answered, not left to the caller's timeout
    assert reply["decision"] == "block"
    assert reply["actions"][0]["error"].startswith("timeout")


async def test_ts_and_zitadel_in_one_slot(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    ts = await custom(
        admin,
        tenant,
        "ts-year",
        "export async function execute(input: {user: {id: string}}): Promise<object> {\n"
        "  const year: number = 2026;\n  return {kind: 'continue', claims: {year, uid: input.user.id}};\n}",
        language="ts",
    )
    z = await custom(
        admin,
        tenant,
        "zitadelClaims",
        "function zitadelClaims(ctx, api) {\n"
        "  api.v1.claims.setClaim('idp', ctx.v1.providerInfo.name);\n"
        "  api.setFirstName('Ann');\n  api.v1.user.appendMetadata('k', 'v');\n}",
    )
    await attach(admin, tenant, [("ts-year", ts), ("zitadelClaims", z)])
    reply = await trigger(nc, tenant, request(context={"providerInfo": {"name": "okta"}}))
    assert reply["decision"] == "continue", reply
    assert reply["claims"] == {"year": 2026, "uid": "u1", "idp": "okta"}
    assert reply["user_updates"] == {"first_name": "Ann"}
    assert reply["metadata"] == [{"key": "k", "value": "v"}]


async def test_signin_pinning(worker: Worker, nc: NATS, admin: AdminService, tenant: str) -> None:
    v1 = await custom(admin, tenant, "ver", returns("{kind: 'continue', claims: {v: 1}}"))
    rev1 = await attach(admin, tenant, [("ver", v1)])
    first = await trigger(nc, tenant, request(signin_id="s1"))
    assert (first["claims"], first["flow_revision"]) == ({"v": 1}, rev1)

    v2 = await custom(admin, tenant, "ver", returns("{kind: 'continue', claims: {v: 2}}"))
    rev2 = await attach(admin, tenant, [("ver", v2)])
    assert rev2 == rev1 + 1
    await asyncio.sleep(0)  # (the change broadcast is awaited by the admin call already)

    later = await trigger(nc, tenant, request(signin_id="s1"), trigger_name="post_creation")
    assert later["flow_revision"] == rev1  # same sign-in, still on revision 1
    again = await trigger(nc, tenant, request(signin_id="s1"))
    assert (again["claims"], again["flow_revision"]) == ({"v": 1}, rev1)
    fresh = await trigger(nc, tenant, request(signin_id="s2"))
    assert (fresh["claims"], fresh["flow_revision"]) == ({"v": 2}, rev2)
    unpinned = await trigger(nc, tenant, request())
    assert unpinned["flow_revision"] == rev2


async def test_retry_same_request_id(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    a = await custom(admin, tenant, "a", returns("{kind: 'continue', claims: {r: Math.random()}}"))
    b = await custom(admin, tenant, "b", CONTINUE)
    await attach(admin, tenant, [("a", a), ("b", b)])
    body = request()
    first = await trigger(nc, tenant, body)
    second = await trigger(nc, tenant, body)
    assert first == second  # the same decision, not a second run
    other = await trigger(nc, tenant, request())
    assert other["claims"] != first["claims"]
    events = await audit_events(nc, tenant, "flow.action_executed")
    assert len(events) == 4  # two requests x two actions, each exactly once
    mine = [e for e in events if e["request_id"] == body["request_id"]]
    assert sorted(e["action"] for e in mine) == ["a", "b"]
    assert {e["tenant"] for e in mine} == {tenant}
    assert all(e["flow_revision"] == first["flow_revision"] for e in mine)


async def test_retry_on_another_worker_gets_the_same_reply(
    settings: Settings,
    pool: SandboxPool,
    nc: NATS,
    store: MongoStore,
    admin: AdminService,
    tenant: str,
) -> None:
    first_worker = await _worker(settings, pool)
    second_worker = await _worker(settings, pool)
    try:
        v = await custom(
            admin, tenant, "rnd", returns("{kind: 'continue', claims: {r: Math.random()}}")
        )
        await attach(admin, tenant, [("rnd", v)])
        body = json.dumps(request()).encode()
        subject = ("external_authentication", "post_authentication")
        a = await first_worker[1].triggers.handle(tenant, *subject, body)
        b = await second_worker[1].triggers.handle(tenant, *subject, body)  # the retry, elsewhere
        assert json.loads(a) == json.loads(b)
        assert len(await audit_events(nc, tenant, "flow.action_executed")) == 1
    finally:
        for broker, runtime in (first_worker, second_worker):
            await stop_worker(runtime, broker)


async def test_tenant_isolation(worker: Worker, nc: NATS, admin: AdminService, tenant: str) -> None:
    block = await custom(admin, tenant, "blocker", returns("{kind: 'block'}"))
    await attach(admin, tenant, [("blocker", block)])
    other = tenant + "-b"
    body = request(tenant=tenant, context={"tenant": tenant, "action": "blocker"})
    reply = await trigger(nc, other, body)
    assert reply["decision"] == "continue"
    assert reply["actions"] == []
    assert await audit_events(nc, other) == []
    with pytest.raises(Exception, match="not found"):
        await admin.set_slot(
            other,
            "external_authentication",
            "post_authentication",
            [Attachment(action="blocker", version=block)],
            actor="b",
        )


@pytest.mark.parametrize(
    ("subject_tail", "payload", "fragment"),
    [
        ("external_authentication.post_authentication", b"{not json", "not valid JSON"),
        ("external_authentication.post_authentication", b"[1, 2]", "object"),
        ("external_authentication.post_authentication", b'{"request_id": 5}', "request_id"),
        (
            "external_authentication.post_authentication",
            b'{"user": {}}',
            "request_id: Field required",
        ),
        (
            "external_authentication.post_authentication",
            b'{"request_id": "r", "user": {"groups": "staff"}}',
            "user.groups",
        ),
        (
            "external_authentication.post_authentication",
            b'{"request_id": "' + b"x" * 200 + b'"}',
            "at most 128",
        ),
        ("external_authentication.pre_userinfo_creation", b'{"request_id": "r"}', "not a trigger"),
        ("nonsense.post_authentication", b'{"request_id": "r"}', "not a trigger"),
        ("external_authentication.post_authentication", b"\xff\xfe", "JSON"),
    ],
)
async def test_bad_requests(
    worker: Worker, nc: NATS, tenant: str, subject_tail: str, payload: bytes, fragment: str
) -> None:
    msg = await nc.request(f"gatehook.v1.trigger.{tenant}.{subject_tail}", payload, timeout=5)
    reply = json.loads(msg.data)
    assert reply["decision"] is None
    assert reply["error"]["code"] == "bad_request"
    assert fragment in reply["error"]["message"]
    assert (await trigger(nc, tenant, request()))["decision"] == "continue"  # still serving


async def test_oversize_and_bad_tenant(worker: Worker, nc: NATS, tenant: str) -> None:
    big = json.dumps(request(context={"blob": "x" * 300_000})).encode()
    msg = await nc.request(
        f"gatehook.v1.trigger.{tenant}.external_authentication.post_authentication", big, timeout=5
    )
    assert "limit is 262144" in json.loads(msg.data)["error"]["message"]
    reply = await trigger(nc, "Bad_Tenant", request())
    assert reply["error"]["code"] == "bad_request"
    assert (await trigger(nc, tenant, request()))["decision"] == "continue"


async def test_template_in_flow(worker: Worker, nc: NATS, admin: AdminService, tenant: str) -> None:
    v = await template(admin, tenant, "staff", "domain-allowlist", {"domains": ["acme.com"]})
    await attach(admin, tenant, [("staff", v)])
    assert (await trigger(nc, tenant, request()))["decision"] == "continue"
    reply = await trigger(nc, tenant, request(user={"id": "u9", "email": "x@evil.com"}))
    assert (reply["decision"], reply["reason"]) == ("block", "domain_not_allowed")


async def test_audit_stream_unavailable_gives_unavailable(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    v = await custom(admin, tenant, "x", CONTINUE)
    await attach(admin, tenant, [("x", v)])
    js = nc.jetstream()
    info = await js.stream_info("GATEHOOK_AUDIT")
    full = StreamConfig(
        name="GATEHOOK_AUDIT",
        subjects=info.config.subjects,
        max_msgs=1,
        discard=DiscardPolicy.NEW,
        duplicate_window=info.config.duplicate_window,
    )
    await js.purge_stream("GATEHOOK_AUDIT")
    await js.update_stream(full)
    await js.publish(f"gatehook.v1.audit.{tenant}.filler", b"{}")
    body = request()
    reply = await trigger(nc, tenant, body)
    assert reply["decision"] is None
    assert reply["error"]["code"] == "unavailable"
    assert reply["error"]["retryable"] is True
    await js.update_stream(info.config)
    reply = await trigger(nc, tenant, body)  # the retry gets a real decision
    assert reply["decision"] == "continue"


async def test_deleted_audit_stream_is_recreated(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    v = await custom(admin, tenant, "x", CONTINUE)
    await attach(admin, tenant, [("x", v)])
    js = nc.jetstream()
    await js.delete_stream("GATEHOOK_AUDIT")
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "continue"
    assert len(await audit_events(nc, tenant, "flow.action_executed")) == 1


async def _worker(settings: Settings, pool: SandboxPool) -> tuple[NatsBroker, Runtime]:
    runtime, broker = await start_worker(settings, pool)
    return broker, runtime


async def test_two_workers_share_load_and_see_changes(
    settings: Settings,
    pool: SandboxPool,
    nc: NATS,
    store: MongoStore,
    admin: AdminService,
    tenant: str,
) -> None:
    settings = settings.model_copy(update={"flow_cache_ttl_s": 60.0})  # only the broadcast helps
    workers = [await _worker(settings, pool) for _ in range(2)]
    try:
        v1 = await custom(admin, tenant, "ver", returns("{kind: 'continue', claims: {v: 1}}"))
        await attach(admin, tenant, [("ver", v1)])
        replies = await asyncio.gather(*(trigger(nc, tenant, request()) for _ in range(40)))
        assert {r["claims"]["v"] for r in replies} == {1}
        counts = [w[1].triggers.handled for w in workers]
        assert all(c > 0 for c in counts), counts

        v2 = await custom(admin, tenant, "ver", returns("{kind: 'continue', claims: {v: 2}}"))
        changed = time.monotonic()
        rev2 = await attach(admin, tenant, [("ver", v2)])
        seen: set[int] = set()
        while len(seen) < 2:
            # the cache lives 60 s: seeing the change well before that is the broadcast's work
            # (10 s, not 1 s: a loaded CI machine is slow, and the bound is functional)
            assert time.monotonic() - changed < 10.0, "a worker did not see the change"
            before = [w[1].triggers.handled for w in workers]
            reply = await trigger(nc, tenant, request())
            after = [w[1].triggers.handled for w in workers]
            who = next(i for i in range(2) if after[i] > before[i])
            if reply["flow_revision"] == rev2:
                seen.add(who)
    finally:
        for broker, runtime in workers:
            await stop_worker(runtime, broker)


@pytest.fixture
async def own_mongo() -> AsyncIterator[object]:
    server = start_mongo()
    yield server
    server.stop()


async def test_storage_outage_gives_unavailable_and_recovers(
    settings: Settings, pool: SandboxPool, nc: NATS, own_mongo: object, tenant: str
) -> None:
    server = own_mongo
    settings = settings.model_copy(update={"mongodb_url": server.url, "mongodb_timeout_ms": 500})
    broker, runtime = await _worker(settings, pool)
    try:
        server.kill()
        reply = await trigger(nc, tenant, request())
        assert reply["decision"] is None
        assert reply["error"]["code"] == "unavailable"
        assert reply["error"]["retryable"] is True
        server.restart()
        deadline = time.monotonic() + 20
        while True:
            reply = await trigger(nc, tenant, request())
            if reply["decision"] == "continue":
                break
            assert time.monotonic() < deadline, reply
            await asyncio.sleep(0.1)
    finally:
        await stop_worker(runtime, broker)
