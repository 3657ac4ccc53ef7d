"""The worker as a FastStream application
(``faststream run gatehook.app:create_app --factory``).

The runtime (``gatehook.runtime``, the composition root) is started before the
subscribers take requests, joins the queue group after, and drains and closes at shutdown.
"""

from __future__ import annotations

import logging

from faststream import FastStream

from gatehook.process.loop import freeze_startup_heap
from gatehook.runtime import build_broker
from gatehook.settings import Settings
from gatehook.transport.lean import settle

__all__ = ["create_app"]

log = logging.getLogger("gatehook")


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
