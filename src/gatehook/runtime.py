"""Composition root: builds the clients, caches and pools, and owns their lifecycle.

``Runtime`` is what a worker process holds: the NATS broker (FastStream), the MongoDB store,
the sandbox pool, the template registry and the services built on them. ``transport.subscribers``
puts its subscribers on the broker; ``gatehook.app`` wraps both in a FastStream application.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream.nats import NatsBroker
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from gatehook import __version__
from gatehook.admin.api import AdminApi
from gatehook.admin.ingress import IngressApi
from gatehook.admin.rollouts import RolloutAdmin
from gatehook.admin.service import AdminService
from gatehook.domain import subjects
from gatehook.domain.contract import AuditEvent
from gatehook.errors import GatehookError, TransportError
from gatehook.metrics import Metrics, MetricsServer
from gatehook.process.deadlines import Deadlines
from gatehook.process.loop import watch_lag
from gatehook.sandbox import SandboxPool
from gatehook.sandbox.inprocess import InProcessScripts
from gatehook.sandbox.lanes import SLOW_NICE, Lanes
from gatehook.security.connections import mongo_options
from gatehook.security.sealing import sealer_from
from gatehook.service.action_cache import ActionCaches
from gatehook.service.admission import admission_for
from gatehook.service.deferred_pins import DeferredPins
from gatehook.service.rollouts import RolloutCounter, RolloutKey, ShadowGate
from gatehook.service.trigger import TriggerService
from gatehook.service.warmup import WarmReport, warm_tenants
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from gatehook.storage.keys import BUCKETS
from gatehook.templates import TemplateRegistry, default_registry
from gatehook.templates.base import CounterStore, Delivery
from gatehook.transport.jetstream import AuditPublisher, lane_audit_stream
from gatehook.transport.journal import JsJournal, Lane
from gatehook.transport.lean import LeanNats
from gatehook.transport.placement import LeaderPlacement
from gatehook.transport.recordings import JsRecorder
from gatehook.transport.targets import CircuitChange, TargetCaller
from gatehook.transport.trigger_server import TriggerServer
from gatehook.transport.webhooks import WebhookDelivery

__all__ = ["Runtime", "close_in_order"]

log = logging.getLogger("gatehook")
_SWEEP_S = 2.0  # between two buckets' sweeps of expired pins (no TTL indexes)


def _end_process(key: str, late_s: float) -> None:
    """A script holds the event loop past its deadline (isolation ``worker``; see
    ``sandbox.inprocess``): end the process, for its supervisor to start a new one."""
    log.critical("ending the worker process: script %s holds its event loop", key)
    logging.shutdown()
    os._exit(70)


@dataclass
class Services:
    """What templates may use (``TemplateServices``): shared counters and webhook delivery."""

    counters: CounterStore
    delivery: Delivery


class Runtime:
    """Everything a worker needs, started and closed in one place."""

    def __init__(
        self, settings: Settings, broker: NatsBroker, *, pool: SandboxPool | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
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
        # A pool passed in is shared (tests, embedding) and stays open when this runtime closes.
        self._owns_pool = pool is None
        self.deadlines = Deadlines()  # one timer for the deadlines of the decision path
        self.pool = (
            pool if pool is not None else SandboxPool(settings.sandbox, deadlines=self.deadlines)
        )
        # Isolation 'worker': scripts without allowed hosts run here (sandbox.inprocess);
        # 'process': in the children, with a slow lane for scripts that keep timing out.
        self.inprocess: InProcessScripts | None = None
        self.lanes: Lanes | None = None
        self.scripts: Lanes | InProcessScripts
        if settings.sandbox.isolation == "worker":
            self.inprocess = InProcessScripts(settings.sandbox, self.pool, on_hung=_end_process)
            self.scripts = self.inprocess
        else:
            slow = SandboxPool(settings.sandbox, size=1, nice=SLOW_NICE)
            self.lanes = Lanes(self.pool, slow)
            self.scripts = self.lanes
        self.delivery = WebhookDelivery(settings.webhooks)
        self.targets = TargetCaller(settings.targets, on_circuit=self._circuit_changed)
        self._background_events: set[asyncio.Task[None]] = set()
        self.rollouts = RolloutCounter(
            self.store, settings.worker_name, report_s=settings.rollouts.report_s
        )
        self.shadows = ShadowGate(
            settings.rollouts.shadow_in_flight,
            busy=lambda: self.pool.queue_depth > self.pool.size,  # live calls come first
        )
        self.rollout_admin: RolloutAdmin | None = None
        self.recorder: JsRecorder | None = None
        self.action_cache = ActionCaches(self.store)
        self.metrics = Metrics(tenant_labels=settings.metrics.tenant_labels)
        self._metrics_server: MetricsServer | None = None
        self._last_health: dict[str, Any] = {"ready": False, "checks": {"started": False}}
        self._health_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._triggers: TriggerService | None = None
        self._server: TriggerServer | None = None
        self._micro: Service | None = None
        self._admin: AdminApi | None = None
        self._ingress: IngressApi | None = None
        self.audit: AuditPublisher | None = None
        self.journal: JsJournal | None = None
        self.placement: LeaderPlacement | None = None
        self.lean: LeanNats | None = None
        self.deferred_pins: DeferredPins | None = None
        self._up: dict[str, bool] = {}  # each dependency's last health check
        self.warm_report: WarmReport | None = None
        self._activity_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._seen: dict[str, datetime] = {}  # tenants served lately, the most recent last

    @property
    def triggers(self) -> TriggerService:
        """The trigger use case (available once started)."""
        if self._triggers is None:
            raise GatehookError("the runtime is not started")
        return self._triggers

    @property
    def admin(self) -> AdminApi:
        """The management API (available once started)."""
        if self._admin is None:
            raise GatehookError("the runtime is not started")
        return self._admin

    @property
    def ingress(self) -> IngressApi:
        """The gateway's requests (available once started)."""
        if self._ingress is None:
            raise GatehookError("the runtime is not started")
        return self._ingress

    async def notify_change(self, tenant: str) -> None:
        """Tell every worker that ``tenant``'s flows changed."""
        await self.broker.publish(b"", subjects.changes(tenant))

    async def start(self) -> None:
        """Connect, prepare storage, the sandbox and the streams (before subscribers start)."""
        await self.broker.connect()
        await self.store.ensure_indexes()
        await self.store.check_sealed()  # refuses sealed secrets this worker cannot open
        if self.sealer is None:
            log.warning(
                "tenants' secrets are stored in clear: set GATEHOOK_SECRETS__KEY (docs/security.md)"
            )
        if self._owns_pool:
            await self.pool.start()
        if self.inprocess is not None:
            await self.inprocess.start()
        if self.lanes is not None:
            await self.lanes.start()
        if self.settings.metrics.port is not None:  # /healthz says why while not ready
            self._metrics_server = MetricsServer(
                self.metrics,
                lambda: self._last_health,
                self.settings.metrics.host,
                self.settings.metrics.port,
            )
            self._metrics_server.start()
        js = self.broker.connection.jetstream()
        audit = self.settings.audit
        self.audit = AuditPublisher(js, audit)
        lanes = [
            Lane(i, lane_audit_stream(audit, i), subjects.lane_audit_prefix(i, audit.lanes))
            for i in range(audit.lanes)
        ]
        self.recorder = JsRecorder(
            self.broker.connection,
            js,
            self.settings.rollouts.recordings_max_age_s,
            self.settings.audit.replicas,
        )
        await self._wait_for_streams([self.audit.ensure_stream, self.recorder.ensure_stream])
        # the decision path's messages skip nats-py's per-message machinery (transport.lean)
        self.lean = LeanNats(self.broker.connection)
        self.journal = JsJournal(
            self.lean, lanes, self.audit, self.deadlines, audit.failover_ms / 1000
        )
        await self.journal.start()
        if audit.lanes > 1:
            self.placement = LeaderPlacement(
                self.broker.connection,
                js,
                [[lane.stream] for lane in lanes],
                audit.rebalance_s,
            )
            # before serving: a lane left on another lane's node would pause with it
            await self.placement.settle(audit.placement_wait_s)
            self.placement.start()
        await self.delivery.start()
        await self.targets.start()
        service = AdminService(
            store=self.store,
            compiler=self.pool,
            templates=self.templates,
            audit=self.audit,
            notify=self.notify_change,
            default_timeout_ms=self.settings.sandbox.default_timeout_ms,
        )
        self.rollout_admin = RolloutAdmin(service)
        self._triggers = TriggerService(
            flows=self.store,
            scripts=self.scripts,
            templates=self.templates,
            journal=self.journal,
            settings=self.settings,
            deadlines=self.deadlines,
            services=Services(counters=self.store, delivery=self.delivery),
            targets=self.targets,
            rollouts=self.rollouts,
            shadows=self.shadows,
            publish_event=self.publish_later,
            recorder=self.recorder,
            telemetry=self.metrics,
            action_cache=self.action_cache,
        )
        if self.settings.deferred_pins > 0:
            self.deferred_pins = DeferredPins(self.store, capacity=self.settings.deferred_pins)
            self._triggers.lookup.deferred = self.deferred_pins
            self.deferred_pins.start()
        self.metrics.add_gauges(self._snapshot)
        if self._metrics_server is not None:
            self._health_task = asyncio.create_task(self._health_loop())
            self._lag_task = asyncio.create_task(watch_lag(self.metrics.loop_lag))
        self._admin = AdminApi(
            service,
            self.templates,
            tester=self._triggers.try_version,
            rollouts=self.rollout_admin,
            replayer=self.replay,
            trusted=frozenset(self.settings.trusted_principals),
        )
        self._ingress = IngressApi(service)
        self.rollouts.start(self._roll_back)
        await self._warm()
        self._activity_task = asyncio.create_task(self._report_activity())
        if not self.store.has_ttl:
            self._sweep_task = asyncio.create_task(self._sweep())
        log.info(
            "gatehook worker %s ready (isolation %s, sandbox children: %d)",
            self.settings.worker_name,
            self.settings.sandbox.isolation,
            self.pool.size,
        )

    async def _warm(self) -> None:
        """Load the recently active tenants before taking requests (``service.warmup``)."""
        warm = self.settings.warm
        if warm.tenants == 0:
            return
        since = datetime.now(UTC) - timedelta(seconds=warm.within_s)
        try:
            tenants = await self.store.active_tenants(since, warm.tenants)
        except GatehookError as exc:
            log.warning("warm-up skipped: %s", exc)
            return
        report = await warm_tenants(
            self.triggers.lookup,
            self.scripts,
            tenants,
            budget_s=warm.budget_s,
            concurrency=warm.concurrency,
        )
        log.info(
            "warmed %d of %d recently active tenants (%d versions, %d scripts) in %.2f s%s",
            report.tenants,
            len(tenants),
            report.versions,
            report.scripts,
            report.seconds,
            "" if report.complete else " (budget reached; the rest load on first use)",
        )
        for failure in report.failed[:5]:
            log.warning("warm-up: %s", failure)
        self.warm_report = report

    async def _report_activity(self) -> None:
        """Every ``warm.report_s``, record the tenants this worker served (best effort)."""
        while True:
            await asyncio.sleep(self.settings.warm.report_s)
            await self.flush_activity()

    async def _sweep(self) -> None:
        """Where MongoDB has no TTL indexes (FerretDB): delete expired pins, one tenant bucket
        every ``_SWEEP_S`` (all of them every ~8 minutes), from a random start so that
        workers spread over them; the expired rate-limit windows once a round."""
        bucket = random.randrange(BUCKETS)
        while True:
            await asyncio.sleep(_SWEEP_S)
            try:
                await self.store.sweep_expired(bucket, datetime.now(UTC))
            except GatehookError as exc:
                log.debug("sweep of expired pins skipped: %s", exc)
            bucket = (bucket + 1) % BUCKETS

    async def flush_activity(self) -> None:
        """Record the tenants served lately (within ``warm.within_s``, at most
        ``warm.tenants`` of them, the most recent)."""
        if self._triggers is None:
            return
        now = datetime.now(UTC)
        fresh, self._triggers.active = self._triggers.active, set()
        if not fresh and not self._seen:
            return
        for tenant in fresh:
            self._seen.pop(tenant, None)
            self._seen[tenant] = now  # (insertion order: the most recent last)
        cutoff = now - timedelta(seconds=self.settings.warm.within_s)
        while self._seen and (
            len(self._seen) > max(self.settings.warm.tenants, 1)
            or next(iter(self._seen.values())) < cutoff
        ):
            self._seen.pop(next(iter(self._seen)))
        try:
            await self.store.record_activity(self.settings.worker_name, self._seen)
        except GatehookError as exc:
            log.info("tenant activity not recorded: %s", exc)

    def reconnected(self) -> None:
        """NATS reconnected: change broadcasts may have been missed; revalidate the caches."""
        if self._triggers is not None:
            self._triggers.lookup.revalidate_all()
            log.info("reconnected to NATS: cached flows revalidate at their next use")

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
                self._last_health = {"ready": False, "checks": {"jetstream": reason}}
                log.warning("%s; trying again in %.1f s", reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self._last_health = {"ready": False, "checks": {"jetstream": True, "started": False}}

    async def replay(
        self, tenant: str, slot: str, since: datetime, ref: tuple[str, str], limit: int
    ) -> dict[str, Any]:
        """Replay a recorded slot's inputs since ``since`` against ``ref`` (name, version)."""
        if self.recorder is None:
            raise GatehookError("the runtime is not started")
        flow_type, _, trigger = slot.partition(".")
        records = self.recorder.read(tenant, slot, since, limit)
        return await self.triggers.replay(tenant, flow_type, trigger, records, *ref)

    def publish_later(self, event: AuditEvent) -> None:
        """Publish ``event`` in the background (shadow runs, circuit changes): nothing waits
        for it; a failure is logged."""

        async def publish() -> None:
            if self.audit is None:
                return
            try:
                await self.audit.publish([event])
            except GatehookError as exc:
                log.error("could not audit %s: %s", event.type, exc)

        task = asyncio.create_task(publish())
        self._background_events.add(task)
        task.add_done_callback(self._background_events.discard)

    async def _roll_back(self, key: RolloutKey, runs: int, failures: int) -> None:
        """A canary passed its failure limit: the slot goes back to its stable version."""
        if self.rollout_admin is None:
            return
        log.warning(
            "rolling back the canary of %s in %s.%s (%s): %d of %d runs failed",
            key.action,
            key.flow_type,
            key.trigger,
            key.tenant,
            failures,
            runs,
        )
        await self.rollout_admin.end(
            key.tenant,
            key.flow_type,
            key.trigger,
            key.action,
            "rolled_back",
            actor=f"gatehook:{self.settings.worker_name}",
            rollout_id=key.rollout,
            details={"runs": runs, "failures": failures, "failure_rate": round(failures / runs, 4)},
        )

    def _circuit_changed(self, change: CircuitChange) -> None:
        """Audit a target circuit opening or closing (in the background: no sign-in waits)."""
        event = AuditEvent(
            event_id=uuid.uuid4().hex,
            type="flow.target_circuit_opened" if change.opened else "flow.target_circuit_closed",
            tenant=change.tenant,
            at=datetime.now(UTC),
            actor=self.settings.worker_name,
            action=change.action,
            version=change.version,
            details={
                "endpoint": change.endpoint,
                "failures": change.failures,
                "cooldown_s": change.cooldown_s,
            },
        )

        self.publish_later(event)

    async def serve(self) -> None:
        """Start taking change broadcasts and trigger requests (``transport.trigger_server``)."""
        if self._server is not None:
            return
        lean = self.settings.trigger_transport == "lean"
        assert self.lean is not None, "start() comes before serve()"
        self._server = TriggerServer(
            self.lean,
            self.triggers.handle,
            subject=subjects.TRIGGERS if lean else "",
            queue=self.settings.queue_group,
            admission=admission_for(self.settings.concurrency, self.settings.admission),
            on_change=self.triggers.invalidate,
            refusal_delay_s=self.settings.admission.refusal_delay_ms / 1000,
        )
        await self._server.start()

        self._micro = await add_service(
            self.broker.connection,
            name="gatehook",
            version=__version__,
            description="Actions at the trigger points of sign-in flows",
            metadata={"worker": self.settings.worker_name},
        )
        await self._micro.add_endpoint(
            name="health",
            subject=subjects.HEALTH,
            queue_group=f"health-{self._micro.id}",
            handler=self._health_endpoint,
        )

    async def health(self) -> dict[str, Any]:
        """Liveness and readiness: NATS, MongoDB, sandbox; and the trigger counters."""
        checks: dict[str, Any] = {"nats": self.broker.connection.is_connected}
        try:
            await asyncio.wait_for(self.store.ping(), 2)
            checks["mongodb"] = True
        except (GatehookError, TimeoutError) as exc:
            checks["mongodb"] = str(exc) or "timeout"
        if self.audit is not None:
            try:
                await asyncio.wait_for(self.audit.ping(), 2)
                checks["jetstream"] = True
            except (GatehookError, TimeoutError) as exc:
                checks["jetstream"] = str(exc) or "timeout"
        checks["sandbox"] = self.pool.size > 0
        self._log_outages(checks)
        server = self._server
        return {
            "worker": self.settings.worker_name,
            "ready": all(v is True for v in checks.values()),
            "checks": checks,
            "triggers": {
                "handled": self.triggers.handled,
                "in_flight": server.in_flight if server else 0,
                "shed": server.shed if server else 0,
            },
            "sandbox": {"children": self.pool.size, "restarts": self.pool.restarts},
            "webhooks": dict(self.delivery.outcomes),
            # degraded, not unready: the worker serves, but a node's death may pause a lane
            "audit_lanes": None
            if self.journal is None
            else {
                "lanes": len(self.journal.lanes),
                "down": self.journal.lanes_down,
                "misplaced": self.placement.misplaced if self.placement is not None else 0,
            },
        }

    def _log_outages(self, checks: dict[str, Any]) -> None:
        """Say once when a dependency goes away and once when it is back (never per request)."""
        for name, value in checks.items():
            up = value is True
            if self._up.get(name, True) and not up:
                log.error("%s is unavailable: %s", name, value)
            elif not self._up.get(name, True) and up:
                log.warning("%s is back", name)
            self._up[name] = up

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics and /healthz are served on (None: off)."""
        return self._metrics_server.port if self._metrics_server else None

    def _snapshot(self) -> dict[str, Any]:
        server = self._server
        triggers = self._triggers
        return {
            "sandbox_children": self.pool.size,
            "sandbox_queue": self.pool.queue_depth,
            "sandbox_restarts": self.pool.restarts,
            "in_flight": server.in_flight if server else 0,
            "shed": server.shed if server else 0,
            "admission": None
            if server is None
            else {
                "refused": server.admission.refused_by(self.settings.metrics.tenant_labels),
                "in_flight": server.admission.in_flight_by_tenant()
                if self.settings.metrics.tenant_labels
                else {},
                "cut": server.admission.capped() if self.settings.metrics.tenant_labels else {},
            },
            "caches": triggers.cache_stats() if triggers else {},
            "webhooks": dict(self.delivery.outcomes),
            "deferred_pins": None
            if self.deferred_pins is None
            else {
                "held": len(self.deferred_pins),
                "deferred": self.deferred_pins.deferred,
                "written": self.deferred_pins.written,
                "dropped": self.deferred_pins.dropped,
            },
            "last_heads_served": triggers.lookup.last_heads_served if triggers else 0,
            "audit_lanes": None
            if self.journal is None
            else {
                "lanes": len(self.journal.lanes),
                "down": self.journal.lanes_down,
                "failovers": self.journal.failovers,
                "write_backs_dropped": self.journal.write_backs_dropped,
                "misplaced": self.placement.misplaced if self.placement is not None else 0,
            },
            "dependencies": {
                name: value is True
                for name, value in (self._last_health.get("checks") or {}).items()
                if name in ("nats", "mongodb", "jetstream")
            },
        }

    async def _health_loop(self) -> None:
        """Keep a readiness snapshot for the HTTP port (which cannot await)."""
        while True:
            try:
                self._last_health = await self.health()
            except Exception as exc:  # a failing check must not stop the loop
                self._last_health = {"ready": False, "error": str(exc)}
            await asyncio.sleep(2)

    async def _health_endpoint(self, request: Request) -> None:
        await request.respond(json.dumps(await self.health()).encode())

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop taking trigger requests and finish those in flight (graceful shutdown)."""
        if self._micro is not None:
            await self._micro.stop()
            self._micro = None
        if self._server is not None:
            await self._server.stop(timeout)
            self._server = None

    async def aclose(self) -> None:
        """Stop everything this runtime started, in order: the background tasks, the last
        activity record, metrics, placement, the journal, the outbound callers, the sandbox,
        the caches, the storage client.

        Every step runs even when one before it fails (a sandbox left running or a storage
        client left open because a last activity write failed would outlive the worker): a
        failure is logged with its step, and the first is raised once all have run.
        """
        for task in (self._health_task, self._lag_task, self._activity_task, self._sweep_task):
            if task is not None:
                task.cancel()
        steps: list[tuple[str, Callable[[], Awaitable[None] | None]]] = [
            ("tenant activity", self.flush_activity),
        ]
        if self._metrics_server is not None:
            steps.append(("metrics server", self._metrics_server.stop))
        if self.placement is not None:
            steps.append(("lane placement", self.placement.aclose))
        if self.journal is not None:
            steps.append(("journal", self.journal.aclose))
        if self.lean is not None:
            steps.append(("lean NATS path", self.lean.close))
        steps += [
            ("deadlines", self.deadlines.close),
            ("webhook delivery", self.delivery.aclose),
            ("target caller", self.targets.aclose),
            ("shadow runs", self.shadows.aclose),
            ("rollout counters", self.rollouts.aclose),
            ("background events", self._background_settled),
        ]
        if self.inprocess is not None:
            steps.append(("in-worker scripts", self.inprocess.aclose))
        if self.lanes is not None:
            steps.append(("sandbox lanes", self.lanes.aclose))
        if self._owns_pool:
            steps.append(("sandbox pool", self.pool.aclose))
        if self.deferred_pins is not None:  # (a last write of what it holds)
            steps.append(("deferred pins", self.deferred_pins.aclose))
        steps += [("action caches", self.action_cache.aclose), ("storage", self.store.aclose)]
        await close_in_order(steps)

    async def _background_settled(self) -> None:
        if self._background_events:
            await asyncio.wait(set(self._background_events), timeout=5)


async def close_in_order(steps: list[tuple[str, Callable[[], Awaitable[None] | None]]]) -> None:
    """Run each ``(name, close)`` in turn, whatever the ones before did; log each failure
    with its name and raise the first once every step has run."""
    first: BaseException | None = None
    for name, close in steps:
        try:
            result = close()
            if result is not None:
                await result
        except Exception as exc:
            log.exception("closing the %s failed; closing the rest", name)
            first = first or exc
    if first is not None:
        raise first
