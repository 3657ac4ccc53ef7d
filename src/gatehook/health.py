"""A worker's health: liveness and readiness (``/healthz``, the ``gatehook.v1.health``
endpoint) and the values ``/metrics`` reads at scrape time.

Readiness checks NATS, MongoDB, the audit stream and the sandbox. The HTTP port cannot
await, so a loop keeps the last result; while the worker waits for JetStream at start, the
result says so (``waiting``). A dependency that goes away is said once, and once when it is
back, never per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from nats.micro.request import Request

from gatehook.errors import GatehookError

if TYPE_CHECKING:
    from gatehook.runtime import Runtime

__all__ = ["Health"]

log = logging.getLogger("gatehook")

_EVERY_S = 2.0  # between two readiness checks
_CHECK_S = 2.0  # the longest one dependency's check may take


class Health:
    """The health of ``runtime`` (see the module)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.last: dict[str, Any] = {"ready": False, "checks": {"started": False}}
        self._up: dict[str, bool] = {}  # each dependency's last check

    def waiting(self, reason: str | None) -> None:
        """Say the worker is not ready yet: waiting for ``reason``, or only not started."""
        checks: dict[str, Any] = {"jetstream": reason} if reason else {"jetstream": True}
        self.last = {"ready": False, "checks": {**checks, "started": False}}

    async def check(self) -> dict[str, Any]:
        """Liveness and readiness: NATS, MongoDB, sandbox; and the trigger counters."""
        rt = self._runtime
        checks: dict[str, Any] = {"nats": rt.broker.connection.is_connected}
        try:
            await asyncio.wait_for(rt.store.ping(), _CHECK_S)
            checks["mongodb"] = True
        except (GatehookError, TimeoutError) as exc:
            checks["mongodb"] = str(exc) or "timeout"
        if rt.started:
            try:
                await asyncio.wait_for(rt.audit.ping(), _CHECK_S)
                checks["jetstream"] = True
            except (GatehookError, TimeoutError) as exc:
                checks["jetstream"] = str(exc) or "timeout"
        checks["sandbox"] = rt.pool.size > 0
        self._say_outages(checks)
        server = rt.server
        return {
            "worker": rt.settings.worker_name,
            "ready": all(v is True for v in checks.values()),
            "checks": checks,
            "triggers": {
                "handled": rt.triggers.handled if rt.started else 0,
                "in_flight": server.in_flight if server else 0,
                "shed": server.shed if server else 0,
            },
            "sandbox": {"children": rt.pool.size, "restarts": rt.pool.restarts},
            "webhooks": dict(rt.delivery.outcomes),
            # degraded, not unready: the worker serves, but a node's death may pause a lane
            "audit_lanes": None
            if not rt.started
            else {
                "lanes": len(rt.journal.lanes),
                "down": rt.journal.lanes_down,
                "misplaced": rt.placement.misplaced if rt.placement is not None else 0,
            },
        }

    async def run(self) -> None:
        """Keep ``last`` current for the HTTP port, which cannot await."""
        while True:
            try:
                self.last = await self.check()
            except Exception as exc:  # a failing check must not stop the loop
                self.last = {"ready": False, "error": str(exc)}
            await asyncio.sleep(_EVERY_S)

    async def answer(self, request: Request) -> None:
        """The NATS micro service's health endpoint."""
        await request.respond(json.dumps(await self.check()).encode())

    def gauges(self) -> dict[str, Any]:
        """What ``/metrics`` exports at scrape time (``Metrics.add_gauges``)."""
        rt = self._runtime
        server = rt.server
        labels = rt.settings.metrics.tenant_labels
        triggers = rt.triggers if rt.started else None
        pins = rt.deferred_pins
        return {
            "sandbox_children": rt.pool.size,
            "sandbox_queue": rt.pool.queue_depth,
            "sandbox_restarts": rt.pool.restarts,
            "in_flight": server.in_flight if server else 0,
            "shed": server.shed if server else 0,
            "admission": None
            if server is None
            else {
                "refused": server.admission.refused_by(labels),
                "in_flight": server.admission.in_flight_by_tenant() if labels else {},
                "cut": server.admission.capped() if labels else {},
            },
            "caches": triggers.cache_stats() if triggers else {},
            "webhooks": dict(rt.delivery.outcomes),
            "deferred_pins": None
            if pins is None
            else {
                "held": len(pins),
                "deferred": pins.deferred,
                "written": pins.written,
                "dropped": pins.dropped,
            },
            "last_heads_served": triggers.lookup.last_heads_served if triggers else 0,
            "audit_lanes": None
            if not rt.started
            else {
                "lanes": len(rt.journal.lanes),
                "down": rt.journal.lanes_down,
                "failovers": rt.journal.failovers,
                "write_backs_dropped": rt.journal.write_backs_dropped,
                "misplaced": rt.placement.misplaced if rt.placement is not None else 0,
            },
            "dependencies": {
                name: value is True
                for name, value in (self.last.get("checks") or {}).items()
                if name in ("nats", "mongodb", "jetstream")
            },
        }

    def _say_outages(self, checks: dict[str, Any]) -> None:
        for name, value in checks.items():
            up = value is True
            if self._up.get(name, True) and not up:
                log.error("%s is unavailable: %s", name, value)
            elif not self._up.get(name, True) and up:
                log.warning("%s is back", name)
            self._up[name] = up
