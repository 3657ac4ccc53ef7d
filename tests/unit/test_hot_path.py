"""The decision path's building blocks: one shared deadline timer, events and script input
encoded once (equal to what the models would give), and flow heads loaded once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehook.audit.reader import events_of
from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.contract import (
    ActionInput,
    ActionOutput,
    DecisionRecord,
    TriggerReply,
    TriggerRequest,
)
from gatehook.domain.decide import Step, decide, reply_fields
from gatehook.domain.model import ActionKind, ActionVersion, ScriptStyle, TenantHeads
from gatehook.errors import StorageUnavailable
from gatehook.process.deadlines import Deadlines
from gatehook.service.call import Call
from gatehook.service.encoding import encode_reply, event_id, reply_of_record
from gatehook.service.ports import ScriptJob, ScriptRun
from gatehook.service.trigger import TriggerService
from gatehook.settings import AuditSettings, Settings
from gatehook.templates.registry import TemplateRegistry


async def test_deadlines_fire_in_order_and_cancelled_ones_never() -> None:
    deadlines = Deadlines()
    fired: list[str] = []
    now = time.monotonic()
    done = asyncio.get_running_loop().create_future()
    deadlines.at(now + 0.03, lambda: fired.append("c"))
    deadlines.at(now + 0.01, lambda: fired.append("a"))
    cancelled = deadlines.at(now + 0.02, lambda: fired.append("never"))
    deadlines.at(now + 0.02, lambda: fired.append("b"))
    deadlines.at(now + 0.04, lambda: done.set_result(None))
    cancelled.cancel()
    await asyncio.wait_for(done, 2)
    assert fired == ["a", "b", "c"]
    assert len(deadlines) == 0


async def test_deadlines_timeout_raises_at_the_deadline_only() -> None:
    deadlines = Deadlines()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with deadlines.timeout(started + 0.05):
            await asyncio.sleep(5)
    assert 0.04 <= time.monotonic() - started < 1.0
    async with deadlines.timeout(time.monotonic() + 5):
        await asyncio.sleep(0)  # met: no error, and the entry is cancelled
    assert all(entry.cancelled for _, _, entry in deadlines._heap)


async def test_deadlines_timeout_does_not_swallow_an_outside_cancel() -> None:
    deadlines = Deadlines()

    async def body() -> None:
        async with deadlines.timeout(time.monotonic() + 5):
            await asyncio.sleep(5)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class _Flows:
    """A FlowSource whose heads queries can be held open and counted."""

    def __init__(self) -> None:
        self.queries = 0
        self.gate = asyncio.Event()
        self.revision = 1

    async def tenant_heads(self, tenant: str) -> TenantHeads:
        self.queries += 1
        await self.gate.wait()
        return TenantHeads(revisions=dict.fromkeys(FlowType, self.revision))

    async def get_flow(self, *args: Any) -> None:
        self.queries += 1
        await self.gate.wait()
        return

    async def get_version(self, *args: Any) -> None:
        return None

    async def pin_signin(self, *args: Any) -> Any:
        raise NotImplementedError


def _service(flows: _Flows, ttl: float = 60.0) -> TriggerService:
    return TriggerService(
        flows=flows,
        scripts=None,  # type: ignore[arg-type]
        templates=TemplateRegistry([]),
        journal=None,  # type: ignore[arg-type]
        settings=Settings(flow_cache_ttl_s=ttl, worker_name="w1"),
        deadlines=Deadlines(),
    )


async def test_heads_after_a_change_are_loaded_once_for_all_waiting_requests() -> None:
    flows = _Flows()
    service = _service(flows)
    waiting = [asyncio.create_task(service.lookup.heads("acme")) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert flows.queries == 1  # not one query per request
    flows.gate.set()
    results = await asyncio.gather(*waiting)
    assert all(r[FlowType.EXTERNAL_AUTHENTICATION] == 1 for r in results)
    service.invalidate("acme")  # a change broadcast: the next request waits for the new heads
    flows.revision = 2
    assert (await service.lookup.heads("acme"))[FlowType.EXTERNAL_AUTHENTICATION] == 2
    assert flows.queries == 2


async def test_stale_heads_are_served_while_one_refresh_runs() -> None:
    flows = _Flows()
    flows.gate.set()
    service = _service(flows, ttl=0.01)
    assert (await service.lookup.heads("acme"))[FlowType.EXTERNAL_AUTHENTICATION] == 1
    await asyncio.sleep(0.02)  # past the TTL
    flows.gate.clear()
    flows.revision = 2
    answers = [await service.lookup.heads("acme") for _ in range(20)]  # none waits for the query
    assert all(a[FlowType.EXTERNAL_AUTHENTICATION] == 1 for a in answers)
    await asyncio.sleep(0.01)  # the refresh task gets its turn
    assert flows.queries == 2  # one refresh for all of them
    flows.gate.set()
    await asyncio.sleep(0.01)
    assert (await service.lookup.heads("acme"))[FlowType.EXTERNAL_AUTHENTICATION] == 2


async def test_a_reload_mongodb_does_not_answer_falls_back_on_the_last_heads() -> None:
    flows = _Flows()
    flows.gate.set()
    service = _service(flows)
    lookup = service.lookup
    assert (await lookup.heads("acme"))[FlowType.EXTERNAL_AUTHENTICATION] == 1
    flows.gate.clear()  # MongoDB hangs
    flows.revision = 2
    service.invalidate("acme")
    deadline = time.monotonic() + 0.2
    heads = await lookup.heads("acme", deadline)  # waits half of what is left, then the last
    assert heads[FlowType.EXTERNAL_AUTHENTICATION] == 1
    assert time.monotonic() < deadline
    assert lookup.last_heads_served == 1
    assert lookup.disabled("acme") == {}  # the kill switches of the heads served
    unbounded = asyncio.create_task(lookup.heads("acme"))  # no deadline: the reload itself
    await asyncio.sleep(0.01)
    assert not unbounded.done()
    assert flows.queries == 2  # one reload for both
    flows.gate.set()
    assert (await unbounded)[FlowType.EXTERNAL_AUTHENTICATION] == 2
    assert (await lookup.heads("acme", time.monotonic() + 1))[FlowType.EXTERNAL_AUTHENTICATION] == 2
    assert lookup.last_heads_served == 1


async def test_a_flow_or_version_read_gives_up_by_the_deadline() -> None:
    flows = _Flows()  # MongoDB hangs
    lookup = _service(flows).lookup
    ft = FlowType.EXTERNAL_AUTHENTICATION
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="flow revision external_authentication#3"):
        await lookup.flow("acme", ft, 3, started + 0.05)
    assert time.monotonic() - started < 1.0
    flows.gate.set()
    assert await lookup.flow("acme", ft, 3, time.monotonic() + 1) is None  # answered: no flow


def _request(**extra: Any) -> TriggerRequest:
    body = {
        "request_id": "r-1",
        "signin_id": "s-1",
        "user": {"id": "u1", "email": "ann@acme.com", "custom": {"deep": [1, 2]}},
        "request": {"ip": "203.0.113.7", "risk_score": 0.5},
        "context": {"providerInfo": {"name": "okta"}},
        **extra,
    }
    return TriggerRequest.model_validate_json(orjson.dumps(body))


def test_script_input_is_the_action_input_model_as_json() -> None:
    req = _request(state={"n": 1}, loose_field="kept")
    ft, tr = FlowType.EXTERNAL_AUTHENTICATION, Trigger.POST_AUTHENTICATION
    call = Call("acme", ft, tr, req, time.monotonic() + 1)
    # the tail a script's input ends with: its config, then its action's secrets (lookup)
    built = orjson.loads(call.input_prefix + b'{"k":"v"},"secrets":{"API_KEY":"s3"}}')
    inp = req.action_input("acme", ft.value, tr.value, {"k": "v"})
    model = inp.model_copy(update={"secrets": {"API_KEY": "s3"}}).model_dump(mode="json")
    for key in ("action", "decision_so_far", "time_left_ms"):  # templates only
        del model[key]
    del model["cache"]  # Auth0 Actions that use api.cache only
    assert built == model
    assert built["context"]["loose_field"] == "kept"


def test_a_template_input_is_built_with_every_field_given() -> None:
    """A field model_construct has to fill from a default_factory costs an inspect.signature
    per run: the template input names all of them, and equals the validated model."""
    req = _request(state={"n": 1})
    ft, tr = FlowType.EXTERNAL_AUTHENTICATION, Trigger.POST_AUTHENTICATION
    call = Call("acme", ft, tr, req, time.monotonic() + 1)
    inp = call.template_input("allow", "continue", 90.0)
    assert inp.model_fields_set == set(ActionInput.model_fields)
    expected = req.action_input("acme", ft.value, tr.value, {}).model_copy(
        update={"action": "allow", "decision_so_far": "continue", "time_left_ms": 90.0}
    )
    assert inp.model_dump() == expected.model_dump()


def test_the_decision_record_equals_its_model_and_reads_as_the_events() -> None:
    service = _service(_Flows())
    req = _request()
    ft, tr = FlowType.EXTERNAL_AUTHENTICATION, Trigger.POST_AUTHENTICATION
    call = Call("acme", ft, tr, req, time.monotonic() + 1)
    steps = [
        Step("a", "1.0.0", output=ActionOutput(kind="continue"), duration_ms=0.12345),
        Step("b", "2.0.0", error="timeout: 5 ms", allowed_to_fail=True),
    ]
    fields = reply_fields("r-1", 7, steps, [("a", "1.0.0"), ("b", "2.0.0")])
    reply = encode_reply(fields)
    key = service._reply_key("acme", ft.value, tr.value, "r-1")
    encoded = service._record(call, key, 7, steps, fields, reply, pin_deferred=True)
    assert (encoded.tenant, encoded.type) == ("acme", "flow.decided")
    assert encoded.event_id == key
    model = DecisionRecord.model_validate_json(encoded.data)
    assert encoded.data == model.model_dump_json().encode()  # same fields, same order
    assert reply_of_record(encoded.data) == reply  # what a retry gets: the reply given
    events = model.events()
    assert [(e.type, e.action, e.outcome, e.flow_revision) for e in events] == [
        ("flow.action_executed", "a", "continue", 7),
        ("flow.action_executed", "b", "error", 7),
    ]
    assert events[0].duration_ms == 0.123
    assert events[1].error == "timeout: 5 ms"
    assert all(e.details == {"pin_deferred": True} for e in events)
    # the ids the events had when each was a message of its own: stable across retries
    assert events[1].event_id == event_id("acme", ft.value, tr.value, "r-1", 1, "b@2.0.0")
    # a reader sees the executions, and nothing of a message that is not ours
    assert [e.action for e in events_of(encoded.data, "flow.action_executed")] == ["a", "b"]
    assert events_of(encoded.data, "flow.action_attached") == []
    assert events_of(b'{"not": "ours"}') == []


def test_lanes_follow_the_replicas_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AuditSettings().lanes == 1  # a single node: one lane
    assert AuditSettings(replicas=3).lanes == 3  # one per replica
    assert AuditSettings(replicas=3, lanes=1).lanes == 1  # set: kept
    monkeypatch.setenv("GATEHOOK_AUDIT__REPLICAS", "5")
    assert Settings().audit.lanes == 5


def test_nats_url_takes_a_list_of_servers() -> None:
    s = Settings(nats_url="nats://a:4222, nats://b:4222,nats://c:4222")
    assert s.nats_servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert Settings(nats_url="nats://a:4222").nats_servers == ["nats://a:4222"]


class _QueuedScripts:
    """A ScriptRunner whose calls wait ``wait_s`` for a child (queueing) and then report
    ``ran_ms`` of running in it."""

    def __init__(self, wait_s: float, ran_ms: float) -> None:
        self.wait_s, self.ran_ms = wait_s, ran_ms

    async def run(self, job: ScriptJob) -> ScriptRun:
        await asyncio.sleep(self.wait_s)
        return ScriptRun(b'{"kind": "continue"}', [], self.ran_ms)


@pytest.mark.parametrize(("ran_ms", "grows"), [(1.0, True), (200.0, False)])
async def test_the_tenant_limiter_judges_a_script_by_its_run_not_its_queueing(
    ran_ms: float, grows: bool
) -> None:
    """Under load a fast tenant's calls wait for a child; that wait must not shrink its
    sandbox limit to the floor (which queued it more); a slow run still does."""
    service = TriggerService(
        flows=_Flows(),
        scripts=_QueuedScripts(wait_s=0.08, ran_ms=ran_ms),
        templates=TemplateRegistry([]),
        journal=None,  # type: ignore[arg-type]
        settings=Settings(worker_name="w1"),
        deadlines=Deadlines(),
    )
    version = ActionVersion(
        tenant="acme",
        action="js",
        version="1.0.0",
        kind=ActionKind.CUSTOM,
        compiled="exports.execute = () => ({})",
        style=ScriptStyle.MODULE,
        content_hash="x",
        created_at=datetime.now(UTC),
    )
    call = Call(
        "acme",
        FlowType.EXTERNAL_AUTHENTICATION,
        Trigger.POST_AUTHENTICATION,
        _request(),
        time.monotonic() + 10,
    )
    floor = service.runner.fairness.limit("acme")
    for _ in range(3):
        await asyncio.gather(
            *(service.runner.execute(call, version, 5.0, []) for _ in range(floor))
        )
    assert (service.runner.fairness.limit("acme") > floor) is grows


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _rich_steps(draw: st.DrawFn) -> Step:
    name, version = draw(st.sampled_from(["a", "b", "ü"])), draw(st.sampled_from(["1.0.0", "2"]))
    duration = draw(st.floats(0, 5000, allow_nan=False))
    if draw(st.integers(0, 4)) == 0:
        error = draw(st.text(max_size=10))
        return Step(
            name, version, error=error, allowed_to_fail=draw(st.booleans()), duration_ms=duration
        )
    kind = draw(st.sampled_from(["continue", "block", "demand_mfa", "redirect"]))
    output = ActionOutput.model_validate(
        {
            "kind": kind,
            "reason": draw(st.none() | st.text(max_size=6)),
            "message": draw(st.none() | st.text(max_size=6)),
            "redirect_url": "https://x.example/ä?q=1" if kind == "redirect" else None,
            "claims": draw(st.dictionaries(st.text(max_size=4), _json_values, max_size=3)),
            "user_updates": draw(st.dictionaries(st.text(max_size=4), _json_values, max_size=2)),
            "metadata": [{"key": "k", "value": draw(_json_values)}] if draw(st.booleans()) else [],
            "saml_attributes": {"role": draw(st.lists(st.text(max_size=3), max_size=2))},
            "user_grants": [{"project_id": "p", "roles": ["r"], "extra": 1}]
            if draw(st.booleans())
            else [],
        }
    )
    return Step(
        name, version, output=output, allowed_to_fail=draw(st.booleans()), duration_ms=duration
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_rich_steps(), max_size=6), st.integers(0, 3), st.none() | st.integers(1, 10**6))
def test_encoded_reply_equals_the_validated_reply_model(
    steps: list[Step], extra: int, revision: int | None
) -> None:
    """The decision path encodes ``reply_fields`` with orjson; it must be what the reply model
    (validated from the same fields) gives, byte for byte."""
    attachments = [(s.name, s.version) for s in steps] + [("late", "9")] * extra
    fields = reply_fields("req-1", revision, steps, attachments)
    body = encode_reply(fields)
    validated = TriggerReply.model_validate(
        decide("req-1", revision, steps, attachments).model_dump()
    )
    assert body == validated.model_dump_json().encode()
    assert decide("req-1", revision, steps, attachments) == validated


def test_a_reply_beyond_orjson_is_encoded_through_the_model() -> None:
    step = Step("a", "1", output=ActionOutput(claims={"big": 2**70}))
    fields = reply_fields("req-1", 1, [step], [("a", "1")])
    assert orjson.loads(encode_reply(fields).replace(b"1180591620717411303424", b"0"))[
        "claims"
    ] == {"big": 0}
    assert b'"big":1180591620717411303424' in encode_reply(fields)
