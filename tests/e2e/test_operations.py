"""Operations: NATS micro discovery and health, the typed client, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.service import AdminService
from gatehook.client import GatehookClient
from gatehook.errors import BadRequest
from gatehook.settings import Settings
from tests.support.processes import services_ready, spawn_worker
from tests.support.tenants import attach, audit_events, custom, request
from tests.support.workers import Worker


def returns(body: str) -> str:
    return f"export function execute(input) {{ return {body}; }}"


async def test_micro_discovery_and_health(worker: Worker, nc: NATS, tenant: str) -> None:
    pong = json.loads((await nc.request("$SRV.PING.gatehook", b"", timeout=5)).data)
    assert pong["name"] == "gatehook"
    assert pong["metadata"]["worker"] == "test-worker"
    info = json.loads((await nc.request("$SRV.INFO.gatehook", b"", timeout=5)).data)
    assert [e["subject"] for e in info["endpoints"]] == ["gatehook.v1.health"]
    health = json.loads((await nc.request("gatehook.v1.health", b"", timeout=5)).data)
    assert health["ready"] is True
    assert health["checks"] == {"nats": True, "mongodb": True, "jetstream": True, "sandbox": True}
    before = health["triggers"]["handled"]
    client = GatehookClient(nc)
    for _ in range(3):
        await client.trigger(tenant, "external_authentication", "post_authentication", request())
    health = json.loads((await nc.request("gatehook.v1.health", b"", timeout=5)).data)
    assert health["triggers"]["handled"] == before + 3
    stats = json.loads((await nc.request("$SRV.STATS.gatehook", b"", timeout=5)).data)
    assert stats["endpoints"][0]["num_requests"] == 2


async def test_client_maps_errors(worker: Worker, nc: NATS, tenant: str) -> None:
    client = GatehookClient(nc)
    reply = await client.trigger(
        tenant, "external_authentication", "post_authentication", {"user": {"id": "u"}}
    )
    assert reply.decision == "continue"
    assert len(reply.request_id or "") == 32  # the client gave it a request id
    with pytest.raises(BadRequest, match="not a trigger"):
        await client.trigger(tenant, "external_authentication", "pre_saml_response", request())


async def test_client_retry_gives_one_decision_and_one_set_of_events(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    slow = await custom(
        admin,
        tenant,
        "slow",
        (
            "export function execute() { const end = Date.now() + 1500; while (Date.now() < end) {}"
            " return {kind: 'continue', claims: {r: Math.random()}}; }"
        ),
        timeout_ms=5000,
    )
    await attach(admin, tenant, [("slow", slow)])
    client = GatehookClient(nc, timeout=1.0)  # the first attempt times out, the retry waits
    body = request()
    client_retry = GatehookClient(nc, timeout=5.0)
    first = asyncio.create_task(
        client.trigger(tenant, "external_authentication", "post_authentication", body)
    )
    with pytest.raises(Exception, match="no decision"):
        await first  # both of its attempts (1 s each) end before the 1.5 s action
    reply = await client_retry.trigger(
        tenant, "external_authentication", "post_authentication", body
    )
    again = await client_retry.trigger(
        tenant, "external_authentication", "post_authentication", body
    )
    assert reply == again
    events = await audit_events(nc, tenant, "flow.action_executed")
    assert [e["request_id"] for e in events] == [body["request_id"]]


@pytest.fixture
def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    env.update(
        GATEHOOK_NATS_URL=settings.nats_url,
        GATEHOOK_MONGODB_URL=settings.mongodb_url,
        GATEHOOK_MONGODB_DATABASE=settings.mongodb_database,
        GATEHOOK_SANDBOX__POOL_SIZE="1",
    )
    return env


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


async def test_sigterm_during_load_loses_no_reply_and_no_event(
    nc: NATS,
    admin: AdminService,
    tenant: str,
    worker_env: dict[str, str],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    processes.extend(spawn_worker(worker_env, f"w{i}") for i in range(2))
    await services_ready(nc, 2, time.monotonic() + 60)
    v = await custom(admin, tenant, "work", returns("{kind: 'continue', claims: {ok: 1}}"))
    await attach(admin, tenant, [("work", v)])
    client = GatehookClient(nc, timeout=5.0)
    bodies = [request() for _ in range(300)]

    async def send(i: int) -> object:
        if i == 100:
            processes[0].send_signal(signal.SIGTERM)  # a rolling restart, mid-load
        return await client.trigger(
            tenant, "external_authentication", "post_authentication", bodies[i]
        )

    sem = asyncio.Semaphore(16)

    async def bounded(i: int) -> object:
        async with sem:
            return await send(i)

    replies = await asyncio.gather(*(bounded(i) for i in range(len(bodies))))
    assert all(r.decision == "continue" for r in replies)  # type: ignore[attr-defined]
    assert processes[0].wait(30) == 0  # it exited cleanly
    events = await audit_events(nc, tenant, "flow.action_executed")
    assert sorted(e["request_id"] for e in events) == sorted(b["request_id"] for b in bodies)


async def test_metrics_and_healthz(
    settings: Settings, pool: object, nc: NATS, store: object, admin: AdminService, tenant: str
) -> None:
    import urllib.request

    from gatehook.settings import MetricsSettings
    from tests.support.workers import start_worker, stop_worker

    local = settings.model_copy(update={"metrics": MetricsSettings(port=0)})
    runtime, broker = await start_worker(local, pool)  # type: ignore[arg-type]
    try:
        port = runtime.metrics_port
        assert port

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        v = await custom(admin, tenant, "b", returns("{kind: 'block'}"))
        await attach(admin, tenant, [("b", v)])
        client = GatehookClient(nc)
        for _ in range(3):
            await client.trigger(
                tenant, "external_authentication", "post_authentication", request()
            )
        await nc.request(
            f"gatehook.v1.trigger.{tenant}.external_authentication.post_authentication",
            b"{",
            timeout=5,
        )
        _, text = await asyncio.to_thread(get, "/metrics")
        assert (
            'gatehook_trigger_requests_total{flow_type="external_authentication",outcome="block",trigger="post_authentication"} 3.0'
            in text
        )
        assert 'outcome="bad_request"' in text
        assert 'gatehook_action_executions_total{error_kind="",outcome="block"} 3.0' in text
        assert "gatehook_audit_publish_seconds_count 3.0" in text
        # the worker's loop is watched: a timer every 50 ms (the requests may beat the first)
        lag = re.search(r"^gatehook_event_loop_lag_seconds_count (\S+)$", text, re.M)
        for _ in range(50):
            if lag is not None:
                break
            await asyncio.sleep(0.1)
            lag = re.search(
                r"^gatehook_event_loop_lag_seconds_count (\S+)$",
                (await asyncio.to_thread(get, "/metrics"))[1],
                re.M,
            )
        assert lag is not None
        assert float(lag.group(1)) > 0
        assert "gatehook_sandbox_children 2.0" in text
        assert 'gatehook_cache_lookups_total{cache="action_versions",result="hit"}' in text
        assert tenant not in text  # no tenant labels unless asked for
        deadline = time.monotonic() + 10
        while True:
            status, body = await asyncio.to_thread(get, "/healthz")
            if status == 200:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
        assert json.loads(body)["checks"] == {
            "nats": True,
            "mongodb": True,
            "jetstream": True,
            "sandbox": True,
        }
        _, text = await asyncio.to_thread(get, "/metrics")
        for dependency in ("nats", "mongodb", "jetstream"):
            assert f'gatehook_dependency_up{{dependency="{dependency}"}} 1.0' in text, text
        assert "gatehook_deferred_pins 0.0" in text
        assert 'gatehook_deferred_pins_total{result="dropped"} 0.0' in text
        assert "gatehook_last_heads_served_total 0.0" in text
        assert "gatehook_audit_lanes_down 0.0" in text
        assert "gatehook_audit_failovers_total 0.0" in text
    finally:
        await stop_worker(runtime, broker)


def test_json_logs() -> None:
    import io
    import logging

    from gatehook.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gatehook.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("reply not remembered", extra={"request_id": "r-1", "tenant": "acme"})
    line = json.loads(stream.getvalue())
    assert (line["message"], line["request_id"], line["tenant"], line["level"]) == (
        "reply not remembered",
        "r-1",
        "acme",
        "warning",
    )


async def test_traces_continue_the_callers_trace(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    v = await custom(admin, tenant, "t", returns("{kind: 'continue'}"))
    await attach(admin, tenant, [("t", v)])
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    msg = await nc.request(
        f"gatehook.v1.trigger.{tenant}.external_authentication.post_authentication",
        json.dumps(request()).encode(),
        timeout=5,
        headers=headers,
    )
    assert json.loads(msg.data)["decision"] == "continue"
    spans = {
        s.name: s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get("gatehook.tenant", tenant) == tenant
    }
    root = spans["gatehook.trigger external_authentication.post_authentication"]
    child = spans["gatehook.action t@1.0.0"]
    assert format(root.context.trace_id, "032x") == trace_id
    assert root.parent is not None
    assert format(root.parent.span_id, "016x") == parent_id
    assert child.parent is not None
    assert child.parent.span_id == root.context.span_id
    assert root.attributes["gatehook.outcome"] == "continue"
