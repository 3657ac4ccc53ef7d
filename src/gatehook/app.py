"""The worker as a FastStream application
(``faststream run gatehook.app:create_app --factory``).

The composition of a worker: ``build_broker`` makes the broker (``transport.subscribers``) and
the runtime, and subscribes the one to the other. Imports run one way: this module ->
``transport.subscribers`` and ``runtime``; the transport knows the runtime only as the
``Endpoints`` it calls.
"""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.nats import NatsBroker

from gatehook.process.loop import freeze_startup_heap
from gatehook.runtime import Runtime
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.transport.lean import settle
from gatehook.transport.subscribers import new_broker, subscribe

__all__ = ["Runtime", "build_broker", "create_app"]

log = logging.getLogger("gatehook")


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


def create_app(settings: Settings | None = None) -> FastStream:
    """The worker as a FastStream application."""
    settings = settings or Settings()
    broker, runtime = build_broker(settings)
    app = FastStream(broker)

    @app.on_startup
    async def _start() -> None:
        # Connect and prepare everything before the subscribers start taking requests.
        await runtime.start()

    @app.after_startup
    async def _subscribed() -> None:
        await runtime.serve()
        await settle(broker.connection)  # subscriptions are on the server before we say ready
        if settings.gc_tuning:
            freeze_startup_heap()
        log.info("worker %s subscribed", settings.worker_name)

    @app.on_shutdown
    async def _stop() -> None:
        await runtime.drain(settings.drain_timeout_s)
        await runtime.aclose()

    app.runtime = runtime  # type: ignore[attr-defined]
    return app
