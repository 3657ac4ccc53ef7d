"""Reliability: fuzzed input over NATS, overload shedding, server restarts, cached serving."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from pydantic import ValidationError

from gatehook.admin.client import AdminClient
from gatehook.admin.service import AdminService
from gatehook.devservers import Server, start_mongo, start_nats
from gatehook.domain.contract import TriggerReply
from gatehook.domain.flowfile import FlowsFile
from gatehook.runtime import Runtime
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.templates import default_registry
from gatehook.transport.jetstream import AuditPublisher
from tests.conftest import Worker, start_worker, stop_worker
from tests.helpers import attach, audit_events, custom, request, trigger

FLOWS = [
    "external_authentication",
    "internal_authentication",
    "complement_token",
    "customize_saml_response",
    "nonsense",
]
TRIGGERS = [
    "post_authentication",
    "pre_creation",
    "pre_access_token_creation",
    "pre_saml_response",
    "x",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def trigger_bodies(draw: st.DrawFn) -> tuple[bool, bytes]:
    """(valid?, payload): valid requests, near-valid ones, and junk."""
    kind = draw(st.integers(0, 3))
    if kind == 0:  # valid
        body: dict[str, Any] = {"request_id": draw(st.text(min_size=1, max_size=128))}
        if draw(st.booleans()):
            body["user"] = {
                "id": draw(st.text(max_size=10)),
                "email": draw(st.text(max_size=30)),
                "groups": draw(st.lists(st.text(max_size=5), max_size=3)),
            }
        if draw(st.booleans()):
            body["request"] = {
                "ip": draw(st.text(max_size=40)),
                "risk_score": draw(st.floats(0, 1) | st.none()),
            }
        if draw(st.booleans()):
            body["context"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
        body["extra"] = draw(json_values)
        return True, json.dumps(body).encode()
    if kind == 1:  # wrong types in known fields
        body = {
            "request_id": draw(json_values),
            "user": draw(json_values),
            "request": draw(json_values),
            "state": draw(json_values),
        }
        return False, json.dumps(body).encode()
    if kind == 2:
        return False, json.dumps(draw(json_values)).encode()
    return False, draw(st.binary(max_size=200))


def corpus(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` generated examples (Hypothesis drives generation; the requests go out after)."""
    out: list[Any] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out


async def test_fuzzed_trigger_requests_are_all_answered(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    v = await custom(
        admin, tenant, "ok", "export function execute(i) { return {kind: 'continue'}; }"
    )
    await attach(admin, tenant, [("ok", v)])
    cases = corpus(trigger_bodies(), 4000)
    flows = corpus(st.tuples(st.sampled_from(FLOWS), st.sampled_from(TRIGGERS)), 50)
    sem = asyncio.Semaphore(64)
    outcomes: dict[str, int] = {}

    async def send(i: int, valid: bool, payload: bytes) -> None:
        flow_type, trig = (
            ("external_authentication", "post_authentication") if i % 2 else flows[i % len(flows)]
        )
        async with sem:
            msg = await nc.request(
                f"gatehook.v1.trigger.{tenant}.{flow_type}.{trig}", payload, timeout=10
            )
        reply = TriggerReply.model_validate_json(msg.data)
        slot_ok = flow_type == "external_authentication" and trig in (
            "post_authentication",
            "pre_creation",
        )
        slot_ok = (
            slot_ok
            or (flow_type == "complement_token" and trig == "pre_access_token_creation")
            or (flow_type == "customize_saml_response" and trig == "pre_saml_response")
            or (
                flow_type == "internal_authentication"
                and trig in ("post_authentication", "pre_creation")
            )
        )
        if reply.error is None:
            assert reply.decision is not None
            assert slot_ok
        else:
            assert reply.error.code == "bad_request", reply.error
            assert reply.decision is None
            assert reply.error.message
        if valid and slot_ok:
            assert reply.error is None, (payload, reply.error)
        key = "decision" if reply.error is None else "bad_request"
        outcomes[key] = outcomes.get(key, 0) + 1

    await asyncio.gather(*(send(i, valid, payload) for i, (valid, payload) in enumerate(cases)))
    assert sum(outcomes.values()) == 4000
    assert outcomes["decision"] > 500
    assert outcomes["bad_request"] > 500
    assert (await trigger(nc, tenant, request()))["decision"] == "continue"


async def test_fuzzed_admin_requests_are_all_answered(
    worker: Worker, nc: NATS, tenant: str
) -> None:
    ops = [
        "actions.create",
        "actions.publish",
        "actions.show",
        "flows.attach",
        "flows.update",
        "flows.detach",
        "flows.reorder",
        "flows.rollback",
        "templates.show",
        "apply",
        "nope",
    ]
    bodies = corpus(st.tuples(st.sampled_from(ops), json_values | st.binary(max_size=80)), 3000)
    sem = asyncio.Semaphore(32)
    answered = 0

    async def send(op: str, body: Any) -> None:
        nonlocal answered
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with sem:
            msg = await nc.request(f"gatehook.v1.admin.{tenant}.{op}", payload, timeout=30)
        reply = json.loads(msg.data)
        assert reply["ok"] or reply["error"]["code"] in (
            "invalid",
            "not_found",
            "bad_request",
            "conflict",
        )
        answered += 1

    await asyncio.gather(*(send(op, body) for op, body in bodies))
    assert answered == 3000
    assert await AdminClient(nc).call(tenant, "templates.list")


def test_fuzzed_flows_files_validate_or_refuse_clearly() -> None:
    names = st.sampled_from(["a", "b-1", "9x", "", "x" * 70])
    action = st.fixed_dictionaries(
        {"name": names},
        optional={
            "template": st.sampled_from(["domain-allowlist", "nope"]),
            "source": st.text(max_size=20),
            "file": st.text(max_size=10),
            "config": json_values,
            "timeout_ms": st.integers(-5, 40000),
        },
    )
    refs = st.lists(
        st.sampled_from(["a@latest", "a@1.0.0", "b-1@2.0.0", "bad", "a@1.0"]), max_size=3
    )
    doc = (
        st.fixed_dictionaries(
            {},
            optional={
                "tenant": st.sampled_from(["acme", "Bad Tenant", "x"]),
                "actions": st.lists(action, max_size=3),
                "flows": st.dictionaries(
                    st.sampled_from(FLOWS),
                    st.dictionaries(st.sampled_from(TRIGGERS), refs, max_size=2),
                    max_size=2,
                ),
                "extra": json_values,
            },
        )
        | json_values
    )

    @settings(max_examples=3000, database=None, deadline=None, derandomize=True)
    @given(doc)
    def check(raw: Any) -> None:
        try:
            FlowsFile.model_validate(raw)
        except ValidationError as exc:  # the only way a bad file may fail: a clear message
            message = exc.errors()[0]["msg"]
            if not message:
                raise AssertionError("a validation error without a message") from exc

    check()


async def test_overload_is_shed_not_queued(
    settings: Settings, pool: SandboxPool, nc: NATS, store: object, admin: AdminService, tenant: str
) -> None:
    runtime, broker = await start_worker(settings.model_copy(update={"concurrency": 4}), pool)
    try:
        busy = (
            "export function execute() { const end = Date.now() + 100; while (Date.now() < end) {}"
            " return {kind: 'continue'}; }"
        )
        v = await custom(admin, tenant, "busy", busy, timeout_ms=2000)
        await attach(admin, tenant, [("busy", v)])
        started = time.monotonic()
        replies = await asyncio.gather(
            *(trigger(nc, tenant, request(), timeout=30) for _ in range(60))
        )
        shed = [r for r in replies if r["error"] and r["error"]["code"] == "unavailable"]
        served = [r for r in replies if r["decision"] == "continue"]
        assert len(shed) + len(served) == 60
        assert shed
        assert all(r["error"]["retryable"] and "overloaded" in r["error"]["message"] for r in shed)
        assert runtime._server is not None
        assert runtime._server.shed == len(shed)
        assert time.monotonic() - started < 30
    finally:
        await stop_worker(runtime, broker)


@pytest.fixture
async def own_nats() -> AsyncIterator[Server]:
    server = start_nats()
    yield server
    server.stop()


async def test_nats_restart_workers_reconnect(
    settings: Settings, pool: SandboxPool, store: object, own_nats: Server, tenant: str
) -> None:
    runtime, broker = await start_worker(
        settings.model_copy(update={"nats_url": own_nats.url}), pool
    )
    client = await nats.connect(own_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    api = AdminClient(client)
    answered: list[str] = []
    try:
        await api.call(tenant, "actions.create", name="a")
        await api.call(
            tenant,
            "actions.publish",
            name="a",
            source="export function execute() { return {kind: 'continue'}; }",
        )
        await api.call(
            tenant,
            "flows.attach",
            action="a",
            flow_type="external_authentication",
            trigger="post_authentication",
        )
        body = request()
        assert (await trigger(client, tenant, body))["decision"] == "continue"
        answered.append(body["request_id"])
        own_nats.kill()
        own_nats.restart()
        restarted = time.monotonic()
        while True:
            body = request()
            try:
                reply = await trigger(client, tenant, body, timeout=0.5)
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionClosedError,
            ):
                reply = None
            if reply is not None:
                # during the gap: a real decision or `unavailable`, never anything made up
                assert reply["decision"] == "continue" or reply["error"]["code"] == "unavailable"
                if reply["decision"] == "continue":
                    answered.append(body["request_id"])
                    break
            assert time.monotonic() - restarted < 10, "the worker did not come back"
            await asyncio.sleep(0.05)
        recovery = time.monotonic() - restarted
        print(f"\nworker serving again {recovery:.2f} s after the NATS restart")
        assert recovery < 2.0
        stored = {e["request_id"] async for e in _events(client, tenant)}
        assert set(answered) <= stored  # no audit event lost for an answered request
    finally:
        await client.close()
        await stop_worker(runtime, broker)


async def _events(nc: NATS, tenant: str) -> AsyncIterator[dict[str, Any]]:
    from gatehook.audit.reader import read_events

    async for e in read_events(nc.jetstream(), tenant=tenant, event_type="flow.action_executed"):
        yield e.model_dump(mode="json")


async def test_cached_flows_keep_serving_while_mongodb_is_down(
    settings: Settings, pool: SandboxPool, nc: NATS, tenant: str
) -> None:
    mongo = start_mongo()
    try:
        local = settings.model_copy(
            update={"mongodb_url": mongo.url, "mongodb_timeout_ms": 500, "flow_cache_ttl_s": 60.0}
        )
        runtime, broker = await start_worker(local, pool)
        try:
            admin = _admin(runtime, pool, nc, local)
            v = await custom(
                admin,
                tenant,
                "c",
                "export function execute() { return {kind: 'continue', claims: {c: 1}}; }",
            )
            await attach(admin, tenant, [("c", v)])
            deadline = time.monotonic() + 10
            while (
                runtime.triggers.lookup.heads_cache.generation(tenant) == 0
            ):  # the change broadcast is in
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert (await trigger(nc, tenant, request()))["claims"] == {"c": 1}  # warms the caches
            mongo.kill()
            cached = await trigger(nc, tenant, request())
            assert cached["claims"] == {"c": 1}, cached["error"]  # no MongoDB for a cached flow
            # a new sign-in is decided on the cached revisions; its pin waits for MongoDB
            pinned = await trigger(nc, tenant, request(signin_id="new-signin"))
            assert pinned["claims"] == {"c": 1}, pinned
            assert pinned["pin_deferred"] is True
            again = await trigger(nc, tenant, request(signin_id="new-signin"))
            assert again["pin_deferred"] is False  # its next trigger finds the pin here
            mongo.restart()
            await _pinned_in_mongodb(runtime, tenant, "new-signin", 20)
        finally:
            await stop_worker(runtime, broker)
    finally:
        mongo.stop()


def _admin(runtime: Runtime, pool: SandboxPool, nc: NATS, settings: Settings) -> AdminService:
    """The management use cases on ``runtime``'s own store (a MongoDB of the test's own)."""
    return AdminService(
        store=runtime.store,
        compiler=pool,
        templates=default_registry(),
        audit=AuditPublisher(nc.jetstream(), settings.audit),
        notify=runtime.notify_change,
    )


async def _pinned_in_mongodb(runtime: Runtime, tenant: str, signin: str, within: float) -> None:
    """Wait (at most ``within`` s) for the deferred pin to be stored."""
    deadline = time.monotonic() + within
    while (
        await runtime.store.bucket("pins", tenant).find_one({"_id": f"{tenant}/{signin}"}) is None
    ):
        assert time.monotonic() < deadline, "the deferred pin never reached MongoDB"
        await asyncio.sleep(0.1)
    assert runtime.deferred_pins is not None
    assert runtime.deferred_pins.written >= 1


async def test_a_hung_mongodb_never_holds_a_reply_past_its_deadline(
    settings: Settings, pool: SandboxPool, nc: NATS, tenant: str
) -> None:
    """MongoDB stopped (SIGSTOP: it takes connections and never answers): a cached tenant's
    pinned and new sign-ins are decided (the new one's pin deferred, and audited so), a
    tenant not cached gets ``unavailable``, retryable, by its deadline, never silence; after
    SIGCONT the deferred pin is in MongoDB. The client waits the deadline plus a second, as
    a login page would."""
    mongo = start_mongo()
    try:
        local = settings.model_copy(update={"mongodb_url": mongo.url})
        runtime, broker = await start_worker(local, pool)
        try:
            admin = _admin(runtime, pool, nc, local)
            for t in (tenant, tenant + "-cold"):
                v = await custom(
                    admin, t, "c", "export function execute() { return {claims: {c: 1}}; }"
                )
                await attach(admin, t, [("c", v)])
            warm = await trigger(nc, tenant, request(signin_id="pinned"))
            assert warm["claims"] == {"c": 1}, warm
            assert mongo.proc is not None
            mongo.proc.send_signal(signal.SIGSTOP)
            try:
                deadline_ms = 600
                wait = deadline_ms / 1000 + 1.0
                pinned = await trigger(
                    nc, tenant, request(signin_id="pinned", deadline_ms=deadline_ms), timeout=wait
                )
                assert pinned["claims"] == {"c": 1}, pinned  # cached pin and flow: decided
                assert pinned["pin_deferred"] is False
                new = request(signin_id="new-signin", deadline_ms=deadline_ms)
                fresh = await trigger(nc, tenant, new, timeout=wait)  # answered, in time
                assert fresh["claims"] == {"c": 1}, fresh
                assert fresh["pin_deferred"] is True
                cold = await trigger(
                    nc, tenant + "-cold", request(deadline_ms=deadline_ms), timeout=wait
                )
                assert cold["error"]["code"] == "unavailable", cold
                assert cold["error"]["retryable"] is True
            finally:
                mongo.proc.send_signal(signal.SIGCONT)
            await _pinned_in_mongodb(runtime, tenant, "new-signin", 20)
            executed = await audit_events(nc, tenant, "flow.action_executed")
            deferred = [e for e in executed if e["request_id"] == new["request_id"]]
            assert [e["details"] for e in deferred] == [{"pin_deferred": True}]
        finally:
            await stop_worker(runtime, broker)
    finally:
        mongo.stop()


async def test_noisy_tenant_cannot_take_the_whole_sandbox(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    noisy, quiet = tenant + "-a", tenant + "-b"
    spin = await custom(
        admin, noisy, "spin", "export function execute() { while (true) {} }", timeout_ms=1000
    )
    await attach(admin, noisy, [("spin", spin)])
    ok = await custom(
        admin, quiet, "ok", "export function execute() { return {kind: 'continue'}; }"
    )
    await attach(admin, quiet, [("ok", ok)])
    order: list[str] = []

    async def flood() -> None:
        await trigger(nc, noisy, request(), timeout=30)
        order.append("noisy")

    async def calm() -> None:
        await asyncio.sleep(0.2)  # the flood has the sandbox busy by now
        reply = await trigger(nc, quiet, request(), timeout=30)
        assert reply["decision"] == "continue"
        order.append("quiet")

    await asyncio.gather(*(flood() for _ in range(6)), calm())
    assert order[0] == "quiet", order  # answered while every noisy request was still spinning
