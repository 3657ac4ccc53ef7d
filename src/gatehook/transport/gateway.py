"""``gatehook http``: the HTTP front identity providers call as their hook endpoint.

A separate, stateless process: every call is checked against the tenant's provider secrets
(asked from a worker over ``gatehook.v1.ingress.<tenant>.keys`` and cached for
``GATEHOOK_GATEWAY__KEYS_TTL_S``), mapped to trigger requests (``domain.providers``), sent to
the workers over NATS request-reply exactly as a login service sends them, and the replies
mapped back to the provider's response format. It scales on its own behind any load balancer.

Routes (docs/integrations/):
- ``POST /zitadel/<tenant>``: ZITADEL Actions v2 targets (restCall, restWebhook);
- ``POST /kratos/<tenant>/<flow_type>/<trigger>``: Ory Kratos web hooks;
- ``POST /okta/<tenant>/token`` and ``/okta/<tenant>/registration``: Okta inline hooks;
- ``POST /hydra/<tenant>/token``: Ory Hydra's token hook;
- ``GET /healthz`` and ``GET /metrics`` (Prometheus text).

Every call is answered by its route's deadline (a provider's own timeout is a few seconds):
a worker that is slow or gone gives the provider's error shape, never a hang. Refused calls
(bad signature or key, old timestamp, unknown tenant, malformed JSON, oversized body) get
a 4xx; an unauthenticated caller is told only that its call is not accepted (not
whether the tenant exists or has that provider). A refusal for a tenant that has the provider
is audited ``ingress.refused``, at most ``REFUSED_AUDIT_PER_S`` a second per tenant (the rest
counted in the next one); one for a tenant without it writes no event (it is logged and
counted), so a flood against made-up tenants neither writes events nor uses a real tenant's
budget.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gatehook.domain import subjects
from gatehook.domain.catalogue import slot_problem, tenant_problem
from gatehook.domain.ingress import shared_secret_refusal, zitadel_signature_refusal
from gatehook.domain.providers import Answer, Ask, Malformed, hydra, kratos, okta, zitadel
from gatehook.logs import Sparse
from gatehook.process.metering import Metered
from gatehook.service.admission import admission_for
from gatehook.service.encoding import dumps, loads
from gatehook.settings import AdmissionSettings, GatewaySettings

__all__ = ["Gateway", "serve_gateway"]

log = logging.getLogger("gatehook.gateway")

_NEGATIVE_TTL_S = 5.0  # an unconfigured tenant is asked again after this long
_MAX_BUDGETS = 10_000  # tenants whose refusal budget is kept (the least recent dropped)
_REFETCH_AFTER_S = 1.0  # a refused secret re-reads the tenant's secrets (rotation) once


class _Unavailable(Exception):
    """No answer from the workers in time (the message says which)."""


@dataclass
class _Keys:
    configured: bool
    secrets: list[str]
    header: str
    fetched: float


class _Refused(Exception):
    """A call refused: ``reason`` for the log and the audit, ``public`` for the caller."""

    def __init__(self, status: int, reason: str, public: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.public = public or reason


_NOT_ACCEPTED = "the call's signature or key is not accepted"


def _refusal(status: int, message: str) -> Answer:
    """A refused call's answer, where the provider has no shape of its own for it."""
    return Answer(status, {"error": message}, "refused")


class Gateway:
    """The aiohttp application and its NATS connection (see the module)."""

    def __init__(
        self, settings: GatewaySettings, nc: NATS, admission: AdmissionSettings | None = None
    ) -> None:
        self._settings = settings
        self._nc = nc
        admission = admission or AdmissionSettings()
        self.admission = admission_for(settings.concurrency, admission)
        self._refusal_delay = admission.refusal_delay_ms / 1000
        self._keys: dict[tuple[str, str], _Keys] = {}
        # per tenant: refusals it may still audit now, when that was counted, refusals left
        # unaudited since its last event
        self._budgets: OrderedDict[str, list[float]] = OrderedDict()
        self._no_address = Sparse()  # Kratos calls without the client's address: said a minute
        self._tasks: set[asyncio.Task[None]] = set()
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "gatehook_gateway_requests",
            "Provider calls answered, by route and outcome",
            ["route", "outcome"],
            registry=self.registry,
        )
        self._unaudited = Counter(
            "gatehook_gateway_refused_unaudited",
            "Refused calls for a tenant without that provider (logged and counted, never"
            " audited: no events for made-up tenants)",
            registry=self.registry,
        )
        self._seconds = Histogram(
            "gatehook_gateway_request_seconds",
            "Time to answer a provider call, by route",
            ["route"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def app(self) -> web.Application:
        """The application (the body limit is aiohttp's ``client_max_size``)."""
        app = web.Application(
            client_max_size=self._settings.max_body_bytes, middlewares=[self._errors]
        )
        app.router.add_post("/zitadel/{tenant}", self._zitadel)
        app.router.add_post("/kratos/{tenant}/{flow_type}/{trigger}", self._kratos)
        app.router.add_post("/okta/{tenant}/token", self._okta_token)
        app.router.add_post("/okta/{tenant}/registration", self._okta_registration)
        app.router.add_post("/hydra/{tenant}/token", self._hydra_token)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def aclose(self) -> None:
        """Wait for the audit events still being written."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- routes -------------------------------------------------------------------------------
    async def _zitadel(self, request: web.Request) -> web.StreamResponse:
        async def handle(tenant: str, raw: bytes, deadline: float) -> Answer:
            def refusal(k: _Keys) -> str | None:
                header = request.headers.get("ZITADEL-Signature")
                return zitadel_signature_refusal(header, raw, k.secrets, time.time())

            await self._check(tenant, "zitadel", refusal, deadline)
            body = _json_object(raw)
            if zitadel.is_event(body):
                await self._audit(
                    tenant,
                    "zitadel",
                    "ingress.event_received",
                    None,
                    {"event": {k: body.get(k) for k in _EVENT_FIELDS if k in body}},
                )
                return Answer(200, {}, "event")
            ask = zitadel.ask(body)
            reply = await self._ask(tenant, ask, deadline)
            return zitadel.answer(body, reply)

        return await self._serve(
            request, "zitadel", self._settings.zitadel_deadline_ms, handle, zitadel.unavailable
        )

    async def _kratos(self, request: web.Request) -> web.StreamResponse:
        flow_type, trigger = request.match_info["flow_type"], request.match_info["trigger"]

        async def handle(tenant: str, raw: bytes, deadline: float) -> Answer:
            await self._check(tenant, "kratos", _shared(request), deadline)
            problem = slot_problem(flow_type, trigger)
            if problem is not None:
                raise _Refused(404, problem[1])
            body = _json_object(raw)
            ask = kratos.ask(flow_type, trigger, body)
            if "ip" not in ask.request["request"] and self._no_address.due():
                log.warning(
                    "Kratos calls of %s carry no client address (True-Client-Ip): actions see"
                    " no request.ip (docs/integrations/kratos.md)",
                    tenant,
                )
            reply = await self._ask(tenant, ask, deadline)
            return kratos.answer(body, reply)

        return await self._serve(
            request,
            "kratos",
            self._settings.kratos_deadline_ms,
            handle,
            kratos.unavailable,
            kratos.refused,
        )

    async def _okta_token(self, request: web.Request) -> web.StreamResponse:
        async def handle(tenant: str, raw: bytes, deadline: float) -> Answer:
            await self._check(tenant, "okta", _shared(request), deadline)
            body = _json_object(raw)
            asks = okta.token_asks(body)
            replies = await asyncio.gather(*(self._ask(tenant, a, deadline) for a in asks))
            return okta.token_answer(body, list(replies))

        return await self._serve(
            request, "okta.token", self._settings.okta_deadline_ms, handle, okta.unavailable
        )

    async def _okta_registration(self, request: web.Request) -> web.StreamResponse:
        async def handle(tenant: str, raw: bytes, deadline: float) -> Answer:
            await self._check(tenant, "okta", _shared(request), deadline)
            body = _json_object(raw)
            reply = await self._ask(tenant, okta.registration_ask(body), deadline)
            return okta.registration_answer(reply)

        def unavailable(message: str) -> Answer:
            return okta.unavailable(message, registration=True)

        return await self._serve(
            request,
            "okta.registration",
            self._settings.okta_deadline_ms,
            handle,
            unavailable,
        )

    async def _hydra_token(self, request: web.Request) -> web.StreamResponse:
        async def handle(tenant: str, raw: bytes, deadline: float) -> Answer:
            await self._check(tenant, "hydra", _shared(request), deadline)
            body = _json_object(raw)
            asks = hydra.asks(body)
            replies = await asyncio.gather(*(self._ask(tenant, a, deadline) for a in asks))
            return hydra.answer(body, list(replies))

        return await self._serve(
            request,
            "hydra.token",
            self._settings.hydra_deadline_ms,
            handle,
            hydra.unavailable,
            hydra.refused,
        )

    async def _health(self, request: web.Request) -> web.StreamResponse:
        ok = self._nc.is_connected
        return web.json_response({"ready": ok, "nats": ok}, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    # -- the way of one call --------------------------------------------------------------------
    async def _serve(
        self,
        request: web.Request,
        route: str,
        deadline_ms: int,
        handle: Callable[[str, bytes, float], Coroutine[Any, Any, Answer]],
        unavailable: Callable[[str], Answer],
        refused: Callable[[int, str], Answer] = _refusal,
    ) -> web.StreamResponse:
        """One call of a route: ``handle`` it by the route's deadline; a refusal in the
        provider's shape (``refused``), no decision in time in its shape (``unavailable``)."""
        started = time.monotonic()
        deadline = started + deadline_ms / 1000
        tenant = request.match_info["tenant"]
        provider = route.split(".")[0]
        try:
            problem = tenant_problem(tenant)
            if problem is not None:
                raise _Refused(404, problem)
            answer = await self._admitted(request, tenant, deadline, handle)
        except _Refused as exc:
            answer = refused(exc.status, exc.public)
            if tenant_problem(tenant) is None:
                await self._refused(tenant, provider, exc.reason, request)
        except Malformed as exc:
            answer = refused(400, str(exc))
            await self._refused(tenant, provider, f"malformed: {exc}", request)
        except _Unavailable as exc:
            answer = unavailable(str(exc))
        except web.HTTPRequestEntityTooLarge:
            answer = refused(413, f"body larger than {self._settings.max_body_bytes} bytes")
            if tenant_problem(tenant) is None:
                await self._refused(tenant, provider, "body too large", request)
        except Exception:  # a bug of ours: the call fails clearly, the gateway keeps serving
            log.exception("%s call for %s failed", route, tenant[:64])
            answer = unavailable("internal error in the gateway")
        elapsed = time.monotonic() - started
        self._requests.labels(route, answer.outcome).inc()
        self._seconds.labels(route).observe(elapsed)
        if answer.body is None:
            return web.Response(status=answer.status, headers=answer.headers)
        return web.Response(
            body=dumps(answer.body),
            status=answer.status,
            headers=answer.headers,
            content_type="application/json",
        )

    async def _admitted(
        self,
        request: web.Request,
        tenant: str,
        deadline: float,
        handle: Callable[[str, bytes, float], Coroutine[Any, Any, Answer]],
    ) -> Answer:
        """``handle`` the call if its tenant is admitted (``service.admission``: a tenant over
        its share of the gateway is refused at once, before its body is read); the body must
        arrive by the route's deadline (a trickled body is refused with 408)."""
        refused = self.admission.enter(tenant)
        if refused is not None:
            # answered after the refusal delay, its body unread: a flood that retries at
            # once costs its own connections' time, not the gateway's CPU
            await asyncio.sleep(min(self._refusal_delay, max(0.0, deadline - time.monotonic())))
            raise _Unavailable(refused.message(tenant))
        metered: Metered[Answer] | None = None
        try:
            try:
                raw = await asyncio.wait_for(request.read(), deadline - time.monotonic())
            except TimeoutError:
                raise _Refused(408, "the body did not arrive by the route's deadline") from None
            handled = handle(tenant, raw, deadline)
            if not self.admission.meter():
                return await handled
            metered = Metered(handled)
            return await metered
        finally:
            self.admission.leave(tenant, None if metered is None else metered.seconds)

    async def _check(
        self,
        tenant: str,
        provider: str,
        refusal: Callable[[_Keys], str | None],
        deadline: float,
    ) -> None:
        """Refuse (401) a call its provider did not sign or authorize with a configured
        secret; a refused secret re-reads the tenant's secrets once (a rotation)."""
        keys = await self._secrets(tenant, provider, deadline)
        if not keys.configured:
            raise _Refused(401, f"the tenant has no {provider} ingress configured", _NOT_ACCEPTED)
        reason = refusal(keys)
        if reason is not None and time.monotonic() - keys.fetched > _REFETCH_AFTER_S:
            self._keys.pop((tenant, provider), None)
            keys = await self._secrets(tenant, provider, deadline)
            reason = refusal(keys) if keys.configured else reason
        if reason is not None:
            raise _Refused(401, reason, _NOT_ACCEPTED)

    async def _secrets(self, tenant: str, provider: str, deadline: float) -> _Keys:
        now = time.monotonic()
        cached = self._keys.get((tenant, provider))
        if cached is not None:
            ttl = self._settings.keys_ttl_s if cached.configured else _NEGATIVE_TTL_S
            if now - cached.fetched < ttl:
                return cached
        result = await self._request(
            subjects.ingress(tenant, "keys"), {"provider": provider}, deadline
        )
        keys = _Keys(
            bool(result.get("configured")),
            [str(s) for s in result.get("secrets") or []],
            str(result.get("header") or "Authorization"),
            time.monotonic(),
        )
        if len(self._keys) > 100_000:
            self._keys.clear()
        self._keys[(tenant, provider)] = keys
        return keys

    async def _request(self, subject: str, body: dict[str, Any], deadline: float) -> Any:
        reply = await self._send(subject, dumps(body), deadline)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise _Unavailable(f"gatehook: {error.get('message', 'the request failed')}")
        return reply.get("result") or {}

    async def _send(self, subject: str, payload: bytes, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Unavailable("no decision within the route's deadline")
        try:
            msg = await self._nc.request(subject, payload, timeout=remaining)
        except NoRespondersError:
            raise _Unavailable("no gatehook worker answered") from None
        except (TimeoutError, NatsTimeout):
            raise _Unavailable("no decision within the route's deadline") from None
        try:
            reply = loads(msg.data)
        except ValueError:
            raise _Unavailable("a worker's reply was not JSON") from None
        if not isinstance(reply, dict):
            raise _Unavailable("a worker's reply was not an object")
        return reply

    async def _ask(self, tenant: str, ask: Ask, deadline: float) -> dict[str, Any]:
        """One trigger request, with the time left as its ``deadline_ms``."""
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms < 1:
            raise _Unavailable("no decision within the route's deadline")
        body = {**ask.request, "deadline_ms": min(remaining_ms, 60_000)}
        subject = subjects.trigger(tenant, ask.flow_type, ask.trigger)
        reply = await self._send(subject, dumps(body), deadline)
        if log.isEnabledFor(logging.INFO):
            self._log_trace(tenant, ask, body, reply)
        return reply

    @staticmethod
    def _log_trace(tenant: str, ask: Ask, body: dict[str, Any], reply: dict[str, Any]) -> None:
        """The worker's ``actions[]`` trace of one trigger, in the gateway's log."""
        trace = [
            f"{a.get('name')}@{a.get('version')}:{a.get('outcome')}"
            + (f" ({a['error']})" if a.get("error") else "")
            for a in reply.get("actions") or []
            if isinstance(a, dict)
        ]
        log.info(
            "%s %s.%s request %s: %s%s actions=[%s]",
            tenant,
            ask.flow_type,
            ask.trigger,
            body.get("request_id"),
            reply.get("decision"),
            f" ({reply['error'].get('message')})" if isinstance(reply.get("error"), dict) else "",
            ", ".join(trace),
        )

    # -- audit ----------------------------------------------------------------------------------
    async def _refused(self, tenant: str, provider: str, reason: str, request: web.Request) -> None:
        """An ``ingress.refused`` event for a tenant that has ``provider``, within the
        tenant's own audit rate (never delays much: it has its own short timeout, and a
        failure is logged); a tenant without it gets none."""
        log.info("refused %s call for %s: %s", provider, tenant, reason)
        keys = self._keys.get((tenant, provider))
        if keys is None or not keys.configured:
            self._unaudited.inc()
            return
        now = time.monotonic()
        rate = self._settings.refused_audit_per_s
        budget = self._budgets.pop(tenant, None) or [rate, now, 0.0]
        self._budgets[tenant] = budget  # the most recent last
        while len(self._budgets) > _MAX_BUDGETS:
            self._budgets.popitem(last=False)
        budget[0] = min(rate, budget[0] + (now - budget[1]) * rate)
        budget[1] = now
        if budget[0] < 1:
            budget[2] += 1
            return
        budget[0] -= 1
        details: dict[str, Any] = {"path": request.path[:200], "remote": request.remote}
        if budget[2]:
            details["suppressed_before"], budget[2] = int(budget[2]), 0
        task = asyncio.create_task(
            self._audit(tenant, provider, "ingress.refused", reason, details, quiet=True)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _audit(
        self,
        tenant: str,
        provider: str,
        type_: str,
        reason: str | None,
        details: dict[str, Any],
        *,
        quiet: bool = False,
    ) -> None:
        body = {"type": type_, "provider": provider, "reason": reason, "details": details}
        try:
            await self._request(subjects.ingress(tenant, "audit"), body, time.monotonic() + 2.0)
        except _Unavailable as exc:
            if not quiet:
                raise
            log.warning("could not audit %s for %s: %s", type_, tenant, exc)

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """A JSON body for aiohttp's own refusals (unknown path, wrong method)."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response({"error": exc.reason}, status=exc.status)


_EVENT_FIELDS = (
    "aggregateID",
    "aggregateType",
    "resourceOwner",
    "instanceID",
    "version",
    "sequence",
    "event_type",
    "created_at",
    "userID",
)


_MAX_DEPTH = 64  # a provider's body is a few levels deep; JSON encoders stop near 255


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Malformed("the body is not JSON") from None
    if not isinstance(body, dict):
        raise Malformed("the body is not a JSON object")
    if _deeper_than(body, _MAX_DEPTH):
        raise Malformed(f"the body is nested deeper than {_MAX_DEPTH} levels")
    return body


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects and lists more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _shared(request: web.Request) -> Callable[[_Keys], str | None]:
    def refusal(keys: _Keys) -> str | None:
        return shared_secret_refusal(request.headers.get(keys.header), keys.secrets, keys.header)

    return refusal


def _ssl(settings: GatewaySettings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    key = str(settings.tls_key_file) if settings.tls_key_file is not None else None
    context.load_cert_chain(str(settings.tls_cert_file), key)
    return context


async def serve_gateway(
    settings: GatewaySettings,
    nc: NATS,
    *,
    host: str | None = None,
    port: int | None = None,
    stop: asyncio.Event | None = None,
    started: Callable[[str], None] | None = None,
    admission: AdmissionSettings | None = None,
) -> None:
    """Serve until ``stop`` is set (or forever)."""
    gateway = Gateway(settings, nc, admission)
    # A connection that sends no complete request within ``idle_timeout_s`` (idle, or its
    # headers trickled) is closed: aiohttp's keep-alive timer runs from the connection's start
    # and is not reset by a partial request.
    runner = web.AppRunner(
        gateway.app(), access_log=None, keepalive_timeout=settings.idle_timeout_s
    )
    await runner.setup()
    where = (host or settings.host, settings.port if port is None else port)
    site = web.TCPSite(runner, *where, ssl_context=_ssl(settings))
    await site.start()
    if started is not None:
        started(site.name)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        await gateway.aclose()
