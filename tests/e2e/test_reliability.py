"""Reliability: fuzzed input over NATS, overload shedding, server restarts, cached serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from pydantic import ValidationError

from gatehook.admin.client import AdminClient
from gatehook.admin.service import AdminService
from gatehook.audit.stream import AuditPublisher
from gatehook.devservers import Server, start_mongo, start_nats
from gatehook.domain import subjects
from gatehook.domain.contract import TriggerReply
from gatehook.domain.flowfile import FlowsFile
from gatehook.runtime import Runtime
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.templates import default_registry
from tests.support.tenants import attach, audit_events, custom, request, trigger
from tests.support.workers import Worker, start_worker, stop_worker

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
        # one tenant alone: refused at its share of the worker (service.admission)
        assert all(r["error"]["retryable"] for r in shed)
        assert all(f"tenant {tenant} is over its share" in r["error"]["message"] for r in shed)
        assert runtime.server is not None
        assert runtime.server.shed == len(shed)
        assert time.monotonic() - started < 30
    finally:
        await stop_worker(runtime, broker)


@pytest.fixture
async def own_nats() -> AsyncIterator[Server]:
    server = start_nats()
    yield server
    server.stop()


async def _continue_flow(api: AdminClient, tenant: str) -> None:
    """One action that continues, attached at post_authentication, over the management API."""
    await api.call(tenant, "actions.create", name="a")
    await api.call(
        tenant,
        "actions.publish",
        name="a",
        source="export function execute() { return {kind: 'continue'}; }",
        # the request's deadline bounds it: a second of a loaded machine during a NATS
        # restart must not read as the script failing
        timeout_ms=5000,
    )
    await api.call(
        tenant,
        "flows.attach",
        action="a",
        flow_type="external_authentication",
        trigger="post_authentication",
    )


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
        await _continue_flow(api, tenant)
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


def _admin(
    runtime: Runtime,
    pool: SandboxPool,
    nc: NATS,
    settings: Settings,
    notify: Callable[[str], Awaitable[None]] | None = None,
) -> AdminService:
    """The management use cases on ``runtime``'s own store (a MongoDB of the test's own),
    broadcasting changes as the worker does unless told otherwise."""
    return AdminService(
        store=runtime.store,
        compiler=pool,
        templates=default_registry(),
        audit=AuditPublisher(nc.jetstream(), settings.audit),
        notify=notify or runtime.notify_change,
    )


@contextlib.asynccontextmanager
async def _own_mongodb(
    settings: Settings, pool: SandboxPool, nc: NATS, **update: Any
) -> AsyncIterator[tuple[Server, Runtime, AdminService]]:
    """A MongoDB of the test's own (to stop, kill and restart), a worker on it with
    ``update`` to its settings, and the management use cases on it."""
    mongo = start_mongo()
    try:
        local = settings.model_copy(update={"mongodb_url": mongo.url, **update})
        runtime, broker = await start_worker(local, pool)
        try:
            yield mongo, runtime, _admin(runtime, pool, nc, local)
        finally:
            await stop_worker(runtime, broker)
    finally:
        mongo.stop()


async def test_cached_flows_keep_serving_while_mongodb_is_down(
    settings: Settings, pool: SandboxPool, nc: NATS, tenant: str
) -> None:
    own = _own_mongodb(settings, pool, nc, mongodb_timeout_ms=500, flow_cache_ttl_s=60.0)
    async with own as (mongo, runtime, admin):
        v = await custom(
            admin,
            tenant,
            "c",
            "export function execute() { return {kind: 'continue', claims: {c: 1}}; }",
        )
        await attach(admin, tenant, [("c", v)])
        deadline = time.monotonic() + 10
        while runtime.triggers.lookup.heads_cache.generation(tenant) == 0:  # the broadcast is in
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


async def _pinned_in_mongodb(runtime: Runtime, tenant: str, signin: str, within: float) -> None:
    """Wait (at most ``within`` s) for the deferred pin to be stored, and counted (the writer
    counts a batch once MongoDB has acknowledged it: the document can be read a moment
    before the count moves)."""
    deadline = time.monotonic() + within
    while (
        await runtime.store.bucket("pins", tenant).find_one({"_id": f"{tenant}/{signin}"}) is None
    ):
        assert time.monotonic() < deadline, "the deferred pin never reached MongoDB"
        await asyncio.sleep(0.1)
    assert runtime.deferred_pins is not None
    while runtime.deferred_pins.written < 1:
        assert time.monotonic() < deadline, "the deferred pin was stored but never counted"
        await asyncio.sleep(0.05)
    assert runtime.deferred_pins.written >= 1


async def test_a_hung_mongodb_never_holds_a_reply_past_its_deadline(
    settings: Settings, pool: SandboxPool, nc: NATS, tenant: str
) -> None:
    """MongoDB stopped (SIGSTOP: it takes connections and never answers): a cached tenant's
    pinned and new sign-ins are decided (the new one's pin deferred, and audited so), a
    tenant not cached gets ``unavailable``, retryable, by its deadline, never silence; after
    SIGCONT the deferred pin is in MongoDB. The client waits the deadline plus a second, as
    a login page would."""
    async with _own_mongodb(settings, pool, nc) as (mongo, runtime, admin):
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


async def test_a_change_that_reaches_a_worker_while_mongodb_hangs_keeps_its_sign_ins_decided(
    settings: Settings, pool: SandboxPool, nc: NATS, tenant: str
) -> None:
    """A change is stored just before MongoDB hangs, and its broadcast reaches the worker
    after (as a broadcast may overtake nothing and arrive late): the tenant's requests, a new
    sign-in and one without a sign-in, are decided by their deadline on the flows the worker
    last loaded, and counted; once MongoDB is back the next request runs on the change."""
    async with _own_mongodb(settings, pool, nc) as (mongo, runtime, _):
        # Every broadcast is held and delivered where the test says: one still in flight
        # would otherwise drop the warmed heads at a moment nothing orders.
        held: list[str] = []

        async def hold(t: str) -> None:
            held.append(t)

        late = _admin(runtime, pool, nc, settings, notify=hold)
        v1 = await custom(
            late, tenant, "c", "export function execute() { return {claims: {c: 1}}; }"
        )
        await attach(late, tenant, [("c", v1)])
        warm = await trigger(nc, tenant, request(signin_id="pinned"))  # loads v1, nothing cached
        assert warm["claims"] == {"c": 1}, warm
        held.clear()

        v2 = await custom(
            late, tenant, "c", "export function execute() { return {claims: {c: 2}}; }"
        )
        await attach(late, tenant, [("c", v2)])
        assert held == [tenant]  # the attach broadcasts once
        lookup = runtime.triggers.lookup
        assert lookup.cached_heads(tenant) is not None
        assert mongo.proc is not None
        mongo.proc.send_signal(signal.SIGSTOP)
        try:
            await nc.publish(subjects.changes(tenant), b"")
            deadline = time.monotonic() + 10
            while lookup.cached_heads(tenant) is not None:  # the broadcast is handled
                assert time.monotonic() < deadline, "the change broadcast never arrived"
                await asyncio.sleep(0.01)
            wait = 0.6 + 1.0  # the deadline, and a second, as a login page would wait
            fresh = await trigger(
                nc, tenant, request(signin_id="new-signin", deadline_ms=600), timeout=wait
            )
            assert fresh["claims"] == {"c": 1}, fresh  # the last loaded flows
            assert fresh["pin_deferred"] is True
            bare = await trigger(nc, tenant, request(deadline_ms=600), timeout=wait)
            assert bare["claims"] == {"c": 1}, bare
            assert lookup.last_heads_served == 2
        finally:
            mongo.proc.send_signal(signal.SIGCONT)
        after = await trigger(nc, tenant, request())
        assert after["claims"] == {"c": 2}, after
        assert lookup.last_heads_served == 2


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


async def test_a_mongodb_outage_under_load_leaves_no_request_unanswered(
    settings: Settings, pool: SandboxPool, nc: NATS, tenant: str
) -> None:
    """100 req/s of a cached tenant (sign-ins already pinned, requests without a sign-in,
    new sign-ins) with ``deadline_ms: 2000`` and the client waiting that long (plus 250 ms
    for the network): MongoDB hung (SIGSTOP) for 6 s, then dead (SIGKILL) for 4 s, then
    started again on its files. Every request is answered by its deadline and decided; the
    new sign-ins decided meanwhile are pinned in MongoDB once it is back."""
    async with _own_mongodb(settings, pool, nc, mongodb_timeout_ms=500) as (mongo, runtime, admin):
        v = await custom(
            admin, tenant, "c", "export function execute() { return {claims: {c: 1}}; }"
        )
        await attach(admin, tenant, [("c", v)])
        pinned = [f"pinned-{i}" for i in range(20)]
        for s in pinned:  # pinned in MongoDB and cached, before the outage
            assert (await trigger(nc, tenant, request(signin_id=s)))["claims"] == {"c": 1}
        replies: list[tuple[str, dict[str, Any] | None]] = []
        new_signins: list[str] = []

        async def one(kind: str, i: int) -> None:
            fields: dict[str, Any] = {"deadline_ms": 2000}
            if kind == "pinned":
                fields["signin_id"] = pinned[i % len(pinned)]
            elif kind == "new":
                fields["signin_id"] = f"new-{i}"
            try:
                reply = await trigger(nc, tenant, request(**fields), timeout=2.25)
            except nats.errors.TimeoutError:
                reply = None
            replies.append((kind, reply))
            if kind == "new" and reply is not None and reply.get("pin_deferred"):
                new_signins.append(fields["signin_id"])

        async def load(seconds: float) -> None:
            tasks, start = [], time.monotonic()
            for i in range(int(seconds * 100)):
                await asyncio.sleep(max(0.0, start + i / 100 - time.monotonic()))
                kind = ("pinned", "unpinned", "new")[i % 3]
                tasks.append(asyncio.create_task(one(kind, i)))
            await asyncio.gather(*tasks)

        assert mongo.proc is not None
        running = asyncio.create_task(load(12.0))
        await asyncio.sleep(1.0)
        mongo.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(6.0)
        await asyncio.to_thread(mongo.kill)  # (a stopped process dies of SIGKILL too)
        await asyncio.sleep(4.0)
        await asyncio.to_thread(mongo.restart)
        back = time.monotonic()
        await running
        unanswered = [k for k, r in replies if r is None]
        undecided = [(k, r) for k, r in replies if r is not None and r["claims"] != {"c": 1}]
        assert len(replies) == 1200
        assert not unanswered, f"{len(unanswered)} unanswered: {unanswered[:5]}"
        assert not undecided, undecided[:3]
        assert new_signins, "no new sign-in was decided while MongoDB was away"
        pins = runtime.store.bucket("pins", tenant)
        while True:
            stored = await pins.count_documents(
                {"_id": {"$in": [f"{tenant}/{s}" for s in new_signins]}}
            )
            if stored == len(new_signins):
                break
            assert time.monotonic() - back < 30, f"{stored} of {len(new_signins)} pinned"
            await asyncio.sleep(0.1)
        print(
            f"\n{len(replies)} requests, {len(new_signins)} new sign-ins decided on deferred"
            f" pins, all pinned in MongoDB {time.monotonic() - back:.2f} s after its return"
        )


async def test_nats_restart_under_load_answers_or_refuses_and_loses_no_audit(
    settings: Settings, pool: SandboxPool, store: object, own_nats: Server, tenant: str
) -> None:
    """nats-server killed and restarted (same JetStream store) under 100 req/s: what a login
    service gets is a decision or ``unavailable``, or no answer while the server itself is
    gone; once it is back every request is decided again, and every decision's audit event
    is in the stream exactly once."""
    runtime, broker = await start_worker(
        settings.model_copy(update={"nats_url": own_nats.url}), pool
    )
    client = await nats.connect(own_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        api = AdminClient(client, timeout=30)
        await _continue_flow(api, tenant)
        assert (await trigger(client, tenant, request()))["decision"] == "continue"
        outcomes: list[tuple[float, str, str]] = []  # (sent at, request_id, outcome)
        started = time.monotonic()

        async def one() -> None:
            body = request(deadline_ms=2000)
            sent = time.monotonic() - started
            try:
                reply = await trigger(client, tenant, body, timeout=2.25)
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionReconnectingError,
            ):
                outcomes.append((sent, body["request_id"], "no answer"))
                return
            if reply["error"] is None:
                assert reply["decision"] == "continue", reply
                outcomes.append((sent, body["request_id"], "decided"))
            else:
                assert reply["error"]["code"] == "unavailable", reply
                assert reply["error"]["retryable"] is True, reply
                outcomes.append((sent, body["request_id"], "unavailable"))

        async def load(seconds: float) -> None:
            tasks = []
            for i in range(int(seconds * 100)):
                await asyncio.sleep(max(0.0, started + i / 100 - time.monotonic()))
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)

        running = asyncio.create_task(load(10.0))
        await asyncio.sleep(2.0)
        killed = time.monotonic() - started
        await asyncio.to_thread(own_nats.kill)
        await asyncio.to_thread(own_nats.restart)
        back = time.monotonic() - started
        await running
        assert len(outcomes) == 1000
        counts = {k: sum(1 for o in outcomes if o[2] == k) for k in ("decided", "unavailable")}
        late = [o for o in outcomes if o[0] > back + 3.0]  # sent 3 s after the restart
        assert late
        assert all(o[2] == "decided" for o in late), [o for o in late if o[2] != "decided"][:5]
        # Sent a second before the kill: a loaded machine may hold one a few hundred ms.
        before = [o for o in outcomes if o[0] < killed - 1.0]
        assert before
        assert all(o[2] == "decided" for o in before), [o for o in before if o[2] != "decided"]
        decided = {rid for _, rid, kind in outcomes if kind == "decided"}
        stored = [e["request_id"] async for e in _events(client, tenant)]
        assert len(stored) == len(set(stored)), "an audit event stored twice"
        assert decided <= set(stored), f"{len(decided - set(stored))} decisions without audit"
        print(f"\nnats-server back {back:.2f} s in; {counts}, {1000 - sum(counts.values())} lost")
    finally:
        await client.close()
        await stop_worker(runtime, broker)


async def test_a_close_that_fails_leaves_the_others_to_run(
    settings: Settings,
    pool: SandboxPool,
    nc: NATS,
    tenant: str,
    admin: AdminService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker's last activity write fails at shutdown: the storage client and every
    close after it still run, the failure is logged with its step and raised."""
    runtime, broker = await start_worker(settings, pool)
    v = await custom(admin, tenant, "c", "export function execute() { return {kind: 'continue'}; }")
    await attach(admin, tenant, [("c", v)])
    assert (await trigger(nc, tenant, request()))["decision"] == "continue"  # activity to write
    closed: list[str] = []
    store_close = runtime.store.aclose

    async def failing_write(*_: Any) -> None:
        raise RuntimeError("the disk is full")

    async def closing_store() -> None:
        closed.append("storage")
        await store_close()

    runtime.store.record_activity = failing_write  # type: ignore[method-assign]
    runtime.store.aclose = closing_store  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="the disk is full"):
        await stop_worker(runtime, broker)
    assert closed == ["storage"]
    assert "closing the tenant activity failed; closing the rest" in caplog.text
