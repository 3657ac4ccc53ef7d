"""No tenant can take another's sign-ins down: admission per tenant before the shared limit,
in a worker (over NATS) and in the gateway (over HTTP). acme floods with an action that hangs
on its own endpoint (a real HTTP server that answers only when the test says so); globex's
sign-ins, sent while acme's requests hold their slots, are every one decided."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from gatehook.admin.service import AdminService, Draft
from gatehook.domain.ingress import IngressSpec
from gatehook.sandbox import SandboxPool
from gatehook.settings import AdmissionSettings, GatewaySettings, Settings
from gatehook.transport.gateway import serve_gateway
from tests.support.tenants import attach, request, template
from tests.support.workers import start_worker, stop_worker

KEY = "kratos-key-for-the-isolation-tests"


class Held:
    """An HTTP endpoint whose calls wait until ``release``; counts the calls it holds."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.holding = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hold(self, request: web.Request) -> web.Response:
        self.holding += 1
        await self.released.wait()
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hold", self._hold)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hold"

    async def stop(self) -> None:
        self.released.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def held() -> AsyncIterator[Held]:
    endpoint = Held()
    await endpoint.start()
    yield endpoint
    await endpoint.stop()


async def _tenants(admin: AdminService, held: Held, acme: str, globex: str) -> None:
    """acme's sign-ins call the held endpoint; globex's run a template."""
    await admin.create_action(acme, "slow", kind="target")
    draft = Draft(target={"endpoint": held.url, "type": "webhook"}, timeout_ms=20_000)
    slow, _ = await admin.publish(acme, "slow", draft, actor="test")
    await attach(admin, acme, [("slow", slow.version)])
    v = await template(admin, globex, "gate", "domain-allowlist", {"domains": ["acme.com"]})
    await attach(admin, globex, [("gate", v)])


async def _until(check: Any, what: str, timeout: float = 60.0) -> None:
    """Wait for ``check()`` with a bound (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.02)


async def test_a_flooding_tenant_leaves_the_others_decided(
    settings: Settings, pool: SandboxPool, nc: NATS, admin: AdminService, held: Held, tenant: str
) -> None:
    acme, globex = tenant + "-acme", tenant + "-globex"
    await _tenants(admin, held, acme, globex)
    capacity = 32
    settings = settings.model_copy(update={"concurrency": capacity, "request_budget_ms": 30_000})
    runtime, broker = await start_worker(settings, pool)
    try:
        subject = "gatehook.v1.trigger.{}.external_authentication.post_authentication"
        floods = [
            asyncio.ensure_future(
                nc.request(subject.format(acme), json.dumps(request()).encode(), timeout=60)
            )
            for _ in range(3 * capacity)
        ]
        # acme holds its share of the slots; the rest of its flood is refused at once
        await _until(lambda: held.holding >= capacity // 2, "acme's share held")
        await _until(
            lambda: sum(f.done() for f in floods) >= 3 * capacity - capacity // 2,
            "acme's flood beyond its share answered",
        )
        refused = [json.loads(f.result().data) for f in floods if f.done()]
        assert {r["error"]["code"] for r in refused} == {"unavailable"}
        assert all(r["error"]["retryable"] for r in refused)
        assert f"tenant {acme} is over its share" in refused[0]["error"]["message"]
        assert held.holding == capacity // 2  # never more than its share
        # globex's steady traffic (eight at a time), while acme's requests hold their
        # slots: every sign-in decided
        decided = []
        for _ in range(4):
            replies = await asyncio.gather(
                *(
                    nc.request(subject.format(globex), json.dumps(request()).encode(), timeout=30)
                    for _ in range(capacity // 4)
                )
            )
            decided += [json.loads(r.data) for r in replies]
        assert [d["error"] for d in decided] == [None] * capacity
        assert {d["decision"] for d in decided} == {"continue"}
        held.released.set()
        done = [json.loads(f.data) for f in await asyncio.gather(*floods)]
        assert sum(d["error"] is None for d in done) == capacity // 2
    finally:
        held.released.set()
        await stop_worker(runtime, broker)


async def test_a_tenant_taking_the_workers_time_is_cut_to_fewer_in_flight(
    settings: Settings, pool: SandboxPool, nc: NATS, admin: AdminService, tenant: str
) -> None:
    """acme's requests are cheap (a template), so its share of slots is a share of the
    worker's time: while globex is served too, acme's limit is cut below its share of slots,
    its refusals say so, and every one of globex's sign-ins is decided."""
    acme, globex = tenant + "-cheap", tenant + "-globex"
    for t in (acme, globex):
        v = await template(admin, t, "gate", "domain-allowlist", {"domains": ["acme.com"]})
        await attach(admin, t, [("gate", v)])
    capacity = 64
    # the test's own client shares this loop with the worker: a lower bar for "busy"
    admission = AdmissionSettings(busy=0.1, refusal_delay_ms=0)
    metrics = settings.metrics.model_copy(update={"tenant_labels": True})
    settings = settings.model_copy(
        update={"concurrency": capacity, "admission": admission, "metrics": metrics}
    )
    runtime, broker = await start_worker(settings, pool)
    subject = "gatehook.v1.trigger.{}.external_authentication.post_authentication"
    limits: list[int] = []
    stop = asyncio.Event()

    async def flood() -> None:  # acme keeps 48 requests in flight, retrying what is refused
        while not stop.is_set():
            msg = await nc.request(subject.format(acme), json.dumps(request()).encode(), 30)
            error = json.loads(msg.data)["error"]
            if error is not None:
                assert error["code"] == "unavailable"
                assert error["retryable"]
                limits.append(int(error["message"].split("its limit now ")[1].split(")")[0]))

    floods = [asyncio.create_task(flood()) for _ in range(48)]
    decided = []
    try:
        # globex signs in one at a time until acme's limit is cut (bounded by _until's 60 s)
        async def globex_until_cut() -> None:
            while not any(limit < capacity // 2 for limit in limits):
                reply = await nc.request(subject.format(globex), json.dumps(request()).encode(), 30)
                decided.append(json.loads(reply.data))

        await asyncio.wait_for(globex_until_cut(), 60)
        assert decided
        assert [d["error"] for d in decided] == [None] * len(decided)
        assert {d["decision"] for d in decided} == {"continue"}
        assert min(limits) >= AdmissionSettings().floor  # cut, never below the floor
        # the cut is in the worker's metrics while it holds (it doubles back when not)
        cut = f'gatehook_tenant_limit_cut{{tenant="{acme}"}}'
        await _until(lambda: cut in runtime.metrics.render().decode(), "the cut in /metrics")
    finally:
        stop.set()
        await asyncio.gather(*floods, return_exceptions=True)
        await stop_worker(runtime, broker)


def _kratos_body(email: str) -> dict[str, Any]:
    return {
        "flow": {"id": "f1", "type": "browser"},
        "identity": {"id": "u1", "traits": {"email": email}},
        "request_headers": {},
    }


async def test_the_gateway_admits_per_tenant(
    settings: Settings, pool: SandboxPool, admin: AdminService, held: Held, tenant: str
) -> None:
    acme, globex = tenant + "-acme", tenant + "-globex"
    await _tenants(admin, held, acme, globex)
    for t in (acme, globex):
        spec = IngressSpec.model_validate({"kratos": {"api_keys": [KEY]}})
        await admin.set_ingress(t, spec, actor="test")
    settings = settings.model_copy(update={"request_budget_ms": 30_000})
    runtime, broker = await start_worker(settings, pool)
    gateway_nc = await nats.connect(settings.nats_url)
    stop = asyncio.Event()
    where: list[str] = []
    capacity = 16
    served = asyncio.create_task(
        serve_gateway(
            GatewaySettings(concurrency=capacity, kratos_deadline_ms=20_000),
            gateway_nc,
            host="127.0.0.1",
            port=0,
            stop=stop,
            started=where.append,
            admission=AdmissionSettings(max_share=0.5),
        )
    )
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        await _until(lambda: bool(where), "the gateway serving")

        async def call(t: str) -> tuple[int, Any]:
            url = f"{where[0]}/kratos/{t}/external_authentication/post_authentication"
            body = _kratos_body("ann@acme.com")
            async with session.post(url, json=body, headers={"Authorization": KEY}) as r:
                text = await r.text()
                return r.status, json.loads(text) if text else None

        floods = [asyncio.ensure_future(call(acme)) for _ in range(3 * capacity)]
        await _until(lambda: held.holding >= capacity // 2, "acme's share held")
        await _until(
            lambda: sum(f.done() for f in floods) >= 3 * capacity - capacity // 2,
            "acme's calls beyond its share answered",
        )
        refused = [f.result() for f in floods if f.done()]
        assert {status for status, _ in refused} == {424}  # Kratos's no-decision answer
        assert f"tenant {acme} is over its share" in json.dumps(refused[0][1])
        assert held.holding == capacity // 2
        answers = []
        for _ in range(4):  # globex's steady traffic, four at a time
            answers += await asyncio.gather(*(call(globex) for _ in range(capacity // 4)))
        assert [status for status, _ in answers] == [204] * capacity
    finally:
        held.released.set()
        await session.close()
        stop.set()
        await served
        await gateway_nc.drain()
        await stop_worker(runtime, broker)
