"""Audit consumers and forensics against a real stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.audit.forensics import why
from gatehook.audit.reader import read_events
from gatehook.client import GatehookClient
from gatehook.settings import Settings
from tests.support.processes import services_ready, spawn_worker
from tests.support.tenants import request, trigger
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
PA = {"flow_type": "external_authentication", "trigger": "post_authentication"}
CONTINUE = "export function execute() { return {kind: 'continue'}; }"
BLOCK = "export function execute() { return {kind: 'block', reason: 'oops'}; }"


async def incident(nc: NATS, tenant: str) -> datetime:
    """v1.0.0 runs fine; v1.1.0 (blocks everyone) is pinned at the returned moment."""
    api = AdminClient(nc, actor="mallory")
    await api.call(tenant, "actions.create", name="gate")
    await api.call(tenant, "actions.publish", name="gate", source=CONTINUE)
    await api.call(tenant, "actions.create", name="fine")
    await api.call(tenant, "actions.publish", name="fine", source=CONTINUE)
    await api.call(tenant, "flows.attach", action="fine", **PA)
    await api.call(tenant, "flows.attach", action="gate", **PA)
    for _ in range(5):
        assert (await trigger(nc, tenant, request()))["decision"] == "continue"
    await api.call(tenant, "actions.publish", name="gate", source=BLOCK, bump="minor")
    await asyncio.sleep(0.05)
    moment = datetime.now(UTC)
    await api.call(tenant, "flows.update", action="gate", version="1.1.0", **PA)
    for _ in range(5):
        assert (await trigger(nc, tenant, request()))["decision"] == "block"
    return moment


async def test_why_names_the_change(
    worker: Worker, nc: NATS, tenant: str, settings: Settings
) -> None:
    moment = await incident(nc, tenant)
    events = [
        e
        async for e in read_events(
            nc.jetstream(), tenant=tenant, since=moment - timedelta(minutes=30)
        )
    ]
    report = why(events, moment)
    assert report.culprit is not None
    c = report.culprit
    assert (c.change.type, c.change.action, c.change.version, c.change.actor) == (
        "flow.action_updated",
        "gate",
        "1.1.0",
        "mallory",
    )
    assert (c.before.rate, c.after.rate) == (0.0, 1.0)
    assert report.rates[("fine", "1.0.0")][1].failures == 0
    assert report.rates[("gate", "1.1.0")][1].failures == 5

    env = {**os.environ, "GATEHOOK_NATS_URL": settings.nats_url}
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "gatehook",
            "audit",
            "why",
            "-t",
            tenant,
            "--at",
            moment.isoformat(),
            "--window",
            "30m",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "likely culprit" in out.stdout
    assert "flow.action_updated by mallory" in out.stdout.replace("\n", " ")


async def test_tail_filters(worker: Worker, nc: NATS, tenant: str, settings: Settings) -> None:
    await incident(nc, tenant)
    js = nc.jetstream()
    executed = [e async for e in read_events(js, tenant=tenant, event_type="flow.action_executed")]
    assert len(executed) == 5 * 2 + 5 * 2  # fine, then gate, ten times
    published = [
        e async for e in read_events(js, tenant=tenant, event_type="flow.action_published")
    ]
    assert [e.version for e in published] == ["1.0.0", "1.0.0", "1.1.0"]
    assert [e async for e in read_events(js, tenant=tenant + "-other")] == []
    later = [e async for e in read_events(js, tenant=tenant, since=datetime.now(UTC))]
    assert later == []
    env = {**os.environ, "GATEHOOK_NATS_URL": settings.nats_url}
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "gatehook",
            "audit",
            "tail",
            "-t",
            tenant,
            "--type",
            "flow.action_updated",
            "--since",
            "1h",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert [(e["type"], e["version"]) for e in lines] == [("flow.action_updated", "1.1.0")]


async def test_external_consumer_example(
    worker: Worker, nc: NATS, tenant: str, settings: Settings
) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    from audit_consumer import consume  # type: ignore[import-not-found]

    api = AdminClient(nc)
    await api.call(tenant, "actions.create", name="a")
    await api.call(tenant, "actions.publish", name="a", source=CONTINUE)
    await api.call(tenant, "flows.attach", action="a", **PA)
    for _ in range(3):
        await trigger(nc, tenant, request())
    got: list[dict[str, Any]] = []
    crashed = {"once": False}

    async def deliver(event: dict[str, Any]) -> None:
        if not crashed["once"] and len(got) == 1:
            crashed["once"] = True
            raise RuntimeError("the SIEM is down")  # before the ack: redelivered later
        got.append(event)

    with contextlib.suppress(RuntimeError):  # the exporter crashes before its ack
        await consume(settings.nats_url, tenant, deliver, durable="t", idle_rounds=1, ack_wait_s=1)
    assert len(got) == 1
    stored: dict[str, dict[str, Any]] = {e["event_id"]: e for e in got}
    deliveries = 0

    async def idempotent(event: dict[str, Any]) -> None:
        nonlocal deliveries
        deliveries += 1
        stored.setdefault(event["event_id"], event)  # a unique key on event_id drops repeats

    # restarted: the unacked event comes again after ack_wait, with the rest; none is lost
    await consume(settings.nats_url, tenant, idempotent, durable="t", idle_rounds=3, ack_wait_s=1)
    executed = [e for e in stored.values() if e["type"] == "flow.action_executed"]
    assert len(executed) == 3
    assert len(stored) == 3 + 3  # and the create, publish and attach events
    assert deliveries >= len(stored) - 1


async def test_sigkill_mid_load_every_reply_has_its_events(
    nc: NATS, tenant: str, settings: Settings, store: object
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    env.update(
        GATEHOOK_NATS_URL=settings.nats_url,
        GATEHOOK_MONGODB_URL=settings.mongodb_url,
        GATEHOOK_MONGODB_DATABASE=settings.mongodb_database,
        GATEHOOK_SANDBOX__POOL_SIZE="1",
    )
    procs = [spawn_worker(env, f"k{i}") for i in range(2)]
    try:
        await services_ready(nc, 2, time.monotonic() + 60)
        api = AdminClient(nc)
        await api.call(tenant, "actions.create", name="a")
        await api.call(tenant, "actions.publish", name="a", source=CONTINUE)
        await api.call(tenant, "flows.attach", action="a", **PA)
        client = GatehookClient(nc, timeout=3.0, retry=False)
        received: list[str] = []

        async def one(i: int) -> None:
            if i == 60:
                procs[0].send_signal(signal.SIGKILL)
            body = request()
            try:
                reply = await client.trigger(
                    tenant, "external_authentication", "post_authentication", body
                )
            except Exception:
                return  # lost with the killed worker: the login service retries; no reply, no claim
            if reply.decision == "continue":
                received.append(body["request_id"])

        sem = asyncio.Semaphore(16)

        async def bounded(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(bounded(i) for i in range(200)))
        events = {
            e.request_id
            async for e in read_events(
                nc.jetstream(), tenant=tenant, event_type="flow.action_executed"
            )
        }
        assert len(received) > 100
        assert set(received) <= events  # every reply a client got is in the stream
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


async def test_latest_events_read_backwards_from_the_end(nc: NATS, settings: Settings) -> None:
    """The console's audit page: the newest events of a tenant among many others, without
    reading the stream from its start."""
    from gatehook.audit.reader import latest_events
    from gatehook.audit.stream import AuditPublisher
    from gatehook.domain.contract import AuditEvent

    js = nc.jetstream()
    publisher = AuditPublisher(js, settings.audit)
    await publisher.ensure_stream()
    now = datetime.now(UTC)

    def event(i: int, tenant: str, kind: str) -> AuditEvent:
        return AuditEvent(
            event_id=f"{tenant}-{i}" if kind == "flow.action_executed" else f"{tenant}-p{i}",
            type=kind,  # type: ignore[arg-type]
            tenant=tenant,
            at=now,
            actor="bench",
            action="a" if i % 2 else "b",
        )

    batch: list[AuditEvent] = []
    for i in range(3000):
        batch.append(event(i, "busy", "flow.action_executed"))
        if i % 500 == 0:
            batch.append(event(i, "busy", "flow.action_published"))
        batch.append(event(i, "other", "flow.action_executed"))
    for start in range(0, len(batch), 500):
        await publisher.publish(batch[start : start + 500])

    newest = await latest_events(js, tenant="busy", limit=10)
    assert [e.event_id for e in newest] == [f"busy-{i}" for i in range(2990, 3000)]
    published = await latest_events(
        js, tenant="busy", event_type="flow.action_published", limit=100
    )
    assert [e.event_id for e in published] == [f"busy-p{i}" for i in range(0, 3000, 500)]
    only_b = await latest_events(js, tenant="busy", limit=3, keep=lambda e: e.action == "b")
    assert [e.event_id for e in only_b] == ["busy-2994", "busy-2996", "busy-2998"]

    # Reading backwards stops once max_scan sequence numbers (from the newest match) were
    # looked at: a rare match far back is not found then, and is without the bound.
    def rare(e: AuditEvent) -> bool:
        return e.type == "flow.action_published"

    unbounded = await latest_events(js, tenant="busy", limit=100, keep=rare)
    assert [e.event_id for e in unbounded] == [f"busy-p{i}" for i in range(0, 3000, 500)]
    bounded = await latest_events(js, tenant="busy", limit=100, keep=rare, max_scan=2000)
    assert 0 < len(bounded) < len(unbounded)
    assert [e.event_id for e in bounded] == [e.event_id for e in unbounded[-len(bounded) :]]
    assert await latest_events(js, tenant="nobody", limit=10) == []
