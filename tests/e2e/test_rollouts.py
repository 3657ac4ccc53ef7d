"""Safe change of live flows on two workers: canary share and stickiness, automatic rollback
of a failing canary, shadow runs that never reach the reply, the kill switch, promote/abort,
and what a re-applied file does to an ended rollout."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.admin.service import AdminService
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from tests.support.tenants import audit_events, custom, request, trigger
from tests.support.workers import Worker, start_worker, stop_worker

PA = ("external_authentication", "post_authentication")


def module(body: str) -> str:
    return f"export async function execute(input) {{ {body} }}"


@pytest.fixture
async def second(settings: Settings, pool: SandboxPool, worker: Worker) -> AsyncIterator[Worker]:
    """A second worker in the queue group (the first is ``worker``)."""
    runtime, broker = await start_worker(settings.model_copy(update={"worker_name": "w2"}), pool)
    yield Worker(runtime, broker)
    await stop_worker(runtime, broker)


async def apply(nc: NATS, tenant: str, file: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await AdminClient(nc, actor="ops", timeout=60).call(
        tenant, "apply", file=file
    )
    return result


def gate_file(slot_entry: Any, versions: dict[str, str]) -> dict[str, Any]:
    return {"actions": [], "flows": {PA[0]: {PA[1]: [slot_entry]}}, **versions}


async def publish_versions(admin: AdminService, tenant: str, bodies: list[str]) -> list[str]:
    # A timeout well above these scripts' microseconds: the tests count versions and errors
    # over a thousand sign-ins, and on a loaded machine a stalled second must not read as a
    # failing version (the hostile and latency cases are tested and measured elsewhere).
    return [await custom(admin, tenant, "gate", module(b), timeout_ms=2500) for b in bodies]


async def many(nc: NATS, tenant: str, bodies: list[dict[str, Any]], width: int = 40) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(bodies), width):
        out += await asyncio.gather(*(trigger(nc, tenant, b) for b in bodies[i : i + width]))
    return out


async def wait_for(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_canary_share_and_stickiness(
    worker: Worker, second: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    stable, canary = await publish_versions(
        admin,
        tenant,
        [
            "return {kind: 'continue', claims: {v: 1}};",
            "return {kind: 'continue', claims: {v: 2}};",
        ],
    )
    # (no automatic rollback here: on a loaded machine a slow request fails either version)
    entry = {
        "use": f"gate@{stable}",
        "canary": f"gate@{canary}",
        "percent": 20,
        "rollback": {"error_rate": 1.0},
    }
    plan = await apply(nc, tenant, {"flows": {PA[0]: {PA[1]: [entry]}}})
    assert any("canary 1.0.1" in c for c in plan["changes"]), plan
    # 1,000 sign-ins that send no signin_id: each request is its own (sticky by request_id)
    replies = await many(nc, tenant, [request() for _ in range(1000)])
    assert all(r["error"] is None for r in replies), [r["error"] for r in replies if r["error"]]
    ran = [r["actions"][0]["version"] for r in replies]
    share = ran.count(canary) / len(ran) * 100
    assert 15 <= share <= 25, share  # +-5 points of 20 %
    wrong = [
        (v, r)
        for r, v in zip(replies, ran, strict=True)
        if r["claims"].get("v") != (2 if v == canary else 1)
    ]
    assert not wrong, wrong[:3]
    assert worker.runtime.triggers.handled > 50
    assert second.runtime.triggers.handled > 50
    # sticky: every trigger of one sign-in (on whichever worker) runs the same version
    signins = [f"s-{uuid.uuid4().hex[:12]}" for _ in range(100)]
    first = await many(nc, tenant, [request(signin_id=s) for s in signins], width=10)
    again = await many(nc, tenant, [request(signin_id=s) for s in signins], width=10)
    versions = [r["actions"][0]["version"] for r in first]
    assert [r["actions"][0]["version"] for r in again] == versions
    assert set(versions) == {stable, canary}  # both sides are taken by some sign-in
    events = await audit_events(nc, tenant, "flow.rollout_started")
    assert len(events) == 1
    assert events[0]["details"]["rollout"]["canary"] == canary


async def test_failing_canary_is_rolled_back_on_both_workers(
    worker: Worker, second: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    stable, canary = await publish_versions(
        admin, tenant, ["return {kind: 'continue'};", "throw new Error('broken release');"]
    )
    entry = {
        "use": f"gate@{stable}",
        "canary": f"gate@{canary}",
        "percent": 50,
        "rollback": {"error_rate": 0.2, "min_runs": 20},
    }
    file = {"flows": {PA[0]: {PA[1]: [entry]}}}
    await apply(nc, tenant, file)
    replies = await many(nc, tenant, [request() for _ in range(80)])
    failed = [r for r in replies if r["reason"] == "action_error"]
    assert failed  # the canary failed closed while it ran

    async def rolled_back() -> Any:
        return await audit_events(nc, tenant, "flow.rollout_rolled_back")

    events = await wait_for(rolled_back)
    assert len(events) == 1, events  # once, though both workers watch it
    details = events[0]["details"]
    assert details["state"] == "rolled_back"
    assert details["runs"] >= 20
    assert details["failures"] / details["runs"] > 0.2
    flow = await admin.flow(tenant, PA[0])
    assert flow is not None
    assert flow.slot(PA[1])[0].rollout is not None
    assert flow.slot(PA[1])[0].rollout.state == "rolled_back"  # type: ignore[union-attr]
    # within 1 s of the rollback every worker runs the stable version only
    await asyncio.sleep(1.0)
    before = (worker.runtime.triggers.handled, second.runtime.triggers.handled)
    after = await many(nc, tenant, [request() for _ in range(60)])
    assert {r["actions"][0]["version"] for r in after} == {stable}
    assert all(r["decision"] == "continue" for r in after)
    assert worker.runtime.triggers.handled > before[0]
    assert second.runtime.triggers.handled > before[1]
    # the same file again leaves it rolled back; a new canary version starts a new rollout
    assert (await apply(nc, tenant, file))["changes"] == []
    fixed = await custom(
        admin, tenant, "gate", module("return {kind: 'continue', claims: {f: 1}};")
    )
    entry2 = {**entry, "canary": f"gate@{fixed}"}
    plan = await apply(nc, tenant, {"flows": {PA[0]: {PA[1]: [entry2]}}})
    assert plan["changes"], plan
    flow = await admin.flow(tenant, PA[0])
    assert flow is not None
    r = flow.slot(PA[1])[0].rollout
    assert r is not None
    assert (r.state, r.canary) == ("running", fixed)


async def test_shadow_never_reaches_the_reply_and_is_audited_once_per_run(
    worker: Worker, second: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    live, shadow = await publish_versions(
        admin,
        tenant,
        [
            "return {kind: 'continue', claims: {tier: 'gold', keep: 1}};",
            "return {kind: 'block', reason: 'tier', claims: {tier: 'silver', extra: 2}};",
        ],
    )
    await apply(
        nc,
        tenant,
        {"flows": {PA[0]: {PA[1]: [{"use": f"gate@{live}", "shadow": f"gate@{shadow}"}]}}},
    )
    ids = []
    for _ in range(30):
        body = request()
        ids.append(body["request_id"])
        reply = await trigger(nc, tenant, body)
        assert reply["decision"] == "continue"
        assert reply["claims"] == {"tier": "gold", "keep": 1}
        assert [a["version"] for a in reply["actions"]] == [live]

    async def shadowed() -> Any:
        events = await audit_events(nc, tenant, "flow.action_shadowed")
        return events if len(events) >= 30 else None

    events = await wait_for(shadowed)
    assert events is not None
    assert sorted(e["request_id"] for e in events) == sorted(ids)  # one per run
    diff = events[0]["details"]["diff"]
    assert diff["decision"] == {"live": "continue", "shadow": "block"}
    assert diff["claims"] == {"added": ["extra"], "removed": ["keep"], "changed": ["tier"]}
    assert set(diff["kinds"]) == {"decision", "reason", "claims"}
    dropped = worker.runtime.shadows.dropped + second.runtime.shadows.dropped
    assert dropped == 0

    async def counted() -> Any:
        rows = await AdminClient(nc).call(tenant, "rollouts.status")
        return rows if rows and rows[0]["shadow_runs"]["runs"] >= 30 else None

    rows = await wait_for(counted)
    assert rows is not None
    assert rows[0]["shadow_runs"]["differed_share"] == 1.0
    assert rows[0]["shadow_runs"]["by_kind"]["decision"] == 30


async def test_kill_switch_on_both_workers_at_once(
    worker: Worker, second: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    (v,) = await publish_versions(admin, tenant, ["return {kind: 'continue', claims: {a: 1}};"])
    await apply(nc, tenant, {"flows": {PA[0]: {PA[1]: [f"gate@{v}"]}}})
    assert all(
        r["claims"] == {"a": 1} for r in await many(nc, tenant, [request() for _ in range(20)])
    )
    client = AdminClient(nc, actor="oncall")
    await client.call(
        tenant, "actions.disable", name="gate", reason="bad release", fallback="block"
    )
    # the switch holds from the first request after the call returns, on both workers (no
    # wall-clock bound here: a loaded CI machine takes over 1 s for 40 requests)
    before = (worker.runtime.triggers.handled, second.runtime.triggers.handled)
    replies = await many(nc, tenant, [request() for _ in range(40)])
    assert all(r["decision"] == "block" and r["reason"] == "action_disabled" for r in replies)
    assert all(r["actions"][0]["outcome"] == "disabled" for r in replies)
    assert worker.runtime.triggers.handled > before[0]
    assert second.runtime.triggers.handled > before[1]
    await client.call(tenant, "actions.enable", name="gate", reason="fixed")
    assert (await trigger(nc, tenant, request()))["claims"] == {"a": 1}
    off = await audit_events(nc, tenant, "flow.action_disabled")
    on = await audit_events(nc, tenant, "flow.action_enabled")
    assert (off[0]["actor"], off[0]["details"]) == (
        "oncall",
        {"reason": "bad release", "fallback": "block"},
    )
    assert on[0]["details"] == {"reason": "fixed"}
    # the continue fallback: the slot goes on without the action's changes
    await client.call(tenant, "actions.disable", name="gate", reason="noisy")
    reply = await trigger(nc, tenant, request())
    assert (reply["decision"], reply["claims"]) == ("continue", {})


async def test_promote_and_abort(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    stable, canary = await publish_versions(
        admin,
        tenant,
        [
            "return {kind: 'continue', claims: {v: 1}};",
            "return {kind: 'continue', claims: {v: 2}};",
        ],
    )
    entry = {"use": f"gate@{stable}", "canary": f"gate@{canary}", "percent": 10}
    await apply(nc, tenant, {"flows": {PA[0]: {PA[1]: [entry]}}})
    client = AdminClient(nc, actor="ops")
    slot = {"flow_type": PA[0], "trigger": PA[1], "action": "gate"}
    await client.call(tenant, "rollouts.promote", **slot)
    replies = await many(nc, tenant, [request() for _ in range(20)])
    assert {r["actions"][0]["version"] for r in replies} == {canary}
    promoted = await audit_events(nc, tenant, "flow.rollout_promoted")
    assert (promoted[0]["version"], promoted[0]["previous_version"]) == (canary, stable)
    assert await audit_events(nc, tenant, "flow.rollout_rolled_back") == []  # promoted only
    with pytest.raises(Exception, match="no rollout of gate"):
        await client.call(tenant, "rollouts.abort", **slot)
    # a new rollout, aborted: the stable version alone runs again
    third = await custom(
        admin, tenant, "gate", module("return {kind: 'continue', claims: {v: 3}};")
    )
    entry = {"use": f"gate@{canary}", "canary": f"gate@{third}", "percent": 100}
    await apply(nc, tenant, {"flows": {PA[0]: {PA[1]: [entry]}}})
    assert (await trigger(nc, tenant, request()))["claims"] == {"v": 3}
    await client.call(tenant, "rollouts.abort", **slot)
    assert (await trigger(nc, tenant, request()))["claims"] == {"v": 2}

    async def reported() -> Any:  # counts arrive with each worker's next report
        rows = await client.call(tenant, "rollouts.status", flow_type=PA[0], trigger=PA[1])
        return rows if rows[0]["runs"]["canary"]["runs"] >= 1 else None

    status = await wait_for(reported)
    assert status is not None
    assert status[0]["state"] == "aborted"

    # a running rollout whose entry is pinned to another version ends, and says so
    entry = {"use": f"gate@{canary}", "canary": f"gate@{third}", "percent": 50}
    await apply(nc, tenant, {"flows": {PA[0]: {PA[1]: [entry]}}})
    await client.call(tenant, "flows.update", **slot, version=stable)
    assert (await trigger(nc, tenant, request()))["claims"] == {"v": 1}
    ended = [
        e
        for e in await audit_events(nc, tenant, "flow.rollout_rolled_back")
        if e["details"].get("reason")
    ]
    assert len(ended) == 1
    assert (ended[0]["version"], ended[0]["previous_version"]) == (stable, canary)
    assert ended[0]["details"]["state"] == "aborted"
    assert ended[0]["details"]["reason"] == "replaced"
    assert ended[0]["details"]["canary"] == third


async def test_cli_rollout_status_and_kill_switch(
    worker: Worker, settings: Settings, nc: NATS, admin: AdminService, tenant: str
) -> None:
    from tests.support.processes import cli

    stable, canary = await publish_versions(
        admin, tenant, ["return {kind: 'continue'};", "return {kind: 'continue', claims: {c: 1}};"]
    )
    entry = {
        "use": f"gate@{stable}",
        "canary": f"gate@{canary}",
        "percent": 50,
        "shadow": f"gate@{canary}",
    }
    await apply(nc, tenant, {"flows": {PA[0]: {PA[1]: [entry]}}})
    await many(nc, tenant, [request() for _ in range(40)])
    await asyncio.sleep(0.5)  # a report or two
    shown = await cli(settings, "rollout", "status", "-t", tenant, "--json")
    rows = json.loads(shown.stdout)
    assert rows[0]["state"] == "running"
    total = rows[0]["runs"]["stable"]["runs"] + rows[0]["runs"]["canary"]["runs"]
    assert total == 40
    table = await cli(settings, "rollout", "status", "-t", tenant, f"{PA[0]}.{PA[1]}")
    assert "running" in table.stdout
    assert "gate" in table.stdout
    await cli(settings, "rollout", "promote", "-t", tenant, f"{PA[0]}.{PA[1]}", "--action", "gate")
    assert (await trigger(nc, tenant, request()))["claims"] == {"c": 1}
    off = await cli(
        settings,
        "actions",
        "disable",
        "-t",
        tenant,
        "gate",
        "--reason",
        "incident 42",
        "--fallback",
        "block",
    )
    assert "gate disabled (fallback: block)" in off.stdout
    assert (await trigger(nc, tenant, request()))["reason"] == "action_disabled"
    await cli(settings, "actions", "enable", "-t", tenant, "gate", "--reason", "resolved")
    assert (await trigger(nc, tenant, request()))["decision"] == "continue"


async def test_replay_of_recorded_requests(
    worker: Worker, settings: Settings, nc: NATS, admin: AdminService, tenant: str
) -> None:
    from tests.support.processes import cli

    v1, v2 = await publish_versions(
        admin,
        tenant,
        [
            "return {kind: 'continue', claims: {d: input.user.email.split('@')[1]}};",
            "if (input.user.email.endsWith('@evil.example')) return {kind: 'block', reason: 'evil'};"
            " return {kind: 'continue', claims: {d: input.user.email.split('@')[1]}};",
        ],
    )
    await apply(nc, tenant, {"flows": {PA[0]: {PA[1]: [f"gate@{v1}"]}}})
    client = AdminClient(nc, actor="ops")
    await client.call(
        tenant,
        "recordings.set",
        flow_type=PA[0],
        trigger=PA[1],
        redact=["request.ip", "user.phone"],
    )
    bodies = []
    for i in range(1000):
        body = request()
        body["user"]["email"] = f"u{i}@{'evil.example' if i % 7 == 0 else 'acme.com'}"
        body["user"]["phone"] = f"+1-555-01{i:04d}"
        body["request"]["ip"] = f"198.51.{100 + i // 250}.{i % 250}"
        bodies.append(body)
    replies = await many(nc, tenant, bodies)
    assert all(r["decision"] == "continue" for r in replies)
    js = nc.jetstream()
    subject = f"gatehook.v1.recordings.{tenant}.{PA[0]}.{PA[1]}"

    async def recorded() -> Any:
        info = await js.stream_info("GATEHOOK_RECORDINGS", subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0) >= 1000

    assert await wait_for(recorded)
    # the redacted fields never reach the stream
    sub = await js.subscribe(subject, ordered_consumer=True)
    raw = [(await sub.next_msg(timeout=5)).data for _ in range(1000)]
    await sub.unsubscribe()
    assert all(b"+1-555-01" not in d and b"198.51." not in d for d in raw)
    assert all(json.loads(d)["user"]["phone"] == "[redacted]" for d in raw)

    # computed directly: v2 blocks exactly the evil.example sign-ins, all of which continued
    expected = sum(1 for b in bodies if b["user"]["email"].endswith("@evil.example"))
    report = await AdminClient(nc, timeout=300).call(
        tenant, "replay", flow_type=PA[0], trigger=PA[1], since_s=600, **{"with": f"gate@{v2}"}
    )
    assert report["replayed"] == 1000
    assert report["changed"] == expected
    assert report["by_kind"] == {"decision": expected, "reason": expected, "claims": expected}
    assert report["transitions"] == {"continue -> block": expected}
    assert report["examples"][0]["replayed"]["decision"] == "block"
    # against the live version itself nothing changes, and nothing was audited by replays
    same = await client.call(
        tenant, "replay", flow_type=PA[0], trigger=PA[1], since_s=600, **{"with": f"gate@{v1}"}
    )
    assert (same["replayed"], same["changed"]) == (1000, 0)
    executed = await audit_events(nc, tenant, "flow.action_executed")
    assert len(executed) == 1000
    shown = await cli(
        settings, "replay", "-t", tenant, "--slot", f"{PA[0]}.{PA[1]}", "--since", "10m",
        "--with", f"gate@{v2}",
    )  # fmt: skip
    assert f"1000 recorded requests replayed against gate@{v2}: {expected} would change" in (
        shown.stdout
    )
