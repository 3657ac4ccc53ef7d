"""Write lanes. A 3-node cluster with three write lanes (``GATEHOOK_AUDIT__LANES=3``, every stream at 3
replicas) and two workers pinned to two nodes: a lane's leader node killed, its leaders moved
by step-down, its node cut off (stopped), each under 200 req/s from a login service on the
nodes, costs no unanswered request, no gap in answers over a second, and no audit event lost
or stored twice."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import signal
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.audit.reader import events_of, latest_events, read_events
from gatehook.devservers import Server
from gatehook.sandbox import SandboxPool
from gatehook.settings import AuditSettings, Settings
from tests.support.cluster import GATE_FILE, SUBJECT
from tests.support.tenants import request
from tests.support.workers import Worker, start_worker, stop_worker

LANES = 3
STREAMS = [f"GATEHOOK_AUDIT_{i}" for i in range(LANES)]


@pytest.fixture
async def workers(
    cluster: list[Server], settings: Settings, pool: SandboxPool
) -> AsyncIterator[list[Worker]]:
    """Two workers, the first connected to n0 and the second to n1 (each learns the other
    nodes from the cluster), writing to three lanes whose leaders are rebalanced every 1 s."""
    started: list[Worker] = []
    for i in range(2):
        s = settings.model_copy(
            update={
                "nats_url": cluster[i].url,
                "worker_name": f"w{i}",
                "audit": AuditSettings(replicas=3, lanes=LANES, rebalance_s=1.0),
                "request_budget_ms": 8000,
            }
        )
        runtime, broker = await asyncio.wait_for(start_worker(s, pool), 90)
        started.append(Worker(runtime, broker))
    yield started
    for w in started:
        await stop_worker(w.runtime, w.broker)


async def leaders(nc: NATS, streams: list[str]) -> dict[str, str | None]:
    js = nc.jetstream(timeout=5)
    found: dict[str, str | None] = {}
    for stream in streams:
        try:
            info = await js.stream_info(stream)
        except (TimeoutError, nats.errors.Error):
            found[stream] = None
            continue
        found[stream] = info.cluster.leader if info.cluster else None
    return found


async def placed(nc: NATS) -> dict[str, str | None]:
    """Wait until the rebalance has lane i's two streams led by n<i>; the leaders."""
    want = {s: f"n{s[-1]}" for s in STREAMS}
    deadline = time.monotonic() + 60
    while True:
        now = await leaders(nc, STREAMS)
        if now == want:
            return now
        assert time.monotonic() < deadline, f"lane leaders not placed: {now}"
        await asyncio.sleep(0.5)


async def move(nc: NATS, stream: str, to: str) -> None:
    """Step ``stream``'s leader down in favour of ``to``, and wait until ``to`` leads it."""
    deadline = time.monotonic() + 30
    while (await leaders(nc, [stream]))[stream] != to:
        assert time.monotonic() < deadline, f"{stream} not led by {to}"
        body = json.dumps({"placement": {"preferred": to}}).encode()
        with contextlib.suppress(nats.errors.TimeoutError):
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
        await asyncio.sleep(0.5)


class LoginService:
    """Trigger requests at a steady rate over one connection per node given, round robin;
    each retried with its request_id (2 s timeout, up to 8 attempts). Records when every
    answer came."""

    def __init__(self, conns: list[NATS], tenant: str) -> None:
        self.conns = conns
        self.tenant = tenant
        self.answered_at: list[float] = []
        self.unanswered: list[str] = []
        self.attempts = 0

    async def decide(self, nc: NATS, rid: str) -> dict[str, Any] | None:
        body = json.dumps(request(request_id=rid)).encode()
        for _ in range(8):
            self.attempts += 1
            try:
                msg = await nc.request(SUBJECT.format(self.tenant), body, timeout=2)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await asyncio.sleep(0.1)
                continue
            reply: dict[str, Any] = json.loads(msg.data)
            if reply["error"] is None or not reply["error"]["retryable"]:
                self.answered_at.append(time.monotonic())
                return reply
            await asyncio.sleep(0.2)
        self.unanswered.append(rid)
        return None

    async def run(
        self, seconds: float, rate: float, during: Callable[[], Awaitable[None]]
    ) -> dict[str, dict[str, Any] | None]:
        tasks: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        started = time.monotonic()
        fired = False
        n = 0
        while time.monotonic() - started < seconds:
            if not fired and time.monotonic() - started > seconds / 3:
                fired = True
                await during()
            rid = f"f-{uuid.uuid4().hex[:16]}"
            tasks[rid] = asyncio.create_task(self.decide(self.conns[n % len(self.conns)], rid))
            n += 1
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        return {rid: await t for rid, t in tasks.items()}

    def longest_gap(self) -> float:
        times = sorted(self.answered_at)
        return max(b - a for a, b in itertools.pairwise(times))


async def audited(nc: NATS, tenant: str, expected: set[str]) -> list[str]:
    """The request ids of the tenant's ``flow.action_executed`` events in ``GATEHOOK_AUDIT``
    (its decision records' executions), read once the audit stream has sourced every lane
    (its own leader, and some lanes', were elected anew: sourcing resumes after that),
    waiting up to 60 s for ``expected``."""
    subject = f"gatehook.v1.audit.{tenant}.flow.decided"
    deadline = time.monotonic() + 60
    ids: list[str] = []
    while time.monotonic() < deadline:
        try:
            js = nc.jetstream(timeout=5)
            info = await js.stream_info("GATEHOOK_AUDIT", subjects_filter=subject)
            total = (info.state.subjects or {}).get(subject, 0)
            if total >= len(expected):
                ids = []
                seq = 0
                for _ in range(total):
                    msg = await js.get_msg("GATEHOOK_AUDIT", seq + 1, subject=subject, next=True)
                    seq = msg.seq
                    ids.extend(
                        e.request_id or ""
                        for e in events_of(msg.data or b"{}", "flow.action_executed")
                    )
                if set(ids) >= expected:
                    return ids
        except (TimeoutError, nats.errors.Error):
            pass
        await asyncio.sleep(1)
    return ids


async def login_service(cluster: list[Server], nodes: list[int]) -> list[NATS]:
    conns = []
    for i in nodes:  # each prefers its own node, then the others
        urls = [cluster[i].url, *(n.url for n in cluster if n is not cluster[i])]
        conns.append(await nats.connect(urls, dont_randomize=True, max_reconnect_attempts=-1))
    return conns


def failovers(metrics: str) -> float:
    """``gatehook_audit_failovers_total`` of a worker's metrics."""
    found = re.search(r"^gatehook_audit_failovers_total (\S+)$", metrics, re.M)
    assert found is not None, metrics
    return float(found.group(1))


def check(service: LoginService, answers: dict[str, dict[str, Any] | None]) -> None:
    assert len(answers) > 1000
    assert service.unanswered == []
    assert all(r is not None and r["decision"] == "continue" for r in answers.values())
    gap = service.longest_gap()
    print(f"{len(answers)} requests, {service.attempts} attempts, longest gap {gap:.3f} s")
    assert gap < 1.0


async def test_a_lane_leaders_node_killed_and_a_step_down_under_load(
    cluster: list[Server], workers: list[Worker], tenant: str
) -> None:
    conns = await login_service(cluster, [0, 1, 2])
    ops = await nats.connect([cluster[1].url, cluster[2].url], max_reconnect_attempts=-1)
    try:
        await AdminClient(ops, actor="ops", timeout=30).call(tenant, "apply", file=GATE_FILE)
        await placed(ops)  # the rebalance put lane i on n<i>
        for stream in ("GATEHOOK_AUDIT", "GATEHOOK_RECORDINGS"):  # the worst case: all on n0
            await move(ops, stream, "n0")
        assert workers[0].broker.connection.connected_url.port == cluster[0].port

        service = LoginService(conns, tenant)

        async def kill() -> None:
            cluster[0].kill()

        answers = await service.run(9.0, 200, kill)
        check(service, answers)
        assert sum(w.runtime.journal.failovers for w in workers if w.runtime.journal) > 0
        exported = [failovers(w.runtime.metrics.render().decode()) for w in workers]
        assert sum(exported) > 0, exported
        ids = await audited(ops, tenant, set(answers))
        assert len(ids) == len(set(ids))  # no event twice
        assert set(ids) == set(answers)  # every decided request's event stored

        cluster[0].restart()  # back; the rebalance gives it lane 0 again
        await placed(ops)
        service = LoginService(conns, tenant)

        async def step_down() -> None:
            for stream in ("GATEHOOK_AUDIT_1", "GATEHOOK_AUDIT"):
                await ops.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)

        more = await service.run(6.0, 200, step_down)
        check(service, more)
        ids = await audited(ops, tenant, set(answers) | set(more))
        assert len(ids) == len(set(ids))
        assert set(ids) == set(answers) | set(more)
    finally:
        for nc in [*conns, ops]:
            await nc.close()


async def test_a_lane_leaders_node_cut_off_under_load(
    cluster: list[Server], workers: list[Worker], tenant: str
) -> None:
    """n2 (lane 2's leader, and the audit stream's) stops answering for 8 s: neither worker
    nor the login service is connected to it, but its peers hear nothing from it (a
    partition); when it comes back it finds the cluster has moved on."""
    conns = await login_service(cluster, [0, 1])
    ops = await nats.connect([cluster[0].url, cluster[1].url], max_reconnect_attempts=-1)
    cut = cluster[2]
    try:
        await AdminClient(ops, actor="ops", timeout=30).call(tenant, "apply", file=GATE_FILE)
        await placed(ops)
        await move(ops, "GATEHOOK_AUDIT", "n2")
        service = LoginService(conns, tenant)
        assert cut.proc is not None
        stopped = asyncio.Event()

        async def stop() -> None:
            assert cut.proc is not None
            cut.proc.send_signal(signal.SIGSTOP)
            stopped.set()

        async def resume_later() -> None:
            await stopped.wait()
            await asyncio.sleep(8)
            assert cut.proc is not None
            cut.proc.send_signal(signal.SIGCONT)

        resuming = asyncio.create_task(resume_later())
        answers = await service.run(12.0, 200, stop)
        await resuming
        check(service, answers)
        ids = await audited(ops, tenant, set(answers))
        assert len(ids) == len(set(ids))
        assert set(ids) == set(answers)
    finally:
        if cut.proc is not None and cut.proc.poll() is None:
            cut.proc.send_signal(signal.SIGCONT)
        for nc in [*conns, ops]:
            await nc.close()


def home_lane(tenant: str, request_id: str) -> int:
    """The lane a request's record goes to first (the journal's rule, from its key)."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:40]
    key = f"{tenant}.external_authentication.post_authentication.{digest}"
    return zlib.crc32(key.encode()) % LANES


async def test_a_retry_finds_its_reply_after_its_first_went_to_another_lane(
    settings: Settings, pool: SandboxPool, nc: NATS, tenant: str
) -> None:
    """One node, three lanes: the home lane's stream is gone (deleted: no responders), so the
    request's record goes to the next lane; the lane comes back (created again), the record
    is written back to it, and a retry of the request gets the first reply, not a second
    decision; the audit stream holds the record once."""
    s = settings.model_copy(update={"audit": AuditSettings(lanes=LANES)})
    runtime, broker = await start_worker(s, pool)
    try:
        await AdminClient(nc, actor="ops", timeout=30).call(tenant, "apply", file=GATE_FILE)
        rid = next(r for r in (uuid.uuid4().hex for _ in range(100)) if home_lane(tenant, r) == 0)
        js = nc.jetstream()
        await js.delete_stream("GATEHOOK_AUDIT_0")
        body = json.dumps(request(request_id=rid)).encode()
        first = json.loads((await nc.request(SUBJECT.format(tenant), body, timeout=10)).data)
        assert first["error"] is None
        journal = runtime.journal
        assert journal is not None
        assert journal.failovers == 1
        deadline = time.monotonic() + 20
        while journal.lanes_down or journal.lanes[0].write_backs:
            assert time.monotonic() < deadline, "lane 0 not back"
            await asyncio.sleep(0.1)
        stored = await js.get_last_msg(
            "GATEHOOK_AUDIT_0", f"gatehook.v1.lane.0.audit.{tenant}.flow.decided"
        )
        assert json.loads(stored.data or b"{}")["request_id"] == rid
        again = json.loads((await nc.request(SUBJECT.format(tenant), body, timeout=10)).data)
        assert again == first  # the stored reply, durations and all: not decided again
        ids = await audited(nc, tenant, {rid})
        assert ids == [rid]
        # the readers (gatehook audit, the console's audit page) see it once too
        kind = "flow.action_executed"
        tail = [e async for e in read_events(js, tenant=tenant, event_type=kind)]
        page = await latest_events(js, tenant=tenant, event_type=kind)
        assert [e.request_id for e in tail] == [e.request_id for e in page] == [rid]
    finally:
        await stop_worker(runtime, broker)


async def test_a_worker_with_fewer_lanes_keeps_the_audit_streams_sources(
    settings: Settings, pool: SandboxPool, nc: NATS, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers that disagree on the lane count (a misconfiguration, or lanes reduced) must not
    cut lanes off from GATEHOOK_AUDIT: a worker with one lane keeps the sources the others
    added, says so, and events written to a lane still reach the audit stream."""
    three = settings.model_copy(update={"audit": AuditSettings(lanes=LANES)})
    runtime, broker = await start_worker(three, pool)
    try:
        await AdminClient(nc, actor="ops", timeout=30).call(tenant, "apply", file=GATE_FILE)
        one = settings.model_copy(update={"audit": AuditSettings(lanes=1), "worker_name": "w1"})
        with caplog.at_level("WARNING", logger="gatehook.audit"):
            other, other_broker = await start_worker(one, pool)
        await stop_worker(other, other_broker)
        info = await nc.jetstream().stream_info("GATEHOOK_AUDIT")
        names = sorted(source.name for source in info.config.sources or [])
        assert names == [f"GATEHOOK_AUDIT_{i}" for i in range(LANES)]
        assert "give every worker the same lane count" in caplog.text
        rid = uuid.uuid4().hex
        body = json.dumps(request(request_id=rid)).encode()
        reply = json.loads((await nc.request(SUBJECT.format(tenant), body, timeout=10)).data)
        assert reply["error"] is None
        assert await audited(nc, tenant, {rid}) == [rid]  # written to a lane, sourced
    finally:
        await stop_worker(runtime, broker)


async def test_replicas_alone_give_a_lane_per_node_placed_before_serving(
    cluster: list[Server], settings: Settings, pool: SandboxPool
) -> None:
    """Only GATEHOOK_AUDIT__REPLICAS=3 set: three lanes, and a starting worker places their
    leaders one per node before it takes a request, even when every lane was led by one node
    (as after a rolling restart), without waiting for its periodic check."""
    s = settings.model_copy(
        update={"nats_url": cluster[0].url, "worker_name": "w0", "audit": AuditSettings(replicas=3)}
    )
    assert s.audit.lanes == LANES
    runtime, broker = await asyncio.wait_for(start_worker(s, pool), 90)  # creates the streams
    await stop_worker(runtime, broker)
    nc = await nats.connect(cluster[1].url, max_reconnect_attempts=-1)
    try:
        for stream in STREAMS:
            await move(nc, stream, "n2")  # every lane on one node: its death pauses them all
        runtime, broker = await asyncio.wait_for(start_worker(s, pool), 90)
        try:
            assert await leaders(nc, STREAMS) == {st: f"n{st[-1]}" for st in STREAMS}
            health = await runtime.health.check()
            assert health["audit_lanes"] == {"lanes": LANES, "down": 0, "misplaced": 0}
            reply = await nc.request(
                SUBJECT.format("acme"), json.dumps(request(request_id="r-1")).encode(), timeout=10
            )
            assert json.loads(reply.data)["error"] is None
        finally:
            await stop_worker(runtime, broker)
    finally:
        await nc.close()
