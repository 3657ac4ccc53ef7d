"""A 3-node NATS cluster on loopback with replicated streams: a worker starts while the
cluster elects its leaders, keeps serving when the node it is connected to is killed, and
loses nothing when the audit stream's leader steps down; a restarted node rejoins."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Collection
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from gatehook.admin.client import AdminClient
from gatehook.audit.reader import events_of
from gatehook.devservers import Server
from gatehook.sandbox import SandboxPool
from gatehook.settings import AuditSettings, Settings
from tests.support.cluster import GATE_FILE, SUBJECT
from tests.support.tenants import request
from tests.support.workers import Worker, start_worker, stop_worker


@pytest.fixture
async def clustered(
    cluster: list[Server], settings: Settings, pool: SandboxPool
) -> AsyncIterator[Worker]:
    """A worker given every node's URL, with every stream at 3 replicas, started right away
    (the cluster may still be electing its meta leader: the worker waits for JetStream)."""
    urls = ",".join(n.url for n in cluster)
    s = settings.model_copy(
        update={"nats_url": urls, "audit": AuditSettings(replicas=3), "request_budget_ms": 8000}
    )
    runtime, broker = await asyncio.wait_for(start_worker(s, pool), 90)
    yield Worker(runtime, broker)
    await stop_worker(runtime, broker)


async def decide(nc: NATS, tenant: str, request_id: str, deadline: float) -> dict[str, Any]:
    """One trigger request as a careful login service sends it: retried with the same
    request_id on a timeout or a retryable error, until ``deadline``."""
    body = json.dumps(request(request_id=request_id)).encode()
    while True:
        try:
            msg = await nc.request(SUBJECT.format(tenant), body, timeout=2)
            reply: dict[str, Any] = json.loads(msg.data)
            if reply["error"] is None or not reply["error"]["retryable"]:
                return reply
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{request_id} not answered")
        await asyncio.sleep(0.2)


async def load(
    nc: NATS, tenant: str, seconds: float, rate: float, during: Any
) -> dict[str, dict[str, Any]]:
    """``rate`` requests a second for ``seconds``, calling ``during()`` half way through."""
    tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}
    started = time.monotonic()
    fired = False
    n = 0
    while time.monotonic() - started < seconds:
        if not fired and time.monotonic() - started > seconds / 2:
            fired = True
            await during()
        rid = f"r-{uuid.uuid4().hex[:16]}"
        tasks[rid] = asyncio.create_task(decide(nc, tenant, rid, time.monotonic() + 40))
        n += 1
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
    return {rid: await t for rid, t in tasks.items()}


async def executed(nc: NATS, tenant: str, expected: Collection[str] = ()) -> list[str]:
    """The request ids of every ``flow.action_executed`` event of ``tenant`` in
    GATEHOOK_AUDIT; tried again while the cluster's JetStream API is still settling after a
    node's death, and (bounded, 60 s) until every id of ``expected`` is there: with write
    lanes the aggregate sources the records, and catches up after an outage."""
    deadline = time.monotonic() + 60
    while True:
        ids = await _executed_settled(nc, tenant)
        if set(expected) <= set(ids) or time.monotonic() > deadline:
            return ids
        await asyncio.sleep(1)


async def _executed_settled(nc: NATS, tenant: str) -> list[str]:
    for attempt in range(6):
        try:
            return await _executed(nc, tenant)
        except nats.errors.TimeoutError:
            if attempt == 5:
                raise
            await asyncio.sleep(2)
    raise AssertionError("unreachable")


async def _executed(nc: NATS, tenant: str) -> list[str]:
    js = nc.jetstream(timeout=10)
    subject = f"gatehook.v1.audit.{tenant}.flow.decided"  # each record: one execution here
    info = await js.stream_info("GATEHOOK_AUDIT", subjects_filter=subject)
    total = (info.state.subjects or {}).get(subject, 0)
    sub = await js.subscribe(
        subject,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        stream="GATEHOOK_AUDIT",  # no stream look-up by subject
    )
    try:
        ids: list[str] = []
        for _ in range(total):
            data = (await sub.next_msg(timeout=10)).data
            ids.extend(e.request_id or "" for e in events_of(data, "flow.action_executed"))
        return ids
    finally:
        await sub.unsubscribe()


async def replicas_current(nc: NATS, stream: str) -> bool:
    info = await nc.jetstream(timeout=10).stream_info(stream)
    cluster = info.cluster
    return (
        info.config.num_replicas == 3
        and cluster is not None
        and cluster.leader is not None
        and len(cluster.replicas or []) == 2
        and all(r.current for r in cluster.replicas or [])
    )


async def wait_until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.25)


async def test_node_death_and_leader_stepdown_lose_nothing(
    cluster: list[Server], clustered: Worker, tenant: str
) -> None:
    worker_nc = clustered.broker.connection
    connected = next(n for n in cluster if n.url.endswith(f":{worker_nc.connected_url.port}"))
    client_node = next(n for n in cluster if n is not connected)
    nc = await nats.connect(client_node.url, max_reconnect_attempts=-1)
    try:
        admin = AdminClient(nc, actor="ops", timeout=30)
        await admin.call(
            tenant,
            "apply",
            file=GATE_FILE,
        )
        for stream in ("GATEHOOK_AUDIT", "GATEHOOK_RECORDINGS"):
            assert (await nc.jetstream().stream_info(stream)).config.num_replicas == 3

        async def kill() -> None:
            connected.kill()

        answered = await load(nc, tenant, 6.0, 200, kill)
        assert len(answered) > 1000
        assert all(r["decision"] == "continue" for r in answered.values())
        assert worker_nc.is_connected
        assert worker_nc.connected_url.port != connected.port  # it moved to another node
        ids = await executed(nc, tenant, answered)
        assert len(ids) == len(set(ids))  # no event twice
        assert set(ids) == set(answered)  # every answered request has its event

        connected.restart()  # the node comes back and catches up
        await wait_until(lambda: replicas_current(nc, "GATEHOOK_AUDIT"), 60)

        async def step_down() -> None:
            await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.GATEHOOK_AUDIT", b"", timeout=5)

        leader = (await nc.jetstream().stream_info("GATEHOOK_AUDIT")).cluster.leader  # type: ignore[union-attr]
        more = await load(nc, tenant, 4.0, 200, step_down)
        assert all(r["decision"] == "continue" for r in more.values())
        info = await nc.jetstream().stream_info("GATEHOOK_AUDIT")
        assert info.cluster is not None
        assert info.cluster.leader != leader
        ids = await executed(nc, tenant, set(answered) | set(more))
        assert len(ids) == len(set(ids))
        assert set(ids) == set(answered) | set(more)
    finally:
        await nc.close()


async def test_start_up_waits_for_jetstream_and_healthz_says_why(
    cluster: list[Server], settings: Settings, pool: SandboxPool, tenant: str
) -> None:
    import urllib.error
    import urllib.request

    from gatehook.devservers import free_port
    from gatehook.settings import MetricsSettings

    for node in cluster[1:]:  # one node of three: no quorum, no JetStream
        node.kill()
    port = free_port()
    s = settings.model_copy(
        update={
            "nats_url": ",".join(n.url for n in cluster),
            "audit": AuditSettings(replicas=3),
            "metrics": MetricsSettings(port=port),
        }
    )
    starting = asyncio.create_task(start_worker(s, pool))

    def healthz() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return 0, {}

    deadline = time.monotonic() + 30
    status, body = 0, {}
    while time.monotonic() < deadline:
        status, body = await asyncio.to_thread(healthz)
        if str(body.get("checks", {}).get("jetstream", "")).startswith("waiting for JetStream"):
            break
        await asyncio.sleep(0.2)
    assert status == 503, body
    assert str(body["checks"]["jetstream"]).startswith("waiting for JetStream")
    assert not starting.done()  # waiting, not exited
    for node in cluster[1:]:
        node.restart()
    runtime, broker = await asyncio.wait_for(starting, 90)
    try:
        nc = await nats.connect(cluster[0].url)
        try:
            assert (await nc.jetstream().stream_info("GATEHOOK_AUDIT")).config.num_replicas == 3
            reply = await decide(nc, tenant, "r-1", time.monotonic() + 30)
            assert reply["decision"] == "continue"  # no flow: continue, and it was answered
        finally:
            await nc.close()
        deadline = time.monotonic() + 10
        # /healthz is another thread's HTTP answer: poll it, bounded by the deadline
        while (await asyncio.to_thread(healthz))[0] != 200 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        assert (await asyncio.to_thread(healthz))[0] == 200
    finally:
        await stop_worker(runtime, broker)


async def test_jetstream_without_quorum_is_unavailable_by_the_deadline_then_exactly_once(
    cluster: list[Server], clustered: Worker, tenant: str
) -> None:
    """Two of three nodes stopped (SIGSTOP) for 5 s under 100 req/s: the audit stream has no
    quorum while core NATS still carries requests on the third node. Every attempt is
    answered by its deadline (a decision, or ``unavailable`` retryable: never a decision
    without its audit record); the login service's retries with the same request_id after
    the nodes are back get each request decided, with exactly one set of events."""
    worker_nc = clustered.broker.connection
    home = next(n for n in cluster if n.url.endswith(f":{worker_nc.connected_url.port}"))
    others = [n for n in cluster if n is not home]
    nc = await nats.connect(home.url, max_reconnect_attempts=-1)  # the node that stays up
    try:
        admin = AdminClient(nc, actor="ops", timeout=30)
        await admin.call(
            tenant,
            "apply",
            file=GATE_FILE,
        )
        late: list[str] = []  # attempts with no answer by their deadline (+ 1 s)
        unavailable = 0

        async def decided(rid: str) -> dict[str, Any]:
            nonlocal unavailable
            body = json.dumps(request(request_id=rid, deadline_ms=2000)).encode()
            give_up = time.monotonic() + 60
            while True:
                try:
                    msg = await nc.request(SUBJECT.format(tenant), body, timeout=3)
                except nats.errors.TimeoutError:
                    late.append(rid)
                else:
                    reply: dict[str, Any] = json.loads(msg.data)
                    if reply["error"] is None:
                        return reply
                    assert reply["error"]["code"] == "unavailable", reply
                    assert reply["error"]["retryable"] is True
                    unavailable += 1
                assert time.monotonic() < give_up, f"{rid} never decided"
                await asyncio.sleep(0.5)

        tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}
        started = time.monotonic()
        stopped = resumed = False
        n = 0
        while time.monotonic() - started < 12:
            elapsed = time.monotonic() - started
            if not stopped and elapsed > 3:
                stopped = True
                for node in others:
                    assert node.proc is not None
                    node.proc.send_signal(signal.SIGSTOP)
            if stopped and not resumed and elapsed > 8:
                resumed = True
                for node in others:
                    assert node.proc is not None
                    node.proc.send_signal(signal.SIGCONT)
            rid = f"q-{uuid.uuid4().hex[:16]}"
            tasks[rid] = asyncio.create_task(decided(rid))
            n += 1
            await asyncio.sleep(max(0.0, started + n / 100 - time.monotonic()))
        answers = {rid: await t for rid, t in tasks.items()}
        assert late == []  # every attempt answered by its deadline
        assert unavailable > 0  # (the outage was real: some attempts were refused)
        assert all(r["decision"] == "continue" for r in answers.values())
        ids = await executed(nc, tenant, answers)
        assert len(ids) == len(set(ids))  # no request's events twice
        assert set(ids) == set(answers)  # and every decided request's events stored
    finally:
        for node in others:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
        await nc.close()
