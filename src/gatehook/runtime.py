"""The composition root: everything a worker process holds, built and closed in one place.

``Runtime`` builds up front what needs no connection (the store, the sandbox, the outbound
callers, the counters) and, in ``start``, what needs the NATS connection (the audit stream,
the journal, the trigger and management use cases), registering each close on one
``Lifecycle`` as it starts it: ``aclose`` closes in reverse order, every close whatever the
others did. ``serve`` joins the queue group; ``drain`` leaves it. ``build_broker`` puts
the management subscribers (``transport.subscribers``) on the broker; ``gatehook.app``
runs the whole as a FastStream application.

Homes of their own: health and readiness (``gatehook.health``), the warm start and tenant
activity (``service.warmup``), the sweep of expired pins (``storage.sweep``), a canary's
roll-back (``admin.rollouts``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from faststream.nats import NatsBroker
from nats.micro import add_service
from nats.micro.service import Service

from gatehook import __version__
from gatehook.admin.api import AdminApi
from gatehook.admin.ingress import IngressApi
from gatehook.admin.rollouts import RolloutAdmin
from gatehook.admin.service import AdminService
from gatehook.audit.journal import JsJournal, Lane
from gatehook.audit.placement import LeaderPlacement
from gatehook.audit.recordings import JsRecorder
from gatehook.audit.stream import AuditPublisher, lane_audit_stream
from gatehook.domain import subjects
from gatehook.errors import GatehookError, TransportError
from gatehook.health import Health
from gatehook.metrics import Metrics, MetricsServer
from gatehook.process.deadlines import Deadlines
from gatehook.process.lifecycle import Lifecycle
from gatehook.process.loop import watch_lag
from gatehook.sandbox import SandboxPool
from gatehook.sandbox.in_children import SLOW_NICE, ChildScripts
from gatehook.sandbox.in_worker import InWorkerScripts
from gatehook.security.connections import mongo_options
from gatehook.security.sealing import sealer_from
from gatehook.service.action_cache import ActionCaches
from gatehook.service.admission import admission_for
from gatehook.service.deferred_pins import DeferredPins
from gatehook.service.rollouts import RolloutCounter, RolloutKey, ShadowGate
from gatehook.service.trigger import TriggerService
from gatehook.service.warmup import TenantActivity, WarmReport, warm_start
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from gatehook.storage.sweep import sweep_forever
from gatehook.templates import TemplateRegistry, default_registry
from gatehook.templates.base import CounterStore, Delivery
from gatehook.transport.lean import LeanNats
from gatehook.transport.subscribers import new_broker, subscribe
from gatehook.transport.targets import CircuitChange, TargetCaller
from gatehook.transport.trigger_server import TriggerServer
from gatehook.transport.webhooks import WebhookDelivery

__all__ = ["Runtime", "build_broker"]

log = logging.getLogger("gatehook")
_STREAM_WAIT_MAX_S = 5.0  # the longest pause between two tries at the streams


def _end_process(key: str, late_s: float) -> None:
    """A script holds the event loop past its deadline (isolation ``worker``; see
    ``sandbox.in_worker``): end the process, for its supervisor to start a new one."""
    log.critical("ending the worker process: script %s holds its event loop", key)
    logging.shutdown()
    os._exit(70)


@dataclass
class Services:
    """What templates may use (``TemplateServices``): shared counters and webhook delivery."""

    counters: CounterStore
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class _Connected:
    """What a worker builds once connected to NATS."""

    audit: AuditPublisher
    recorder: JsRecorder
    lean: LeanNats
    journal: JsJournal
    placement: LeaderPlacement | None
    triggers: TriggerService
    rollouts: RolloutAdmin
    admin: AdminApi
    ingress: IngressApi
    deferred_pins: DeferredPins | None


class Runtime:
    """Everything a worker needs, started and closed in one place (see the module)."""

    def __init__(
        self, settings: Settings, broker: NatsBroker, *, pool: SandboxPool | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
        self._life = Lifecycle()
        self.templates: TemplateRegistry = default_registry()
        self.sealer = sealer_from(settings.secrets)  # None: no key; ConfigError: a bad one
        self.store = MongoStore.connect(
            settings.mongodb_url,
            settings.mongodb_database,
            timeout_ms=settings.mongodb_timeout_ms,
            sealer=self.sealer,
            secret_fields=self.templates.secret_fields(),
            client_options=mongo_options(settings),
        )
        # (late-bound closes: what a close calls is looked up when it runs)
        self._life.on_close("storage", lambda: self.store.aclose())
        self.action_cache = ActionCaches(self.store)
        self._life.on_close("action caches", lambda: self.action_cache.aclose())
        self.deadlines = Deadlines()  # one timer for the deadlines of the decision path
        # A pool passed in is shared (tests, embedding) and stays open when this runtime closes.
        self.pool = pool or SandboxPool(settings.sandbox, deadlines=self.deadlines)
        self._owns_pool = pool is None
        if self._owns_pool:
            self._life.on_close("sandbox pool", lambda: self.pool.aclose())
        # Isolation 'worker': scripts without allowed hosts run here (sandbox.in_worker);
        # 'process': in the children, with a slow child for scripts that keep timing out.
        self.scripts: ChildScripts | InWorkerScripts = (
            InWorkerScripts(settings.sandbox, self.pool, on_hung=_end_process)
            if settings.sandbox.isolation == "worker"
            else ChildScripts(self.pool, SandboxPool(settings.sandbox, size=1, nice=SLOW_NICE))
        )
        self.delivery = WebhookDelivery(settings.webhooks)
        self.targets = TargetCaller(settings.targets, on_circuit=self._circuit_changed)
        self.rollouts = RolloutCounter(
            self.store, settings.worker_name, report_s=settings.rollouts.report_s
        )
        self.shadows = ShadowGate(
            settings.rollouts.shadow_in_flight,
            busy=lambda: self.pool.queue_depth > self.pool.size,  # live calls come first
        )
        self.metrics = Metrics(tenant_labels=settings.metrics.tenant_labels)
        self.health = Health(self)
        self.activity = TenantActivity(self.store, settings.worker_name, settings.warm)
        self.warm_report: WarmReport | None = None
        self.server: TriggerServer | None = None  # while serving
        self._micro: Service | None = None
        self._metrics_server: MetricsServer | None = None
        self._parts: _Connected | None = None

    # -- what exists once started ----------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether ``start`` has built the connected parts."""
        return self._parts is not None

    @property
    def _connected(self) -> _Connected:
        if self._parts is None:
            raise GatehookError("the runtime is not started")
        return self._parts

    @property
    def triggers(self) -> TriggerService:
        """The trigger use case."""
        return self._connected.triggers

    @property
    def admin(self) -> AdminApi:
        """The management API."""
        return self._connected.admin

    @property
    def ingress(self) -> IngressApi:
        """The gateway's requests."""
        return self._connected.ingress

    @property
    def audit(self) -> AuditPublisher:
        """The audit stream's publisher (management events)."""
        return self._connected.audit

    @property
    def journal(self) -> JsJournal:
        """The decision records' write lanes."""
        return self._connected.journal

    @property
    def placement(self) -> LeaderPlacement | None:
        """The write lanes' leader placement (None: one lane)."""
        return self._connected.placement

    @property
    def deferred_pins(self) -> DeferredPins | None:
        """Sign-in pins written after the reply (None: off, or not started)."""
        return self._parts.deferred_pins if self._parts else None

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics and /healthz are served on (None: off)."""
        return self._metrics_server.port if self._metrics_server else None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, prepare storage, the sandbox and the streams (before subscribers start)."""
        life, s = self._life, self.settings
        await self.broker.connect()
        await self.store.ensure_indexes()
        await self.store.check_sealed()  # refuses sealed secrets this worker cannot open
        if self.sealer is None:
            log.warning(
                "tenants' secrets are stored in clear: set GATEHOOK_SECRETS__KEY (docs/security.md)"
            )
        if self._owns_pool:
            await self.pool.start()
        await self.scripts.start()
        life.on_close("scripts", self.scripts.aclose)
        life.on_close("deadlines", self.deadlines.close)
        if s.metrics.port is not None:  # /healthz says why while not ready
            self._metrics_server = MetricsServer(
                self.metrics, lambda: self.health.last, s.metrics.host, s.metrics.port
            )
            self._metrics_server.start()
            life.on_close("metrics server", self._metrics_server.stop)
        self._parts = await self._connect()
        self.metrics.add_gauges(self.health.gauges)
        if self._metrics_server is not None:
            life.task("health checks", self.health.run())
            life.task("loop lag watch", watch_lag(self.metrics.loop_lag))
        self.rollouts.start(self._roll_back)
        life.on_close("rollout counters", self.rollouts.aclose)
        self.warm_report = await warm_start(self.store, self.triggers.lookup, self.scripts, s.warm)
        life.on_close("tenant activity", self.flush_activity)
        life.task("tenant activity reports", self.activity.run(self._served))
        if not self.store.has_ttl:
            life.task("sweep of expired pins", sweep_forever(self.store))
        log.info(
            "gatehook worker %s ready (isolation %s, sandbox children: %d)",
            s.worker_name,
            s.sandbox.isolation,
            self.pool.size,
        )

    async def _connect(self) -> _Connected:
        """The parts built on the NATS connection, each close registered as it starts."""
        life, s = self._life, self.settings
        js = self.broker.connection.jetstream()
        audit = AuditPublisher(js, s.audit)
        recorder = JsRecorder(
            self.broker.connection, js, s.rollouts.recordings_max_age_s, s.audit.replicas
        )
        await self._wait_for_streams([audit.ensure_stream, recorder.ensure_stream])
        life.on_close("background audit events", audit.settled)
        # the decision path's messages skip nats-py's per-message machinery (transport.lean)
        lean = LeanNats(self.broker.connection)
        life.on_close("lean NATS path", lean.close)
        lanes = [
            Lane(i, lane_audit_stream(s.audit, i), subjects.lane_audit_prefix(i, s.audit.lanes))
            for i in range(s.audit.lanes)
        ]
        journal = JsJournal(lean, lanes, audit, self.deadlines, s.audit.failover_ms / 1000)
        await journal.start()
        life.on_close("journal", journal.aclose)
        placement = None
        if s.audit.lanes > 1:
            placement = LeaderPlacement(
                self.broker.connection, js, [[lane.stream] for lane in lanes], s.audit.rebalance_s
            )
            # before serving: a lane left on another lane's node would pause with it
            await placement.settle(s.audit.placement_wait_s)
            placement.start()
            life.on_close("lane placement", placement.aclose)
        await self.delivery.start()
        life.on_close("webhook delivery", self.delivery.aclose)
        await self.targets.start()
        life.on_close("target caller", self.targets.aclose)
        service = AdminService(
            store=self.store,
            compiler=self.pool,
            templates=self.templates,
            audit=audit,
            notify=self.notify_change,
            default_timeout_ms=s.sandbox.default_timeout_ms,
        )
        triggers = TriggerService(
            flows=self.store,
            scripts=self.scripts,
            templates=self.templates,
            journal=journal,
            settings=s,
            deadlines=self.deadlines,
            services=Services(counters=self.store, delivery=self.delivery),
            targets=self.targets,
            rollouts=self.rollouts,
            shadows=self.shadows,
            publish_event=audit.publish_later,
            recorder=recorder,
            telemetry=self.metrics,
            action_cache=self.action_cache,
        )
        life.on_close("shadow runs", self.shadows.aclose)
        deferred = None
        if s.deferred_pins > 0:
            deferred = DeferredPins(self.store, capacity=s.deferred_pins)
            triggers.lookup.deferred = deferred
            deferred.start()
            life.on_close("deferred pins", deferred.aclose)  # (a last write of what it holds)
        rollouts = RolloutAdmin(service)
        admin = AdminApi(
            service,
            self.templates,
            tester=triggers.try_version,
            rollouts=rollouts,
            replayer=self.replay,
            trusted=frozenset(s.trusted_principals),
        )
        return _Connected(
            audit=audit,
            recorder=recorder,
            lean=lean,
            journal=journal,
            placement=placement,
            triggers=triggers,
            rollouts=rollouts,
            admin=admin,
            ingress=IngressApi(service),
            deferred_pins=deferred,
        )

    async def serve(self) -> None:
        """Start taking change broadcasts and trigger requests (``transport.trigger_server``)
        and answering on the health endpoint."""
        if self.server is not None:
            return
        s = self.settings
        self.server = TriggerServer(
            self._connected.lean,
            self.triggers.handle,
            subject=subjects.TRIGGERS if s.trigger_transport == "lean" else "",
            queue=s.queue_group,
            admission=admission_for(s.concurrency, s.admission),
            on_change=self.triggers.invalidate,
            refusal_delay_s=s.admission.refusal_delay_ms / 1000,
        )
        self._life.on_close("trigger server", self.drain)
        await self.server.start()
        self._micro = await add_service(
            self.broker.connection,
            name="gatehook",
            version=__version__,
            description="Actions at the trigger points of sign-in flows",
            metadata={"worker": s.worker_name},
        )
        await self._micro.add_endpoint(
            name="health",
            subject=subjects.HEALTH,
            queue_group=f"health-{self._micro.id}",
            handler=self.health.answer,
        )

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop taking trigger requests and finish those in flight (graceful shutdown)."""
        if self._micro is not None:
            await self._micro.stop()
            self._micro = None
        if self.server is not None:
            await self.server.stop(timeout)
            self.server = None

    async def aclose(self) -> None:
        """Close everything this runtime started, the last started first; every close runs
        whatever the others did, and the first failure is raised (``process.lifecycle``)."""
        await self._life.aclose()

    # -- what the parts call back ----------------------------------------------------------
    async def notify_change(self, tenant: str) -> None:
        """Tell every worker that ``tenant``'s flows changed."""
        await self.broker.publish(b"", subjects.changes(tenant))

    def reconnected(self) -> None:
        """NATS reconnected: change broadcasts may have been missed; revalidate the caches."""
        if self._parts is not None:
            self._parts.triggers.lookup.revalidate_all()
            log.info("reconnected to NATS: cached flows revalidate at their next use")

    async def flush_activity(self) -> None:
        """Record the tenants served lately (``service.warmup.TenantActivity``)."""
        if self._parts is not None:
            await self.activity.flush(self._served())

    def _served(self) -> set[str]:
        """The tenants served since the last call."""
        triggers = self.triggers
        fresh, triggers.active = triggers.active, set()
        return fresh

    async def replay(
        self, tenant: str, slot: str, since: datetime, ref: tuple[str, str], limit: int
    ) -> dict[str, Any]:
        """Replay a recorded slot's inputs since ``since`` against ``ref`` (name, version)."""
        flow_type, _, trigger = slot.partition(".")
        records = self._connected.recorder.read(tenant, slot, since, limit)
        return await self.triggers.safe_change.replay(tenant, flow_type, trigger, records, *ref)

    async def _roll_back(self, key: RolloutKey, runs: int, failures: int) -> None:
        await self._connected.rollouts.roll_back(
            key, runs, failures, actor=f"gatehook:{self.settings.worker_name}"
        )

    def _circuit_changed(self, change: CircuitChange) -> None:
        """Audit a target circuit opening or closing (in the background: no sign-in waits)."""
        if self._parts is not None:
            self._parts.audit.publish_later(change.event(self.settings.worker_name))

    async def _wait_for_streams(self, steps: list[Callable[[], Awaitable[None]]]) -> None:
        """Create or update the streams, waiting for JetStream with back-off (0.5 s doubling
        to 5 s) instead of giving up: a cluster may still be electing its leaders. Until
        then the worker takes no requests and /healthz says why."""
        backoff = 0.5
        pending = list(steps)
        while pending:
            # at once: a new replicated stream takes its group's leader election to answer,
            # and those elections overlap instead of adding up
            results = await asyncio.gather(*(step() for step in pending), return_exceptions=True)
            waiting: list[TransportError] = []
            again = []
            for step, result in zip(pending, results, strict=True):
                if isinstance(result, TransportError):
                    waiting.append(result)
                    again.append(step)
                elif isinstance(result, BaseException):
                    raise result
            pending = again
            if waiting:
                reason = f"waiting for JetStream: {waiting[0].message}"
                self.health.waiting(reason)
                log.warning("%s; trying again in %.1f s", reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _STREAM_WAIT_MAX_S)
        self.health.waiting(None)


def build_broker(
    settings: Settings, *, pool: SandboxPool | None = None
) -> tuple[NatsBroker, Runtime]:
    """A broker with the worker's subscribers, and the runtime they call into."""
    runtimes: list[Runtime] = []  # (the broker's callback is made before the runtime)

    def reconnected() -> None:
        for runtime in runtimes:
            runtime.reconnected()

    broker = new_broker(settings, reconnected)
    runtime = Runtime(settings, broker, pool=pool)
    runtimes.append(runtime)
    subscribe(broker, settings, runtime)
    return broker, runtime
